"""Wall-clock of budgeted inference against the ideal speed-up (multi-exit nets).

For each budget, `model.predict(x, budget=b)` runs real early exit (exited
samples are not computed further) with thresholds calibrated for `b`. The
ideal speed-up is `spent FLOPs at budget 1.0 / spent FLOPs at b`, the measured
one `time at 1.0 / time at b`; their ratio is the efficiency.

Two timings per budget, both in ms per batch (the median of `--repeats`
rounds, each of which times every budget in turn):
- one batch: `predict` on a single batch (latency; the few samples that
  reach the late stages run them alone);
- stream: `predict` on `--batches` batches in a row (throughput; the
  survivors of consecutive batches share the late stages' calls).

    KERAS_BACKEND=jax python examples/benchmark.py
    KERAS_BACKEND=torch python examples/benchmark.py --model cifar_anytime --repeats 10
    KERAS_BACKEND=tensorflow python examples/benchmark.py --stage-batches 64,4,1
    KERAS_BACKEND=torch python examples/benchmark.py --model ranet_cifar_anytime
    KERAS_BACKEND=jax python examples/benchmark.py --model imagenet_step4 --batches 4
    KERAS_BACKEND=torch python examples/benchmark.py --model ranet_imagenet --state

`--model` takes the name of any MSDNet or RANet preset of the catalog
(`adaptive_zoo.list_models("msdnet*")`, `"ranet*"`), or one of the short names
earlier commands used (`cifar_anytime` is `msdnet_cifar_anytime`, `tiny`
`msdnet_tiny`).

It also prints how many samples leave at each exit per budget, and with
`--stage-batches` the time of each compiled stage (with its exit) alone at
those batch sizes: where the time goes when few samples remain. `--state`
prints only the size of the state each stage hands to the next (what the
survivors' gathers at each exit and the stream's pooled copies move) and
skips the timings.

The ideal speed-up counts the authors' cost of each exit (what `return_cost`
reports, and what the calibration aims at). A sample that leaves computes less
than that where its exit reads only part of its stage (MSDNet: not the finer
scales of the block's last layers): a second table gives the ideal speed-up
and efficiency from what ran (`model.computed_exit_flops()`).

The model has random weights and the images are random: only the time per
FLOP matters here, and the calibration sets how many samples leave where.
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import adaptive_zoo  # noqa: E402
import cli  # noqa: E402  (examples/cli.py, beside this script)
import timing  # noqa: E402  (examples/timing.py, beside this script)

# Every multi-exit preset of the catalog (`adaptive_zoo.list_models`) by its
# name; the shorter names of the README's earlier commands stay as aliases.
ALIASES = {
    "cifar_anytime": "msdnet_cifar_anytime",
    "cifar_budgeted": "msdnet_cifar_budgeted",
    "imagenet_step4": "msdnet_imagenet_step4",
    "tiny": "msdnet_tiny",
}
MODELS = adaptive_zoo.list_models("msdnet*") + adaptive_zoo.list_models("ranet*") + sorted(ALIASES)


def time_predicts(model, cases, repeats):
    """Median seconds per batch of each `(x, budget, batch)` case of `predict`
    (`budget=None`: Keras' own `predict`, the last exit), every case timed
    once per round, in turn (`timing.interleaved_medians`)."""
    fns = [lambda x=x, budget=budget, batch=batch: (
               model.predict(x, batch_size=batch, verbose=0) if budget is None
               else model.predict(x, budget=budget, batch_size=batch, verbose=0))
           for x, budget, batch in cases]
    medians = timing.interleaved_medians(fns, repeats)
    return [seconds / (len(x) // batch) for seconds, (x, _, batch) in zip(medians, cases)]


def run_stages(model, batch, rng, repeats=0):
    """Run the compiled stages (each with its exit) in turn on `batch` random
    images, all of which they run (as `predict` at budget 1.0).

    Returns:
        Per stage, a pair: the median milliseconds of `repeats` timed calls
        after the first (None if `repeats` is 0), and the bytes per image of
        the state it hands to the next stage.
    """
    state = [keras.ops.convert_to_tensor(
        rng.normal(size=(batch,) + model.image_shape).astype("float32"))]
    # NumPy rows, as `predict` passes them: every row stays, so no gather.
    rows = np.arange(batch, dtype="int32")
    result = []
    for stage in model._stage_fns(compiled=True):
        outputs = stage(rows, *state)  # compiles
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            outputs = stage(rows, *state)
            keras.ops.convert_to_numpy(outputs[1])
            times.append(time.perf_counter() - start)
        state = list(outputs[0]) if isinstance(outputs[0], (list, tuple)) else [outputs[0]]
        size = sum(int(np.prod(t.shape[1:])) * np.dtype(keras.backend.standardize_dtype(t.dtype)).itemsize
                   for t in state)
        result.append((float(np.median(times)) * 1e3 if repeats else None, size))
    return result


def print_efficiency(rows, flops_at, with_time):
    """One table row per budget: FLOPs per image, (ms,) ideal speed-up and
    efficiency, one batch then stream, against the first row (budget 1.0).
    `rows` as `main` makes them; `flops_at`: where their FLOPs are, one
    batch and stream."""
    base = rows[0]
    for row in rows:
        cells = [f"{row[0]:.2f}"]
        for at, time_at in zip(flops_at, (3, 4)):
            flops, seconds = row[at], row[time_at]
            if seconds is None:
                cells += ["-"] * (4 if with_time else 3)
                continue
            ideal = base[at] / flops
            cells += [f"{flops / 1e6:.2f}"] + ([f"{seconds * 1e3:.1f}"] if with_time else [])
            cells += [f"{ideal:.2f}", f"{base[time_at] / seconds / ideal:.2f}"]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar_anytime", choices=MODELS, metavar="MODEL",
                        help="a multi-exit preset of adaptive_zoo.list_models() or a short name: "
                             + ", ".join(f"{short} ({name})" for short, name in ALIASES.items()))
    parser.add_argument("--batch", type=cli.positive_int, default=64)
    parser.add_argument("--batches", type=cli.non_negative_int, default=8,
                        help="batches in the stream timing (0: skip it)")
    parser.add_argument("--repeats", type=cli.positive_int, default=7)
    parser.add_argument("--calibration-size", type=cli.positive_int, default=2000)
    parser.add_argument("--budgets", type=cli.budget_list, default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--stage-batches", default="",
                        help="comma-separated batch sizes at which to time each stage alone")
    parser.add_argument("--state", action="store_true",
                        help="only print the state each stage hands to the next (MiB per image)")
    args = timing.parse_args(parser, argv)  # adds and applies --tune-allocator

    keras.utils.set_random_seed(0)
    model = adaptive_zoo.create_model(ALIASES.get(args.model, args.model))
    rng = np.random.default_rng(0)
    if args.state:
        mib = [size / 2**20 for _, size in run_stages(model, 1, rng)]
        print(f"backend {keras.backend.backend()}, {args.model}: state handed on after each stage "
              f"(MiB per image): {', '.join(f'{m:.3f}' for m in mib)}; largest {max(mib):.3f}")
        return mib
    shape = model.image_shape
    budgets = args.budgets
    held_out = rng.normal(size=(args.calibration_size,) + shape).astype("float32")
    labels = rng.integers(0, model.num_classes, args.calibration_size)
    model.calibrate((held_out, labels), budgets=budgets, verbose=0)
    stream = rng.normal(size=(args.batch * max(args.batches, 1),) + shape).astype("float32")
    x = stream[: args.batch]

    rows, leaving, cases, computed = [], [], [], []
    exit_flops = np.asarray(model.exit_flops(), dtype="float32")
    computed_flops = np.asarray(model.computed_exit_flops(), dtype="float64")
    for b in budgets:
        _, cost = model.predict(stream, budget=b, return_cost=True, batch_size=args.batch, verbose=0)
        exits = np.searchsorted(exit_flops, cost)  # cumulative costs are distinct
        leaving.append((b, np.bincount(exits[: args.batch], minlength=len(exit_flops)).tolist()))
        rows.append((b, float(np.mean(cost[: args.batch])), float(np.mean(cost))))
        computed.append((float(np.mean(computed_flops[exits[: args.batch]])),
                         float(np.mean(computed_flops[exits]))))
        cases.append((x, b, args.batch))
        if args.batches:
            cases.append((stream, b, args.batch))
    cases.append((x, None, args.batch))  # Keras' predict of the whole network
    times = iter(time_predicts(model, cases, args.repeats))
    rows = [(b, one, many, next(times), next(times) if args.batches else None, ran_one, ran_many)
            for (b, one, many), (ran_one, ran_many) in zip(rows, computed)]
    full_time = next(times)

    print(f"backend {keras.backend.backend()}, {args.model}, batch {args.batch}, "
          f"median of {args.repeats}; keras predict (last exit, no budget): {full_time * 1e3:.1f} ms")
    print("cells: ms per batch; ideal speed-up (spent FLOPs at 1.0 / at b); efficiency = "
          "measured speed-up / ideal")
    print(f"| budget | one batch: MFLOPs/image | ms | ideal | efficiency "
          f"| stream of {args.batches}: MFLOPs/image | ms | ideal | efficiency |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print_efficiency(rows, flops_at=(1, 2), with_time=True)
    print("\nthe same from what ran (model.computed_exit_flops()):")
    print(f"| budget | one batch: MFLOPs/image computed | ideal | efficiency "
          f"| stream of {args.batches}: MFLOPs/image computed | ideal | efficiency |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print_efficiency(rows, flops_at=(5, 6), with_time=False)
    print("\ncost of each exit, MFLOPs per image: the authors' (exit_flops) / what a sample that leaves "
          "there computes (computed_exit_flops):")
    print("  " + ", ".join(f"{a / 1e6:.2f} / {c / 1e6:.2f}" for a, c in zip(exit_flops, computed_flops)))
    print("\nsamples of the first batch leaving at each exit:")
    for b, counts in leaving:
        print(f"  b={b:.2f}: {counts}")
    for batch in [int(n) for n in args.stage_batches.split(",") if n]:
        ms = [t for t, _ in run_stages(model, batch, rng, args.repeats)]
        print(f"stages alone at batch {batch} (ms): {', '.join(f'{t:.1f}' for t in ms)}; "
              f"sum {sum(ms):.1f}")
    return rows


if __name__ == "__main__":
    main()
