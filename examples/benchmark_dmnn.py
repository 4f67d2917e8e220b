"""Wall-clock of DMNN's skipping path against the ideal speed-up.

Run once per backend:

    KERAS_BACKEND=jax python examples/benchmark_dmnn.py
    KERAS_BACKEND=tensorflow python examples/benchmark_dmnn.py
    KERAS_BACKEND=torch python examples/benchmark_dmnn.py

The default model is `DMNN50CIFAR` with N=2 (100 classes) and its default
stem: 32x32 images, strides 2 and so a first stage at 16x16 (the paper's CIFAR
cost, 0.32 GFLOPs at full path); it runs in a few minutes per backend on 2
CPU cores. `--base-width 32 --stem-strides 1` is the model of the README's
earlier tables (half the widths, a first stage at 32x32); `--model
imagenet` times the full DMNN-50 (N=2) at 224x224 instead (about two minutes
per backend with `--repeats 3` there), `--model mobilenetv2` the CIFAR-style
DMNN-MobileNetV2 (N=2, 100 classes), `--model tiny` a small DMNN at 16x16 (a
first try; the tests run it). Weights are random, the uncalibrated top-k rule
sets the cost exactly.

For each budget `b`: the adaptive path (`model.predict(x, budget=b)`, every
piece compiled by `fast_path.compile_inference`, the sub-blocks run only on
the images for which they are on) at batch 64, against the reference (the
dense full network, compiled as one function; on JAX also as a row-wise one,
which `fast_path` may run in row chunks on the CPU, and the faster of the two
is the reference). `ideal` is full / spent FLOPs,
`speed-up` is reference time / adaptive time, `of ideal` their ratio. Times
are medians of `--repeats` rounds, each of which times the reference and
every budget in turn (`timing.interleaved_medians`), so that the machine's
slow spells touch them alike.
"""

import argparse

import keras
import numpy as np

import adaptive_zoo as az
from adaptive_zoo import fast_path

import cli  # examples/cli.py, beside this script
import timing  # examples/timing.py, beside this script


def main(argv=None):
    """Times the budgets, prints the table and returns its timed rows
    `(budget, spent / full, seconds)` (argv: the command line's arguments)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=cli.positive_int, default=64)
    parser.add_argument("--repeats", type=cli.positive_int, default=7)
    parser.add_argument("--model", default="cifar", choices=["cifar", "imagenet", "mobilenetv2", "tiny"],
                        help="cifar: DMNN50CIFAR at 32x32; imagenet: DMNN50 at 224x224; "
                             "mobilenetv2: DMNNMobileNetV2CIFAR at 32x32; tiny: a small DMNN "
                             "at 16x16 (a first try, and the tests)")
    parser.add_argument("--base-width", type=int, default=64,
                        help="first stage's width of the cifar model (ResNet-50: 64)")
    parser.add_argument("--stem-strides", type=int, default=2, choices=[1, 2],
                        help="strides of the cifar model's stem (DMNN50CIFAR's default: 2)")
    parser.add_argument("--budgets", type=cli.budget, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    args = timing.parse_args(parser, argv)  # adds and applies --tune-allocator

    keras.utils.set_random_seed(0)
    if args.model == "imagenet":
        model = az.DMNN50(sub_blocks=2, target_rate=0.5)
    elif args.model == "mobilenetv2":
        model = az.DMNNMobileNetV2CIFAR(sub_blocks=2, target_rate=0.5, num_classes=100)
    elif args.model == "tiny":
        model = az.DMNNResNet(depths=(2, 2), base_width=8, sub_blocks=2, target_rate=0.5,
                              cifar_stem=True, num_classes=10, input_shape=(16, 16, 3))
    else:
        model = az.DMNN50CIFAR(sub_blocks=2, target_rate=0.5, num_classes=100,
                               base_width=args.base_width, stem_strides=args.stem_strides)
    x = np.random.RandomState(0).rand(args.batch, *model.image_shape).astype("float32")
    full = model.full_flops()

    # The reference: the dense network as one program, and (on JAX's CPU
    # backend, which may then run it in row chunks, as the skipping path's
    # pieces; see fast_path.rows_per_call) as a row-wise one; the faster.
    dense = [fast_path.compile_inference(
        lambda images: model._dense(images, rule=("threshold", 0.0))[0], model.variables,
        rowwise=rowwise) for rowwise in ((False, True) if keras.backend.backend() == "jax" else (False,))]
    xt = keras.ops.convert_to_tensor(x)
    budgets = [b for b in args.budgets if b >= model.cheapest_budget()]
    spent = [float(model.predict(x, batch_size=args.batch, budget=b, return_cost=True, verbose=0)[1].mean())
             / full for b in budgets]
    # The references and every budget are timed once per round, in turn.
    times = timing.interleaved_medians(
        [lambda f=f: keras.ops.convert_to_numpy(f(xt)) for f in dense]
        + [lambda b=b: model.predict(x, batch_size=args.batch, budget=b, verbose=0) for b in budgets],
        args.repeats)
    references, seconds = times[:len(dense)], times[len(dense):]
    reference = min(references)
    variants = "" if len(dense) == 1 else (
        f" (one program {references[0] * 1e3:.1f}, row-wise {references[1] * 1e3:.1f})")

    print(f"backend {keras.backend.backend()}, {model.name}, batch {args.batch}, median of {args.repeats}, "
          f"{full / 1e6:.1f} MFLOPs per image at full cost, always-run part "
          f"{model.cheapest_budget():.3f}; dense full network {reference * 1e3:.1f} ms{variants}\n")
    print("| budget | spent / full | time (ms) | speed-up | ideal | of ideal |")
    print("|---|---|---|---|---|---|")
    timed = dict(zip(budgets, zip(spent, seconds)))
    rows = []
    for budget in args.budgets:
        if budget not in timed:
            print(f"| {budget:.2f} | n/a: below the always-run cost "
                  f"{model.cheapest_budget():.3f} | | | | |")
            continue
        cost, time_b = timed[budget]
        speedup, ideal = reference / time_b, 1.0 / cost
        print(f"| {budget:.2f} | {cost:.3f} | {time_b * 1e3:.1f} | {speedup:.2f} | "
              f"{ideal:.2f} | {speedup / ideal:.2f} |")
        rows.append((budget, cost, time_b))
    return rows


if __name__ == "__main__":
    main()
