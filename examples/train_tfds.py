"""Train a zoo model on your own copy of CIFAR-10/100 or ImageNet, calibrate
its budgets on held-out training images, measure it on the test split, and
save it with the numbers a published checkpoint needs.

We have not run this on the real datasets (no copy and no GPU time on our
machines); `tests/test_examples.py` runs it end to end on tfds' mock data.
The data come from a tfds `data_dir` where CIFAR is prepared, or, for
ImageNet, a `manual_dir` holding the ILSVRC2012 tar files
(`adaptive_zoo.data.load_tfds`); nothing is downloaded.

    KERAS_BACKEND=jax python examples/train_tfds.py --model msdnet_cifar_anytime \\
        --dataset cifar100 --data-dir ~/tensorflow_datasets --out runs/msdnet_c100
    KERAS_BACKEND=torch python examples/train_tfds.py --model msdnet_imagenet_step4 \\
        --dataset imagenet --manual-dir /data/ilsvrc2012 --out runs/msdnet_in

`--model` is any name of `adaptive_zoo.list_models()` (the published
configurations; the two demo nets built for 32x32 colour images), or
`dmnn_tiny`, a small DMNN for a first try of the pipeline.

The recipe is the MSDNet and RANet authors' (`../shared/reference/PAPERS.md`):
SGD with momentum 0.9, weight decay 1e-4 and learning rate 0.1, divided by 10
at half and three quarters of the epochs on CIFAR (300 epochs, batch 64) and
every 30 epochs on ImageNet (90, batch 256); multi-exit models sum every
exit's cross-entropy. DMNN trains the same way with its resource and category
terms, which the model adds itself (resource weight 2 on CIFAR, 1 on
ImageNet; CIFAR-100's coarse labels as categories). Keras applies weight
decay to the weights directly, not through the momentum as PyTorch's SGD
does: close to the authors' optimizer, not identical.

`--data-parallel` trains on every local device (Keras' distribution API on
JAX, `tf.distribute.MirroredStrategy` on TensorFlow; `--batch-size` is then
the global batch; not on PyTorch, where Keras has no distribution API:
`train_torch_ddp.py` shows the training loop with PyTorch's
DistributedDataParallel, on the digits).

The first `--holdout` training images (CIFAR 5,000, ImageNet 50,000, as the
MSDNet authors hold out; DMNN, whose threshold search reads its held-out
images once per threshold it tries, up to about 30 per budget (the budgets
share their first ones), CIFAR 5,000 and
ImageNet 10,000) are not trained on: they calibrate the
budgets. CNMM needs no calibration (a budget is a pruned graph) and holds
nothing out by default; the CNMM recipe is the same SGD schedule, ours (the
paper's is not public). Training resumes where it stopped if the same command is run again
(`keras.callbacks.BackupAndRestore` in `<out>.partial/`); the results appear
in `--out` only when everything has finished:
- `model.keras`: the trained model with its calibration;
- `model.weights.h5`: its weights, for `weights=` of the same constructor;
- `results.json`: test accuracy and mean FLOPs per exit (multi-exit models),
  with the gates as trained (DMNN) or of the whole mixture (CNMM), and at
  each calibrated (CNMM: reachable) budget; the
  constructor and its arguments; the SHA-256 of the weights file; the commit
  and backend. Its `manifest_entry` is the entry `weights/manifest.json`
  needs when the file is published (add the URL and a registered name).
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import adaptive_zoo  # noqa: E402
from adaptive_zoo import data  # noqa: E402

import cli  # noqa: E402  (examples/cli.py, beside this script)

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}

# Every preset of `adaptive_zoo.list_models()`, plus a small DMNN for a first
# try of the pipeline (and the tests). The two demo presets are built for the
# dataset's 32x32 colour images.
SMALL = {"msdnet_tiny": {"input_shape": (32, 32, 3)}, "cnmm_tiny": {"input_shape": (32, 32, 3)}}
MODELS = adaptive_zoo.list_models() + ["dmnn_tiny"]


def model_arguments(name, dataset):
    """The constructor's name, its arguments and the family of `--model name`
    for `dataset`: the preset's arguments, `num_classes`, and DMNN's resource
    weight and category map for the dataset."""
    if name == "dmnn_tiny":
        constructor, arguments, family = "DMNNResNet", dict(
            sub_blocks=2, target_rate=0.5, depths=(2, 2), base_width=4, cifar_stem=True,
            input_shape=(32, 32, 3)), "dmnn"
    else:
        preset = adaptive_zoo.describe_model(name)
        constructor, family = preset.constructor.__name__, preset.family
        arguments = dict(preset.arguments, **SMALL.get(name, {}))
    if family == "dmnn":
        arguments.update(category_map="cifar100" if dataset == "cifar100" else None,
                         resource_weight=1.0 if dataset == "imagenet" else 2.0)
    return constructor, dict(arguments, num_classes=NUM_CLASSES[dataset]), family


def recipe(dataset, epochs=None, batch_size=None, holdout=None, family="msdnet"):
    """The authors' epochs, batch size, held-out count and the epoch -> learning
    rate rule for `dataset`, with any of them overridden."""
    imagenet = dataset == "imagenet"
    epochs = epochs or (90 if imagenet else 300)
    if holdout is None and family == "cnmm":
        holdout = 0  # nothing to calibrate
    elif holdout is None:
        holdout = (10000 if family == "dmnn" else 50000) if imagenet else 5000
    if imagenet:
        drops = list(range(30, epochs, 30))
    else:
        drops = [epochs // 2, (3 * epochs) // 4]
    return {
        "epochs": epochs,
        "batch_size": batch_size or (256 if imagenet else 64),
        "holdout": holdout,
        "learning_rate": lambda epoch: 0.1 * 0.1 ** sum(epoch >= d for d in drops),
    }


def data_parallel():
    """Make what follows train on every local device, data-parallel: Keras'
    distribution API on JAX, `tf.distribute.MirroredStrategy` on TensorFlow
    (the accelerators, else every logical CPU). Returns the scope to build,
    train and evaluate in, and the number of devices."""
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if backend == "tensorflow":
        import tensorflow as tf

        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        strategy = tf.distribute.MirroredStrategy(devices)
        return strategy.scope(), strategy.num_replicas_in_sync
    raise SystemExit(f"--data-parallel is not supported on the {backend} backend (Keras has no "
                     "distribution API there); use jax or tensorflow, or PyTorch's DistributedDataParallel "
                     "in a loop of your own as examples/train_torch_ddp.py does.")


def _splits(dataset, holdout):
    """Training, held-out (None if `holdout` is 0) and test splits."""
    held = f"train[:{holdout}]" if holdout else None
    if dataset == "imagenet":
        return f"train[{holdout}:]", held, "validation"
    return f"train[{holdout}:]", held, "test"


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row(kind, accuracy, fraction, **where):
    return dict(kind=kind, **where, accuracy=float(accuracy), fraction_of_full_flops=float(fraction))


def measure(model, family, test, budgets, full):
    """Test accuracy and mean FLOPs (fraction of `full`): per exit, with the
    gates as trained or of the whole mixture, then at each budget, batch by
    batch.
    The first pass over `test` also reads its labels for the budget passes."""
    labels, correct, spent = [], 0, []
    for images, y in test:
        y, images = np.asarray(y), np.asarray(images)
        labels.append(y)
        if family in ("dmnn", "cnmm"):
            logits, cost = model.predict(images, batch_size=len(y), budget=None, return_cost=True,
                                         verbose=0)
            correct, spent = correct + np.sum(logits.argmax(-1) == y), spent + [cost]
        else:
            predicted = model.predict_all_exits(images, verbose=0).argmax(-1)
            correct = correct + np.sum(predicted == y[None, :], axis=1)
    labels = np.concatenate(labels)
    if family in ("dmnn", "cnmm"):
        kind = "gates as trained" if family == "dmnn" else "whole mixture"
        rows = [_row(kind, correct / len(labels), float(np.mean(np.concatenate(spent))) / full)]
    else:
        rows = [_row("exit", hits / len(labels), flops / full, exit=k)
                for k, (hits, flops) in enumerate(zip(correct, model.exit_flops()))]
    for b in budgets:
        logits, cost = model.predict(test, budget=b, return_cost=True, verbose=2)
        accuracy = np.mean(logits.argmax(-1) == labels)
        rows.append(_row("budget", accuracy, float(np.mean(cost)) / full, budget=b))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--dataset", required=True, choices=sorted(NUM_CLASSES))
    parser.add_argument("--out", required=True, help="directory for the results (must not exist)")
    parser.add_argument("--data-dir", default=None, help="tfds data_dir with the prepared dataset")
    parser.add_argument("--manual-dir", default=None, help="ImageNet: directory of the ILSVRC2012 tars")
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help="default: the authors' (300 / 90)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=None,
                        help="default: the authors' (64 / 256)")
    parser.add_argument("--holdout", type=cli.positive_int, default=None,
                        help="training images held out for calibration (default: see above)")
    parser.add_argument("--budgets", type=cli.budget_list, default=[0.25, 0.5, 0.75, 1.0],
                        help="budgets at which to measure the test split (those in the calibrated range)")
    parser.add_argument("--data-parallel", action="store_true",
                        help="train on every local device (JAX, TensorFlow); "
                             "--batch-size is the global batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        raise SystemExit(f"{out} exists; choose a new --out (results are never overwritten).")
    constructor, arguments, family = model_arguments(args.model, args.dataset)
    if family == "cnmm" and args.holdout:
        raise SystemExit("--holdout: a CNMM needs no calibration (a budget is a pruned graph), so "
                         "no training images are held out for it; leave --holdout out.")
    plan = recipe(args.dataset, args.epochs, args.batch_size, args.holdout, family)

    scope, devices = data_parallel() if args.data_parallel else (contextlib.nullcontext(), 1)
    with scope:
        return _train(args, out, constructor, arguments, family, plan, devices, argv)


def _train(args, out, constructor, arguments, family, plan, devices, argv):
    train_split, held_split, test_split = _splits(args.dataset, plan["holdout"])
    keras.utils.set_random_seed(args.seed)
    model = getattr(adaptive_zoo, constructor)(**arguments)

    size = model.image_shape[0]
    native = 224 if args.dataset == "imagenet" else 32

    def load(split, training=False):
        # At the model's image size (the dataset's own for the published
        # configurations: CIFAR's 32, ImageNet's 224).
        return data.load_tfds(args.dataset, split, data_dir=args.data_dir, manual_dir=args.manual_dir,
                              batch_size=plan["batch_size"], image_size=None if size == native else size,
                              training=training, seed=args.seed)

    # Fails here, before any training, if the dataset is not prepared.
    train, test = load(train_split, training=True), load(test_split)
    held = None if held_split is None else load(held_split)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    partial = out + ".partial"
    os.makedirs(partial, exist_ok=True)
    start = time.perf_counter()
    model.fit(train, epochs=plan["epochs"], verbose=2, shuffle=False, callbacks=[  # tf.data shuffles
        keras.callbacks.LearningRateScheduler(plan["learning_rate"]),
        keras.callbacks.BackupAndRestore(os.path.join(partial, "backup")),
    ])
    seconds = time.perf_counter() - start

    if family == "cnmm":  # no calibration: every budget down to the cheapest graph
        low, high = model.cheapest_budget(), 1.0
    else:
        low, high = model.calibrate(held, verbose=2).budget_range
    budgets = [b for b in args.budgets if low <= b <= high]
    profile = adaptive_zoo.profile(model)
    full = float(profile.flops)
    rows = measure(model, family, test, budgets, full)

    model.save(os.path.join(partial, "model.keras"))
    weights = os.path.join(partial, "model.weights.h5")
    model.save_weights(weights)
    sha256 = _sha256(weights)
    script = "examples/train_tfds.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    commit = _commit()
    results = {
        "backend": keras.backend.backend(),
        "commit": commit,
        "script": script,
        "dataset": args.dataset,
        "splits": {"train": train_split, "calibration": held_split, "test": test_split},
        "epochs": plan["epochs"],
        "batch_size": plan["batch_size"],
        "devices": devices,
        "training_seconds": round(seconds, 1),
        "constructor": constructor,
        "arguments": arguments,
        "mflops": full / 1e6,
        "params": int(profile.params),
        "calibrated_budgets": None if family == "cnmm" else [low, high],
        "budget_range": [low, high],
        "test": rows,
        "weights_sha256": sha256,
        "manifest_entry": {
            "name": None, "family": family, "url": None, "sha256": sha256,
            "constructor": constructor, "arguments": arguments,
            "measured": [dict(row, dataset=args.dataset, split=test_split, metric="top-1 accuracy",
                              script=script, commit=commit) for row in rows],
        },
    }
    with open(os.path.join(partial, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    shutil.rmtree(os.path.join(partial, "backup"), ignore_errors=True)
    os.replace(partial, out)

    print(f"\n{constructor} on {args.dataset}, {plan['epochs']} epochs ({seconds:.0f} s), "
          f"{full / 1e6:.2f} MFLOPs; test split {test_split}:")
    for row in rows:
        what = {"exit": f"exit {row.get('exit')}", "budget": f"budget {row.get('budget')}"}.get(
            row["kind"], row["kind"])
        print(f"  {what}: accuracy {row['accuracy']:.4f}, {row['fraction_of_full_flops']:.3f} of full FLOPs")
    print(f"wrote {out}: model.keras, model.weights.h5 (sha256 {sha256[:12]}...), results.json")
    return results


if __name__ == "__main__":
    main()
