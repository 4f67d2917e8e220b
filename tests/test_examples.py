"""The example scripts on the current backend. The README's main job
(`examples/eval.py`, run by `scripts/eval.sh`), shortened to one or two
epochs: it trains, calibrates, prints and writes its CSV, and the numbers in
it keep the budget contract. `examples/benchmark.py` on the tiny MSDNet, and
`examples/train_tfds.py` on tfds' mock data, `examples/train_dmnn.py` on a
few stand-in Fashion-MNIST images."""

import csv
import importlib.util
import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import adaptive_zoo
from conftest import write_fashion_mnist

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _load(name):
    # The scripts import their helpers beside them (`cli`, `timing`), as
    # Python does when it runs one.
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def eval_example(monkeypatch):
    module = _load("eval")
    # Two budgets instead of six: on JAX most of the job's time is compiling
    # programs for the survivor batch sizes each budget meets.
    monkeypatch.setattr(module, "BUDGETS", (0.6, 1.0))
    return module


def _read_csv(out):
    with open(os.path.join(out, "eval.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["fraction_of_full_flops"] = float(row["fraction_of_full_flops"])
        row["test_accuracy"] = float(row["test_accuracy"])
    return rows


def _by_kind(rows, kind):
    return {row["exit_or_budget"]: row for row in rows if row["kind"] == kind}


def test_msdnet_job_writes_accuracy_against_cost(eval_example, tmp_path, capsys):
    eval_example.main(["--epochs", "2", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "per exit" in printed and "wrote" in printed
    rows = _read_csv(tmp_path)
    exits = _by_kind(rows, "exit")
    fractions = [exits[k]["fraction_of_full_flops"] for k in sorted(exits, key=int)]
    assert len(fractions) == 4 and fractions == sorted(fractions) and fractions[-1] == 1.0
    # Trained: the last exit is far above chance (10 classes) after two epochs.
    assert exits[str(len(fractions) - 1)]["test_accuracy"] > 0.5
    anytime = _by_kind(rows, "anytime")
    assert set(anytime) == {f"{b}" for b in eval_example.BUDGETS}
    for budget, row in anytime.items():
        assert row["fraction_of_full_flops"] <= float(budget) + 1e-6
    budgeted = _by_kind(rows, "budgeted")
    assert budgeted, "no budget inside the calibrated range"
    for budget, row in budgeted.items():
        # Calibrated on held-out images; on the test images the mean cost
        # stays near the budget.
        assert abs(row["fraction_of_full_flops"] - float(budget)) < 0.1 * float(budget)
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in rows)
    # The set-up installs matplotlib (the `plot` extra): the job plots too.
    assert "eval.png" in printed and os.path.getsize(os.path.join(tmp_path, "eval.png")) > 1000


def test_dmnn_job_writes_accuracy_against_cost(eval_example, tmp_path):
    eval_example.main(["--model", "dmnn", "--epochs", "1", "--out", str(tmp_path)])
    rows = _read_csv(tmp_path)
    assert len(_by_kind(rows, "as trained")) == 1
    topk = _by_kind(rows, "topk")
    assert topk, "no budget above the always-run cost"
    for budget, row in topk.items():
        assert row["fraction_of_full_flops"] == pytest.approx(float(budget), rel=0.05)
    calibrated = _by_kind(rows, "calibrated")
    assert calibrated
    for budget, row in calibrated.items():
        assert abs(row["fraction_of_full_flops"] - float(budget)) < 0.1 * float(budget)
    costs = np.array([row["fraction_of_full_flops"] for row in rows])
    assert np.all((costs > 0) & (costs <= 1.0 + 1e-6))


def test_cnmm_job_writes_accuracy_against_cost(eval_example, tmp_path):
    eval_example.main(["--model", "cnmm", "--epochs", "2", "--out", str(tmp_path)])
    rows = _read_csv(tmp_path)
    (whole,) = _by_kind(rows, "whole mixture").values()
    assert whole["fraction_of_full_flops"] == 1.0 and whole["test_accuracy"] > 0.5
    for rule in ("probability", "cost"):
        pruned = _by_kind(rows, rule)
        assert pruned, f"no budget reachable by {rule} pruning"
        budgets = sorted(pruned, key=float)
        fractions = [pruned[b]["fraction_of_full_flops"] for b in budgets]
        assert all(f <= float(b) + 1e-6 for f, b in zip(fractions, budgets))
        assert fractions == sorted(fractions)  # a lower budget never runs more


def test_benchmark_reports_each_budget_and_the_state(monkeypatch, capsys):
    # The speed tables in the README come from `examples/benchmark.py`; this
    # runs it on the tiny MSDNet (timings are not checked, only that every
    # budget gets its row and that a lower budget spends fewer FLOPs).
    monkeypatch.syspath_prepend(EXAMPLES)  # its `import timing`
    benchmark = _load("benchmark")
    rows = benchmark.main(["--model", "tiny", "--batch", "16", "--batches", "2", "--repeats", "1",
                           "--calibration-size", "128", "--budgets", "1.0,0.5"])
    assert [b for b, *_ in rows] == [1.0, 0.5]
    (_, full_one, full_stream, *_), (_, half_one, half_stream, *_, ran_one, ran_stream) = rows
    assert half_one < full_one and half_stream < full_stream
    # What ran is at most the authors' cost that `return_cost` reports.
    assert ran_one <= half_one and ran_stream <= half_stream
    out = capsys.readouterr().out
    assert "efficiency" in out and "computed_exit_flops" in out
    # --state: the state each stage hands on, per image, as the stages make it;
    # `--model` takes the catalog's names as well as the short ones.
    mib = benchmark.main(["--model", "msdnet_tiny", "--state"])
    assert len(mib) == 4 and all(m > 0 for m in mib[:-1])
    assert mib[-1] == 0  # the last stage hands on nothing


def test_cnmm_benchmark_reports_each_budget(monkeypatch, capsys):
    # The README's CNMM speed table comes from `examples/benchmark_cnmm.py`;
    # run on the tiny CNMM, timings unchecked.
    monkeypatch.syspath_prepend(EXAMPLES)
    rows = _load("benchmark_cnmm").main(["--model", "tiny", "--batch", "16", "--repeats", "1",
                                         "--budgets", "1.0", "0.5", "0.05", "--edges"])
    assert [(b, c <= b) for b, c, _ in rows] == [(1.0, True), (0.5, True)]
    assert rows[1][1] < rows[0][1] == 1.0
    printed = capsys.readouterr().out
    assert "of ideal" in printed and "below the cheapest graph" in printed
    # --edges: each edge timed alone; every edge is kept at 1.0, fewer at 0.5.
    kept = [line.split("|")[2:4] for line in printed.splitlines() if line.startswith("| 1.00 | 1.000")
            or line.startswith("| 0.50 | 0.")]
    assert [float(flops) for flops, _ in kept][0] == 1.0 and len(kept) == 2, printed
    assert 0 < float(kept[1][1]) < 1.0


def test_dmnn_benchmark_reports_each_budget(monkeypatch, capsys):
    # The README's DMNN speed tables come from `examples/benchmark_dmnn.py`;
    # run on a tiny DMNN, timings unchecked: every reachable budget gets its
    # row at about its cost, and one below the always-run part says so.
    monkeypatch.syspath_prepend(EXAMPLES)
    rows = _load("benchmark_dmnn").main(["--model", "tiny", "--batch", "8", "--repeats", "1",
                                         "--budgets", "1.0", "0.7", "0.05"])
    assert [b for b, _, _ in rows] == [1.0, 0.7]
    assert all(abs(cost - b) <= 0.05 * b and seconds > 0 for b, cost, seconds in rows)
    printed = capsys.readouterr().out
    assert "of ideal" in printed and "below the always-run cost" in printed


def test_fashion_mnist_dmnn_script_compares_with_every_gate_on(tmp_path, capsys):
    # `examples/train_dmnn.py` gives the README's Fashion-MNIST table; here on
    # 48 random images in the dataset's IDX files, two short epochs.
    rng = np.random.default_rng(0)
    write_fashion_mnist(tmp_path, rng.integers(0, 256, (48, 28, 28)), np.arange(48) % 10)
    result = _load("train_dmnn").main(["--epochs", "2", "--train-images", "32", "--batch-size", "16",
                                       "--data-dir", str(tmp_path)])
    model = result["model"]
    assert model.input_shape[1:] == (14, 14, 1)
    # Its rate decays to zero over the run: 2 epochs of 2 steps.
    assert int(model.optimizer.iterations) == 4
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    assert model.cheapest_budget() <= result["mean_cost"] <= 1.0
    printed = capsys.readouterr().out
    assert "gates as trained" in printed and "same network with every gate on" in printed


def test_training_on_a_tfds_copy_takes_every_preset():
    # `--model` is any name of `adaptive_zoo.list_models()` (plus a small
    # DMNN); checked without building (the ImageNet presets are large).
    train = _load("train_tfds")
    assert set(adaptive_zoo.list_models()) < set(train.MODELS)
    for name in train.MODELS:
        for dataset in train.NUM_CLASSES:
            constructor, arguments, family = train.model_arguments(name, dataset)
            inspect.signature(getattr(adaptive_zoo, constructor)).bind(**arguments)
            assert arguments["num_classes"] == train.NUM_CLASSES[dataset]
            if family == "dmnn":
                assert arguments["category_map"] == ("cifar100" if dataset == "cifar100" else None)
    assert train.model_arguments("msdnet_imagenet_step6", "imagenet") == (
        "MSDNetImageNet", {"step": 6, "num_classes": 1000}, "msdnet")


@pytest.mark.parametrize("model", ["msdnet_tiny", "dmnn_tiny", "cnmm_tiny"])
def test_training_on_a_tfds_copy_writes_a_measured_checkpoint(model, tmp_path):
    # `examples/train_tfds.py`, the README's path for a user with CIFAR or
    # ImageNet, end to end on tfds' mock CIFAR-100: trains, calibrates on the
    # held-out images (CNMM: none), measures the test split and saves, all or
    # nothing.
    tfds = pytest.importorskip("tensorflow_datasets")
    train = _load("train_tfds")
    out = tmp_path / "run"
    args = ["--model", model, "--dataset", "cifar100", "--out", str(out), "--epochs", "1",
            "--batch-size", "16", "--budgets", "0.75,1.0"]
    if model != "cnmm_tiny":
        args += ["--holdout", "16"]
    else:
        with pytest.raises(SystemExit, match="needs no calibration"):
            train.main(args + ["--holdout", "16"])
    with tfds.testing.mock_data(num_examples=48):
        results = train.main(args)
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no `run.partial` left behind
    assert sorted(os.listdir(out)) == ["model.keras", "model.weights.h5", "results.json"]
    with open(out / "results.json") as f:
        assert json.load(f) == json.loads(json.dumps(results))
    entry = results["manifest_entry"]
    assert entry["sha256"] == train._sha256(str(out / "model.weights.h5"))
    assert entry["measured"] and all(m["script"] and m["commit"] for m in entry["measured"])
    kinds = [row["kind"] for row in results["test"]]
    first = {"dmnn_tiny": "gates as trained", "cnmm_tiny": "whole mixture"}.get(model, "exit")
    assert kinds[0] == first and "budget" in kinds
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in results["test"])
    # The saved model carries its calibration; the weights load into the
    # same constructor.
    loaded = keras.saving.load_model(str(out / "model.keras"))
    if model == "cnmm_tiny":
        assert results["splits"]["calibration"] is None and results["calibrated_budgets"] is None
        budget_rows = [row for row in results["test"] if row["kind"] == "budget"]
        assert all(row["fraction_of_full_flops"] <= row["budget"] for row in budget_rows)
    else:
        assert loaded.calibration is not None
    getattr(adaptive_zoo, results["constructor"])(weights=str(out / "model.weights.h5"),
                                                  **results["arguments"])
    with pytest.raises(SystemExit, match="exists"):
        train.main(args)


def test_training_without_the_dataset_says_how_to_prepare_it(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    train = _load("train_tfds")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        train.main(["--model", "msdnet_tiny", "--dataset", "cifar10", "--out", str(tmp_path / "run"),
                    "--data-dir", str(tmp_path / "no_data")])
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "run.partial")


_DATA_PARALLEL = r"""
import json, sys
if sys.argv[3] == "tensorflow":  # two logical CPUs, before TensorFlow starts
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import tensorflow_datasets as tfds
import train_tfds
with tfds.testing.mock_data(num_examples=48):
    results = train_tfds.main(["--model", "msdnet_tiny", "--dataset", "cifar10", "--out", sys.argv[2],
                               "--epochs", "1", "--batch-size", "16", "--holdout", "16",
                               "--budgets", "1.0", "--data-parallel"])
print(json.dumps({"devices": results["devices"], "test": results["test"]}))
"""


def test_training_script_runs_data_parallel_on_two_devices(tmp_path):
    # `--data-parallel` on two virtual CPU devices (set before the backend
    # starts, hence a fresh process); PyTorch refuses it by name.
    pytest.importorskip("tensorflow_datasets")
    backend = keras.backend.backend()
    if backend == "torch":
        with pytest.raises(SystemExit, match="not supported on the torch backend"):
            _load("train_tfds").main(["--model", "msdnet_tiny", "--dataset", "cifar10",
                                      "--out", str(tmp_path / "run"), "--data-parallel"])
        assert not os.listdir(tmp_path)
        return
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = os.path.dirname(EXAMPLES) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _DATA_PARALLEL, EXAMPLES, str(tmp_path / "run"), backend],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    assert sorted(os.listdir(tmp_path / "run")) == ["model.keras", "model.weights.h5", "results.json"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in result["test"])


def test_ddp_example_refuses_what_it_cannot_run():
    # examples/train_torch_ddp.py (its runs: tests/test_distribution.py).
    train_torch_ddp = _load("train_torch_ddp")
    if keras.backend.backend() != "torch":
        with pytest.raises(SystemExit, match="run with KERAS_BACKEND=torch"):
            train_torch_ddp.main([])
        return
    with pytest.raises(SystemExit, match="must split evenly"):
        train_torch_ddp.main(["--processes", "3", "--batch-size", "64"])
    with pytest.raises(SystemExit, match="a .keras path"):
        train_torch_ddp.main(["--save", "model.h5"])


@pytest.mark.parametrize("script, argv", [
    ("eval", ["--epochs", "-1"]),
    ("train_dmnn", ["--batch-size", "0"]),
    ("train_tfds", ["--model", "msdnet_tiny", "--dataset", "cifar10", "--out", "x", "--epochs", "0"]),
    ("train_torch_ddp", ["--processes", "0"]),
    ("benchmark", ["--repeats", "two"]),
    ("benchmark_cnmm", ["--batch", "-8"]),
    ("benchmark_dmnn", ["--repeats", "0"]),
])
def test_scripts_name_a_count_that_is_not_positive(script, argv, capsys):
    # `eval.py --epochs -1` reached Keras as a schedule with decay_steps=-17.
    with pytest.raises(SystemExit) as exit_:
        _load(script).main(argv)
    assert exit_.value.code == 2  # argparse's usage error, before any work
    assert "must be a positive integer" in capsys.readouterr().err


def test_benchmark_takes_no_stream_but_not_a_negative_one(capsys):
    with pytest.raises(SystemExit):
        _load("benchmark").main(["--batches", "-1"])
    assert "argument --batches: must be an integer >= 0, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, message", [
    # Read only after training before (a ValueError, or 1.5 left out without a word).
    ("train_tfds", ["--budgets", "0.5,abc"], "must be budgets in (0, 1] separated by commas, got 'abc'"),
    ("train_tfds", ["--budgets", "1.5"], "must be budgets in (0, 1] separated by commas, got '1.5' in '1.5'"),
    ("train_tfds", ["--budgets", "0.5,,1.0"], "must be budgets separated by commas"),
    ("benchmark", ["--budgets", "0,0.5"], "must be budgets in (0, 1] separated by commas, got '0' in"),
    ("benchmark_dmnn", ["--budgets", "1.0", "2"], "must be a budget in (0, 1], got '2'"),
    ("benchmark_cnmm", ["--budgets", "nan"], "must be a budget in (0, 1], got 'nan'"),
])
def test_scripts_name_a_budget_outside_the_range(script, argv, message, capsys):
    if script == "train_tfds":
        argv = ["--model", "msdnet_tiny", "--dataset", "cifar10", "--out", "x"] + argv
    with pytest.raises(SystemExit) as exit_:
        _load(script).main(argv)
    assert exit_.value.code == 2  # argparse's usage error, before any work
    assert f"argument --budgets: {message}" in capsys.readouterr().err


def test_budget_lists_are_read_in_order():
    cli = _load("cli")
    assert cli.budget_list("1.0, 0.5,0.25") == [1.0, 0.5, 0.25]
    assert cli.budget("1") == 1.0


def test_eval_names_a_save_path_keras_would_refuse_after_training(capsys):
    with pytest.raises(SystemExit) as exit_:
        _load("eval").main(["--save", "trained.h5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --save: must be a path ending in .weights.h5, got 'trained.h5'" in err
