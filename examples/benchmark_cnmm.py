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

`--edges` also times every edge of the mixture alone (each compiled the same
way, at the batch size) and prints, per budget, the edges' time that the
pruned graph keeps beside its share of their FLOPs, the stem's edges (which
every graph runs), and what its `predict` costs beyond its edges alone (the
call's own cost and the classifier's):

    KERAS_BACKEND=jax python examples/benchmark_cnmm.py --edges
"""

import argparse

import keras
import numpy as np

import adaptive_zoo as az
from adaptive_zoo import fast_path

import cli  # examples/cli.py, beside this script
import timing  # examples/timing.py, beside this script


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=cli.positive_int, default=64)
    parser.add_argument("--repeats", type=cli.positive_int, default=7)
    parser.add_argument("--pruning", default="probability", choices=["probability", "cost"])
    parser.add_argument("--budgets", type=cli.budget, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--model", default="cifar", choices=["cifar", "tiny"],
                        help="cifar: CNMMCIFAR at 32x32; tiny: CNMMTiny at 8x8 (for tests)")
    parser.add_argument("--edges", action="store_true",
                        help="also time each edge alone and print where each budget's time goes")
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
    if args.edges:
        print_edge_times(model, plans, budgets, seconds, args)
    return rows


def time_edges(model, batch, repeats):
    """Median seconds of each edge of `model.graph` alone on `batch` random
    feature maps of its input node, compiled as `predict` compiles its
    pieces."""
    rng = np.random.RandomState(2)
    fns = []
    for edge in model.graph:
        def run(x, layer=edge.layer):
            out = layer(x, training=False)
            return out[0] if isinstance(out, tuple) else out

        compiled = fast_path.compile_inference(run, edge.layer.variables, rowwise=True)
        x = keras.ops.convert_to_tensor(
            rng.rand(batch, *model.node_shape(edge.source)).astype("float32"))
        fns.append(lambda compiled=compiled, x=x: keras.ops.convert_to_numpy(compiled(x)))
    return timing.interleaved_medians(fns, repeats)


def print_edge_times(model, plans, budgets, seconds, args):
    """Per budget: the share of all edges' time (each edge timed alone) and
    of their FLOPs that the pruned graph keeps, and its `predict` time less
    its edges' alone (negative where one compiled graph runs its edges
    faster than separate calls do, as on tiny edges)."""
    edge_seconds = np.asarray(time_edges(model, args.batch, args.repeats))
    edge_flops = np.asarray(model.edge_flops(), dtype="float64")
    stem = [i for i, edge in enumerate(model.graph) if not edge.prunable]
    print(f"\neach edge alone, compiled, batch {args.batch}: {len(model.graph)} edges, "
          f"{edge_seconds.sum() * 1e3:.1f} ms in all for {edge_flops.sum() / 1e6:.1f} MFLOPs per "
          f"image; the stem's {len(stem)} (every graph runs them) {edge_seconds[stem].sum() * 1e3:.1f} "
          f"ms for {edge_flops[stem].sum() / edge_flops.sum():.3f} of the FLOPs")
    print("| budget | edges' FLOPs kept | edges' time kept (alone) | kept edges alone (ms) "
          "| predict (ms) | predict - kept edges alone (ms) |")
    print("|---|---|---|---|---|---|")
    for budget, plan, time_b in zip(budgets, plans, seconds):
        kept = list(plan.edges)
        alone = edge_seconds[kept].sum()
        print(f"| {budget:.2f} | {edge_flops[kept].sum() / edge_flops.sum():.3f} "
              f"| {alone / edge_seconds.sum():.3f} | {alone * 1e3:.1f} | {time_b * 1e3:.1f} "
              f"| {(time_b - alone) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
