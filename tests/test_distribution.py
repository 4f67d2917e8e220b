"""Training on several devices (MSDNet, DMNN and CNMM): Keras' distribution API on JAX and
tf.distribute on TensorFlow, each on two virtual CPU devices; PyTorch's DistributedDataParallel
in two processes (examples/train_torch_ddp.py).

The device count must be set before the backend starts, so each case runs in
a fresh Python process.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import adaptive_zoo

_COMMON = r"""
import json, sys
import numpy as np
import keras
import adaptive_zoo

def train(make_model, n=64):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model, x, y, history.history["loss"]

def spent_at_half(model, x, y):
    # Budgeted inference after distributed training: the share of FLOPs spent.
    model.calibrate((x, y), budgets=[0.5, 1.0])
    logits, cost = model.predict(x, budget=0.5, return_cost=True, verbose=0)
    assert np.isfinite(logits).all()
    return float(np.mean(cost) / model.exit_flops()[-1])

def msdnet():
    keras.utils.set_random_seed(0)
    return adaptive_zoo.MSDNetTiny(input_shape=(8, 8, 1))

def dmnn():
    keras.utils.set_random_seed(0)
    return adaptive_zoo.DMNNResNet(depths=(2, 2), base_width=8, sub_blocks=2, cifar_stem=True,
                                   num_classes=10, input_shape=(8, 8, 1), target_rate=0.5, seed=0)

def cnmm():
    keras.utils.set_random_seed(0)
    return adaptive_zoo.CNMMTiny(seed=0)

def pruned_runs(model, x):
    # A pruned graph after distributed training: its logits and its cost.
    logits, cost = model.predict(x, budget=0.5, return_cost=True, verbose=0)
    assert np.isfinite(logits).all()
    return float(cost[0] / adaptive_zoo.profile(model).flops)
"""

_JAX = _COMMON + r"""
devices = keras.distribution.list_devices("cpu")
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
result = {"devices": len(devices)}
for name, make in (("msdnet", msdnet), ("dmnn", dmnn), ("cnmm", cnmm)):
    model, x, y, losses = train(make)
    kernel = model.trainable_variables[0].value
    result[name] = {"losses": [float(v) for v in losses],
                    "replicas": len(kernel.sharding.device_set)}
    if name == "msdnet":
        result["budget"] = spent_at_half(model, x, y)
    if name == "cnmm":
        result["pruned"] = pruned_runs(model, x)
json.dump(result, sys.stdout)
"""

_TF = _COMMON + r"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"devices": strategy.num_replicas_in_sync}

def replicas(variable):
    # A mirrored variable holds one copy per device.
    return len(getattr(variable.value, "values", [variable]))

for name, make in (("msdnet", msdnet), ("dmnn", dmnn), ("cnmm", cnmm)):
    with strategy.scope():
        model, x, y, losses = train(make)
    result[name] = {"losses": [float(v) for v in losses],
                    "replicas": replicas(model.trainable_variables[0])}
    if name == "msdnet":
        result["budget"] = spent_at_half(model, x, y)
        # A saved model loaded under the strategy goes on training there.
        import os, tempfile
        path = os.path.join(tempfile.mkdtemp(), "msdnet.keras")
        model.save(path)
        with strategy.scope():
            loaded = keras.saving.load_model(path)
            history = loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
        result["loaded"] = {"losses": [float(v) for v in history.history["loss"]],
                            "replicas": min(replicas(v) for v in loaded.optimizer.variables)}
    if name == "cnmm":
        result["pruned"] = pruned_runs(model, x)
json.dump(result, sys.stdout)
"""


def _run(script, env_extra, args=()):
    env = dict(os.environ, **env_extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(result):
    assert result["devices"] == 2
    for name in ("msdnet", "dmnn", "cnmm"):
        losses = result[name]["losses"]
        assert all(v == v and abs(v) < 1e3 for v in losses), (name, losses)
        assert result[name]["replicas"] == 2, (name, result[name])
    assert abs(result["budget"] - 0.5) <= 0.05 * 0.5
    assert 0 < result["pruned"] <= 0.5


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="Keras' distribution API is JAX's")
def test_data_parallel_fit_on_two_jax_devices():
    _check(_run(_JAX, {"KERAS_BACKEND": "jax",
                       "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_fit_on_two_tensorflow_devices():
    result = _run(_TF, {"KERAS_BACKEND": "tensorflow"})
    _check(result)
    # The optimizer that `load_model` rebuilds (`compile_from_config`) lives
    # under the strategy too, and the loaded model trains.
    assert result["loaded"]["replicas"] == 2, result["loaded"]
    assert all(v == v and abs(v) < 1e3 for v in result["loaded"]["losses"]), result["loaded"]


_DDP = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import train_torch_ddp
result = train_torch_ddp.main(sys.argv[2:])
json.dump(result, sys.stdout)
"""


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's DistributedDataParallel")
@pytest.mark.parametrize("model", ["msdnet", "dmnn", "cnmm"])
def test_ddp_training_in_two_torch_processes(model, tmp_path):
    # examples/train_torch_ddp.py: two Gloo processes on the CPU, each on its
    # own half of every batch. The script fails if their weights differ at the
    # end, which they would if DDP did not average the gradients.
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    saved = str(tmp_path / "model.keras")
    result = _run(_DDP, {"KERAS_BACKEND": "torch"}, [examples, "--model", model, "--epochs", "1",
                                                      "--save", saved])
    assert result["processes"] == 2 and result["devices"] == "cpu"
    assert result["max_weight_difference_between_processes"] == 0.0
    assert result["max_weight_change"] > 1e-3  # training moved them
    assert result["images_shared_by_two_processes_first_epoch"] == 0
    assert all(0 < v < 10 for v in result["losses"]), result["losses"]
    rows = result["evaluation"]
    assert rows and all(0.0 <= row[-1] <= 1.0 for row in rows)
    # The first process's model, saved after training: the same accuracy.
    reloaded = keras.saving.load_model(saved)
    _, (x_test, y_test) = adaptive_zoo.data.load_digits(image_size=reloaded.image_shape[0])
    accuracy = float(np.mean(np.argmax(reloaded.predict(x_test, verbose=0), -1) == y_test))
    full = {"msdnet": ("exit", 3), "dmnn": ("as trained", ""), "cnmm": ("whole mixture", 1.0)}[model]
    # (one test image either way: the processes ran with one thread each)
    assert accuracy == pytest.approx([row[-1] for row in rows if tuple(row[:2]) == full][0],
                                     abs=1.01 / len(y_test))
