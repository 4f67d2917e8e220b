"""Wall-clock of DMNN's skipping path against the ideal speed-up.

Run once per backend:

    KERAS_BACKEND=jax python examples/benchmark_dmnn.py
    KERAS_BACKEND=tensorflow python examples/benchmark_dmnn.py
    KERAS_BACKEND=torch python examples/benchmark_dmnn.py

The model is a CIFAR-style DMNN-50 (N=2) at 32x32 with half the ResNet-50
widths (`base_width=32`), so the script runs in a few minutes on 2 CPU cores;
weights are random, the uncalibrated top-k rule sets the cost exactly.

For each budget `b`: the adaptive path (`model.predict(x, budget=b)`, every
piece compiled by `fast_path.compile_inference`, the sub-blocks run only on
the images for which they are on) at batch 64, against the reference (the
dense full network, compiled as one function). `ideal` is full / spent FLOPs,
`speed-up` is reference time / adaptive time, `of ideal` their ratio.
"""

import argparse
import time

import keras
import numpy as np

import adaptive_zoo as az
from adaptive_zoo import fast_path


def _time(fn, repeats):
    fn()  # warm up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = az.DMNN50CIFAR(sub_blocks=2, target_rate=0.5, num_classes=100,
                           base_width=args.base_width)
    x = np.random.RandomState(0).rand(args.batch, 32, 32, 3).astype("float32")
    full = model.full_flops()

    dense = fast_path.compile_inference(
        lambda images: model._dense(images, rule=("threshold", 0.0))[0], model.variables)
    xt = keras.ops.convert_to_tensor(x)
    reference = _time(lambda: keras.ops.convert_to_numpy(dense(xt)), args.repeats)

    print(f"backend {keras.backend.backend()}, batch {args.batch}, "
          f"{full / 1e6:.1f} MFLOPs per image at full cost, always-run part "
          f"{model.cheapest_budget():.3f}; dense full network {reference * 1e3:.1f} ms\n")
    print("| budget | spent / full | time (ms) | speed-up | ideal | of ideal |")
    print("|---|---|---|---|---|---|")
    for budget in args.budgets:
        if budget < model.cheapest_budget():
            print(f"| {budget:.2f} | n/a: below the always-run cost "
                  f"{model.cheapest_budget():.3f} | | | | |")
            continue
        _, cost = model.predict(x, batch_size=args.batch, budget=budget, return_cost=True)
        spent = float(cost.mean()) / full
        seconds = _time(lambda: model.predict(x, batch_size=args.batch, budget=budget),
                        args.repeats)
        speedup, ideal = reference / seconds, 1.0 / spent
        print(f"| {budget:.2f} | {spent:.3f} | {seconds * 1e3:.1f} | {speedup:.2f} | "
              f"{ideal:.2f} | {speedup / ideal:.2f} |")


if __name__ == "__main__":
    main()
