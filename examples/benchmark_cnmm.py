"""Wall-clock of CNMM's pruned graphs against the ideal speed-up.

Run once per backend:

    KERAS_BACKEND=jax python examples/benchmark_cnmm.py
    KERAS_BACKEND=tensorflow python examples/benchmark_cnmm.py
    KERAS_BACKEND=torch python examples/benchmark_cnmm.py

The model is `CNMMCIFAR` (8 columns, 4 scales, 32x32) with random weights and
random keep probabilities (logits drawn from N(0, 1.5), as if trained: with
the initial, equal ones the pruning order would be the graph's order). For
each budget `b`: `model.predict(x, budget=b)` (the graph pruned for `b`,
compiled by `fast_path.compile_inference`, only its edges run) at batch 64,
against the whole mixture compiled the same way; keras' own `predict` of the
whole mixture is printed beside it. `ideal` is full / spent FLOPs, `speed-up`
the whole mixture's time / the pruned graph's, `of ideal` their ratio. Times
are medians of `--repeats` rounds, each timing every case in turn
(`timing.interleaved_medians`).
"""

import argparse

import keras
import numpy as np

import adaptive_zoo as az

import timing  # examples/timing.py, beside this script


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pruning", default="probability", choices=["probability", "cost"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--model", default="cifar", choices=["cifar", "tiny"],
                        help="cifar: CNMMCIFAR at 32x32; tiny: CNMMTiny at 8x8 (for tests)")
    args = timing.parse_args(parser, argv)

    keras.utils.set_random_seed(0)
    ctor = az.CNMMCIFAR if args.model == "cifar" else az.CNMMTiny
    model = ctor(num_classes=10, pruning=args.pruning)
    rng = np.random.RandomState(0)
    for edge in model.edges:
        edge.keep_logit.assign(rng.normal(0.0, 1.5))
    x = np.random.RandomState(1).rand(args.batch, *model.image_shape).astype("float32")
    full = az.profile(model).flops
    budgets = [b for b in args.budgets if b >= model.cheapest_budget()]
    plans = [model.plan(b) for b in budgets]
    keras_predict, *seconds = timing.interleaved_medians(
        [lambda: model.predict(x, batch_size=args.batch, verbose=0)]
        + [lambda b=b: model.predict(x, batch_size=args.batch, budget=b, verbose=0) for b in budgets],
        args.repeats)

    reference = seconds[budgets.index(1.0)] if 1.0 in budgets else None
    print(f"backend {keras.backend.backend()}, {model.name}, batch {args.batch}, median of "
          f"{args.repeats}, {full / 1e6:.1f} MFLOPs per image for the whole mixture "
          f"({len(model.edges)} edges), pruning by {args.pruning}, cheapest graph "
          f"{model.cheapest_budget():.3f}; keras predict of the whole mixture "
          f"{keras_predict * 1e3:.1f} ms\n")
    print("| budget | edges run | spent / full | time (ms) | speed-up | ideal | of ideal |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for budget in args.budgets:
        if budget not in budgets:
            print(f"| {budget:.2f} | n/a: below the cheapest graph {model.cheapest_budget():.3f} "
                  "| | | | | |")
            continue
        i = budgets.index(budget)
        plan, time_b = plans[i], seconds[i]
        edges = sum(model.graph[j].prunable for j in plan.edges)
        cost = plan.flops / full
        rows.append((budget, cost, time_b))
        if reference is None:
            print(f"| {budget:.2f} | {edges} | {cost:.3f} | {time_b * 1e3:.1f} | | {1 / cost:.2f} | |")
            continue
        speedup, ideal = reference / time_b, 1.0 / cost
        print(f"| {budget:.2f} | {edges} | {cost:.3f} | {time_b * 1e3:.1f} | {speedup:.2f} | "
              f"{ideal:.2f} | {speedup / ideal:.2f} |")
    return rows


if __name__ == "__main__":
    main()
