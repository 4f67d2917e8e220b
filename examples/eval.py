"""Evaluate an adaptive model on the embedded default data: accuracy against cost.

The default job trains a small MSDNet on scikit-learn's bundled digits (about
a minute on two CPU cores), calibrates budgeted batch classification on a
held-out split of the training data, and prints accuracy and FLOPs per exit
and per budget, both anytime and budgeted. `--model dmnn` does the same for a
small DMNN (gated sub-blocks): accuracy and mean FLOPs with the gates as
trained, with thresholds calibrated per budget, and with the uncalibrated
top-k rule. `--model cnmm` trains a small CNMM (a mixture of CNNs sharing
weights) and prints accuracy and FLOPs of the whole mixture and of the graph
pruned for each budget, by keep probability and by probability per unit of
cost. Results go to `results/eval.csv`, and the plot of accuracy against
FLOPs to `results/eval.png` (matplotlib, which `scripts/setup.sh` installs;
without it the job only prints and writes the CSV).

    KERAS_BACKEND=jax python examples/eval.py
    KERAS_BACKEND=tensorflow python examples/eval.py --epochs 20
    KERAS_BACKEND=torch python examples/eval.py --weights my_digits.weights.h5
    KERAS_BACKEND=jax python examples/eval.py --model dmnn
    KERAS_BACKEND=torch python examples/eval.py --model cnmm

Every number printed is measured in this run.
"""

import argparse
import csv
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import adaptive_zoo  # noqa: E402
from adaptive_zoo import data  # noqa: E402

import cli  # noqa: E402  (examples/cli.py, beside this script)

BUDGETS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def msdnet_digits(weights=None):
    """`MSDNetTiny` for the digits at 16x16, with its optimizer."""
    model = adaptive_zoo.MSDNetTiny(num_classes=10, input_shape=(16, 16, 1), weights=weights)
    return model, lambda steps: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-3, steps))


def dmnn_digits(weights=None):
    """A small DMNN-ResNet for the digits at 8x8 (two stages of three blocks,
    two sub-blocks each, target rate 0.5), with its optimizer. A constant
    learning rate: with a cosine decay the execution rate ended further from
    the target (a one-off comparison on jax, four seeds, the test's digits
    setup: 0.55-0.57 against 0.52-0.54 at t = 0.5)."""
    model = adaptive_zoo.DMNNResNet(
        depths=(3, 3), base_width=8, sub_blocks=2, cifar_stem=True, num_classes=10,
        input_shape=(8, 8, 1), target_rate=0.5, resource_weight=2.0, weights=weights)
    return model, lambda steps: keras.optimizers.Adam(3e-3)


def cnmm_digits(weights=None):
    """`CNMMTiny` for the digits at 8x8 (4 columns, 3 scales), with its optimizer."""
    model = adaptive_zoo.CNMMTiny(num_classes=10, input_shape=(8, 8, 1), weights=weights)
    return model, lambda steps: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps))


def digits(model, seed):
    """Digits at the model's input size: training, held-out and test splits."""
    (x_train, y_train), test = data.load_digits(image_size=model.image_shape[0])
    fit, held = data.split_holdout(x_train, y_train, size=300, seed=seed)
    return fit, held, test


def train(model, optimizer, fit, epochs, verbose=0):
    """`model.fit` on the `(images, labels)` pair `fit`, with cross-entropy
    (the model adds its own terms: every exit, or the gates' resource losses)."""
    x, y = fit
    model.compile(optimizer=optimizer(epochs * -(-len(x) // 64)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=verbose)
    return model


def accuracy(logits, labels):
    return float((np.argmax(logits, axis=-1) == labels).mean())


def multi_exit_rows(model, held, test, profile):
    """Accuracy and cost per exit, then per budget (anytime and, after
    calibrating on `held`, budgeted)."""
    (x_test, y_test), full = test, profile.flops
    rows = []
    all_exits = model.predict_all_exits(x_test, verbose=0)
    print("per exit (every sample leaves at this exit)")
    print("| exit | MFLOPs | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- |")
    for k, (logits, flops) in enumerate(zip(all_exits, profile.exit_flops)):
        acc = accuracy(logits, y_test)
        rows.append(("exit", k, flops / full, flops, acc))
        print(f"| {k} | {flops / 1e6:.3f} | {flops / full:.3f} | {acc:.4f} |")

    calibration = model.calibrate(held, budgets=None, verbose=0)
    low, high = calibration.budget_range
    print(f"\ncalibrated on {len(held[0])} held-out training images for budgets {low:.3f} to {high:.3f}")
    print("| budget | mode | mean MFLOPs spent | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for b in BUDGETS:
        for mode in ("anytime", "budgeted"):
            if mode == "budgeted" and not low <= b <= high:
                continue
            logits, cost = model.predict(x_test, budget=b, mode=mode, return_cost=True, verbose=0)
            acc, spent = accuracy(logits, y_test), float(np.mean(cost))
            rows.append((mode, b, spent / full, spent, acc))
            print(f"| {b:.2f} | {mode} | {spent / 1e6:.3f} | {spent / full:.3f} | {acc:.4f} |")
    print("(anytime: every sample goes to the deepest exit whose cost, earlier heads included, fits the "
          "budget;\n"
          " it runs only that exit's head, so it can spend less than the budget)")
    return rows


def gated_rows(model, held, test, profile):
    """Accuracy and mean cost with the gates as trained, then per budget
    (uncalibrated top-k and, after calibrating on `held`, thresholds)."""
    (x_test, y_test), full = test, profile.flops
    calibration = model.calibrate(held, verbose=0)
    low, high = calibration.budget_range
    print(f"calibrated on {len(held[0])} held-out training images for budgets {low:.3f} to "
          f"{high:.3f}; the parts that always run cost {model.cheapest_budget():.3f}")
    print("| budget | rule | mean MFLOPs spent | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    cases = [(None, "auto")]  # the gates as trained
    for b in BUDGETS:
        if b >= model.cheapest_budget():
            cases.append((b, "topk"))
        if low - 1e-6 <= b <= high + 1e-6:
            cases.append((b, "calibrated"))
    rows = []
    for b, mode in cases:
        logits, cost = model.predict(x_test, budget=b, mode=mode, return_cost=True, verbose=0)
        acc, spent = accuracy(logits, y_test), float(np.mean(cost))
        kind = "as trained" if b is None else mode
        rows.append((kind, "" if b is None else b, spent / full, spent, acc))
        print(f"| {'-' if b is None else f'{b:.2f}'} | {kind} | {spent / 1e6:.3f} | "
              f"{spent / full:.3f} | {acc:.4f} |")
    return rows


def mixture_rows(model, held, test, profile):
    """Accuracy and cost of the whole mixture, then of the graph pruned for
    each budget, by each pruning rule (no calibration: a pruned graph costs
    the same for every image)."""
    (x_test, y_test), full = test, profile.flops
    trained_rule = model.pruning
    rows = []
    print("| budget | pruning | edges run | MFLOPs | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    logits = model.predict(x_test, verbose=0)
    rows.append(("whole mixture", 1.0, 1.0, full, accuracy(logits, y_test)))
    print(f"| - | whole mixture | {len(model.edges)} | {full / 1e6:.3f} | 1.000 | {rows[-1][4]:.4f} |")
    for rule in ("probability", "cost"):
        model.pruning = rule
        for b in (0.3, 0.4) + BUDGETS[:-1]:
            if b < model.cheapest_budget():
                continue
            plan = model.plan(b)
            logits = model.predict(x_test, budget=b, verbose=0)
            acc = accuracy(logits, y_test)
            runs = sum(model.graph[i].prunable for i in plan.edges)
            rows.append((rule, b, plan.flops / full, plan.flops, acc))
            print(f"| {b:.2f} | {rule} | {runs} | {plan.flops / 1e6:.3f} | {plan.flops / full:.3f} | "
                  f"{acc:.4f} |")
    model.pruning = trained_rule
    p, initial = model.keep_probabilities(), 1.0 / (1.0 + np.exp(-model.keep_logit))
    print(f"learned keep probabilities {p.min():.3f} to {p.max():.3f} (all {initial:.3f} before training)")
    print("(no calibration: pruning reads only the learned keep probabilities; the "
          f"{len(held[0])} held-out training images are unused)")
    return rows


# --model -> (constructor, label, default epochs, evaluation)
MODELS = {
    "msdnet": (msdnet_digits, "MSDNetTiny", 12, multi_exit_rows),
    "dmnn": (dmnn_digits, "DMNN-ResNet (N = 2, t = 0.5)", 16, gated_rows),
    "cnmm": (cnmm_digits, "CNMMTiny", 16, mixture_rows),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msdnet", choices=sorted(MODELS))
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help="training epochs (default: 12 for msdnet, 16 for dmnn and cnmm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None,
                        help="skip training: a .weights.h5 of the same model (see --save)")
    parser.add_argument("--save", type=cli.weights_file, default=None,
                        help="save the trained weights here (.weights.h5)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    build, label, default_epochs, evaluate = MODELS[args.model]

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    model, optimizer = build(args.weights)
    fit, held, test = digits(model, args.seed)
    if not args.weights:
        train(model, optimizer, fit, args.epochs or default_epochs)
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        model.save_weights(args.save)
    trained = time.time() - start

    profile = adaptive_zoo.profile(model)
    print(f"backend {keras.backend.backend()}; {label} on digits: {profile}")
    print(f"(trained/loaded in {trained:.0f} s; test set {len(test[0])} images)\n")
    rows = evaluate(model, held, test, profile)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "eval.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "exit_or_budget", "fraction_of_full_flops", "flops", "test_accuracy"])
        writer.writerows(rows)
    print(f"\nwrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return rows
    fig, ax = plt.subplots(figsize=(5, 3.5))
    markers = {"exit": "o", "anytime": "s", "budgeted": "^", "topk": "s", "calibrated": "^",
               "as trained": "*", "whole mixture": "*", "probability": "s", "cost": "^"}
    for kind, marker in markers.items():
        pts = [(r[3] / 1e6, r[4]) for r in rows if r[0] == kind]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=kind)
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{label} on digits ({keras.backend.backend()})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "eval.png"), dpi=120)
    print(f"wrote {os.path.join(args.out, 'eval.png')}")
    return rows


if __name__ == "__main__":
    main()
