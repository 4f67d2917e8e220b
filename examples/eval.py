"""Evaluate an adaptive model on the embedded default data: accuracy against cost.

The default job trains a small MSDNet on scikit-learn's bundled digits (about
a minute on two CPU cores), calibrates budgeted batch classification on a
held-out split of the training data, and prints accuracy and FLOPs per exit
and per budget, both anytime and budgeted. Results go to `results/eval.csv`
(and `results/eval.png` when matplotlib is installed).

    KERAS_BACKEND=jax python examples/eval.py
    KERAS_BACKEND=tensorflow python examples/eval.py --epochs 20
    KERAS_BACKEND=torch python examples/eval.py --weights my_digits.weights.h5

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

BUDGETS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def train_digits_msdnet(epochs, seed, verbose=0):
    """A small MSDNet trained on the digits training split (all exits)."""
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = data.load_digits()
    (x_fit, y_fit), (x_held, y_held) = data.split_holdout(x_train, y_train, size=300, seed=seed)
    model = adaptive_zoo.MSDNetTiny(num_classes=10, input_shape=x_train.shape[1:])
    steps = epochs * -(-len(x_fit) // 64)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_fit, y_fit, epochs=epochs, batch_size=64, verbose=verbose)
    return model, (x_held, y_held), (x_test, y_test)


def accuracy(logits, labels):
    return float((np.argmax(logits, axis=-1) == labels).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="skip training: a .weights.h5 of MSDNetTiny")
    parser.add_argument("--save", default=None, help="save the trained weights here (.weights.h5)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)

    start = time.time()
    if args.weights:
        (x_train, y_train), (x_test, y_test) = data.load_digits()
        _, (x_held, y_held) = data.split_holdout(x_train, y_train, size=300, seed=args.seed)
        model = adaptive_zoo.MSDNetTiny(weights=args.weights)
    else:
        model, (x_held, y_held), (x_test, y_test) = train_digits_msdnet(args.epochs, args.seed)
    if args.save:
        model.save_weights(args.save)
    trained = time.time() - start

    profile = adaptive_zoo.profile(model)
    full = profile.flops
    print(f"backend {keras.backend.backend()}; MSDNetTiny on digits: {profile}")
    print(f"(trained/loaded in {trained:.0f} s; test set {len(x_test)} images)\n")

    rows = []
    all_exits = model.predict_all_exits(x_test)
    print("per exit (every sample leaves at this exit)")
    print("| exit | MFLOPs | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- |")
    for k, (logits, flops) in enumerate(zip(all_exits, profile.exit_flops)):
        acc = accuracy(logits, y_test)
        rows.append(("exit", k, flops / full, flops, acc))
        print(f"| {k} | {flops / 1e6:.3f} | {flops / full:.3f} | {acc:.4f} |")

    calibration = model.calibrate((x_held, y_held), budgets=None)
    low, high = calibration.budget_range
    print(f"\ncalibrated on {len(x_held)} held-out training images for budgets {low:.3f} to {high:.3f}")
    print("| budget | mode | mean MFLOPs spent | fraction of full | test accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for b in BUDGETS:
        for mode in ("anytime", "budgeted"):
            if mode == "budgeted" and not low <= b <= high:
                continue
            logits, cost = model.predict(x_test, budget=b, mode=mode, return_cost=True)
            acc, spent = accuracy(logits, y_test), float(np.mean(cost))
            rows.append((mode, b, spent / full, spent, acc))
            print(f"| {b:.2f} | {mode} | {spent / 1e6:.3f} | {spent / full:.3f} | {acc:.4f} |")

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
    for kind, marker in (("exit", "o"), ("anytime", "s"), ("budgeted", "^")):
        pts = [(r[3] / 1e6, r[4]) for r in rows if r[0] == kind]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=kind)
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"MSDNetTiny on digits ({keras.backend.backend()})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "eval.png"), dpi=120)
    print(f"wrote {os.path.join(args.out, 'eval.png')}")
    return rows


if __name__ == "__main__":
    main()
