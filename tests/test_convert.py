"""The authors' checkpoints -> our models: flags and tensors checked by name."""

import copy
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import adaptive_zoo
from adaptive_zoo import convert
from adaptive_zoo.convert import msdnet as msdnet_convert
from adaptive_zoo.convert import ranet as ranet_convert
from conftest import RANET_TINY_FLAGS

TINY_FLAGS = {
    "data": "cifar10", "nBlocks": 2, "stepmode": "even", "step": 1, "base": 1, "nChannels": 4,
    "growthRate": 2, "grFactor": "1-2", "bnFactor": "1-2", "bottleneck": True, "reduction": 0.5,
    "prune": "max",
}

CONVERTERS = {"msdnet": (msdnet_convert, TINY_FLAGS), "ranet": (ranet_convert, RANET_TINY_FLAGS)}


def random_state(kind):
    """A random state dict under the authors' names and layouts."""
    module, flags = CONVERTERS[kind]
    model = convert.from_authors(kind, flags)
    rng = np.random.default_rng(0)
    state = {}
    for name, (variable, transform) in module.entries(model).items():
        shape = tuple(variable.shape)
        if transform is not None and len(shape) == 4:  # HWIO -> OIHW
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif transform is not None:
            shape = shape[::-1]
        value = rng.random(shape).astype("float32")
        if name.endswith("running_var"):
            value += 0.5
        state[name] = value
        if name.endswith("running_var"):
            state[name.replace("running_var", "num_batches_tracked")] = np.array(3)
    return model, state


@pytest.fixture(scope="module")
def tiny_state():
    return random_state("msdnet")


def test_flags_translate_to_the_published_configuration():
    kwargs = msdnet_convert.model_kwargs({**TINY_FLAGS, "data": "ImageNet"})
    assert kwargs["imagenet_stem"] and kwargs["head_width"] is None and kwargs["num_classes"] == 1000


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nBlock": 3}, "Unknown MSDNet flags \\['nBlock'\\]"),
        ({"bnFactor": "1-2-4"}, "one entry per scale"),
        ({"stepmode": "odd"}, "step_mode"),
        ({"data": "mnist"}, "data must be"),
        ({"nScales": 3}, "nScales=3 disagrees"),
        # Read as 2, 1 and True before: a network other than the flags describe.
        ({"nBlocks": 2.5}, "nBlocks must be an integer, got 2.5"),
        ({"grFactor": [1, 2.5]}, "each entry of grFactor must be an integer, got 2.5"),
        ({"bottleneck": "False"}, "bottleneck must be True or False, got 'False'"),
        ({"reduction": 1.5}, "0 <= reduction <= 1"),
    ],
)
def test_unknown_or_inconsistent_flags_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        convert.from_authors("msdnet", {**TINY_FLAGS, **change})


def test_flags_as_the_authors_command_line_gives_them_are_read():
    model = convert.from_authors("msdnet", {**TINY_FLAGS, "nBlocks": "2", "nChannels": np.int64(4)})
    assert model.arch["n_blocks"] == 2 and model.arch["n_channels"] == 4


@pytest.mark.parametrize("change, message", [
    ({"step": 2.5}, "step must be an integer, got 2.5"),
    ({"bnAfter": "yes"}, "bnAfter must be True or False, got 'yes'"),
])
def test_ranet_flags_of_the_wrong_type_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        convert.from_authors("ranet", {**RANET_TINY_FLAGS, **change})


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="Unknown kind"):
        convert.from_authors("resnet", TINY_FLAGS)


def test_a_complete_state_dict_loads(tiny_state):
    _, state = tiny_state
    model = convert.from_authors("msdnet", TINY_FLAGS, state)
    name = "classifier.1.linear.weight"
    np.testing.assert_allclose(np.asarray(model.heads[1].dense.kernel), state[name].T)


def test_state_dict_is_a_mapping_or_a_path(tiny_state, tmp_path):
    model, state = tiny_state
    np.savez(tmp_path / "state.npz", **state)
    with np.load(tmp_path / "state.npz") as npz:  # NumPy's Mapping, not a dict (it went to torch.load)
        loaded = convert.from_authors("msdnet", TINY_FLAGS, npz)
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    reference = convert.from_authors("msdnet", TINY_FLAGS, state)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(reference(x)), atol=1e-6)
    with pytest.raises(ValueError, match="state_dict must be None, a mapping .* got int"):
        convert.from_authors("msdnet", TINY_FLAGS, 42)


def test_missing_extra_and_misshaped_tensors_are_named(tiny_state):
    _, state = tiny_state
    broken = copy.copy(state)
    del broken["classifier.0.linear.bias"]
    broken["classifier.9.linear.weight"] = np.zeros((1, 1), "float32")
    broken["blocks.0.0.layers.0.net.0.weight"] = np.zeros((5, 3, 3, 3), "float32")
    with pytest.raises(ValueError) as info:
        convert.from_authors("msdnet", TINY_FLAGS, broken)
    text = str(info.value)
    assert "missing (1): classifier.0.linear.bias" in text
    assert "unexpected (1): classifier.9.linear.weight" in text
    assert "blocks.0.0.layers.0.net.0.weight: (5, 3, 3, 3)" in text


def test_the_authors_checkpoint_file_format_loads(tiny_state, tmp_path):
    torch = pytest.importorskip("torch")
    _, state = tiny_state
    wrapped = {
        "epoch": 300,
        "state_dict": {"module." + k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
    }
    path = tmp_path / "msdnet-tiny.pth.tar"
    torch.save(wrapped, str(path))
    model = adaptive_zoo.MSDNet(**msdnet_convert.model_kwargs(TINY_FLAGS), weights=str(path))
    np.testing.assert_allclose(
        np.asarray(model.heads[0].dense.bias), state["classifier.0.linear.bias"], atol=0
    )
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        adaptive_zoo.MSDNet(**msdnet_convert.model_kwargs(TINY_FLAGS), weights=str(bad))


def test_a_checkpoint_of_the_other_family_is_named(tiny_state):
    _, state = tiny_state
    with pytest.raises(ValueError, match="This is a msdnet checkpoint"):
        convert.from_authors("ranet", RANET_TINY_FLAGS, state)


_LOAD_ELSEWHERE = """
import sys, numpy as np, keras, adaptive_zoo
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.stack([keras.ops.convert_to_numpy(o) for o in model(x, exits="all")]))
"""


@pytest.mark.parametrize("kind", ["msdnet", "ranet"])
def test_converted_model_saved_here_loads_under_another_backend(kind, tmp_path):
    _, state = random_state(kind)
    model = convert.from_authors(kind, CONVERTERS[kind][1], state)
    x = np.random.default_rng(1).normal(size=(3,) + model.image_shape).astype("float32")
    ours = np.stack([keras.ops.convert_to_numpy(o) for o in model(x, exits="all")])
    model.save(str(tmp_path / "converted.keras"))
    np.save(tmp_path / "x.npy", x)
    backends = ["tensorflow", "jax", "torch"]
    other = backends[(backends.index(keras.backend.backend()) + 1) % 3]
    env = dict(os.environ, KERAS_BACKEND=other)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run(
        [sys.executable, "-c", _LOAD_ELSEWHERE, str(tmp_path / "converted.keras"),
         str(tmp_path / "x.npy"), str(tmp_path / "theirs.npy")],
        env=env, check=True, capture_output=True, timeout=600,
    )
    theirs = np.load(tmp_path / "theirs.npy")
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, np.abs(ours).max())


def test_a_checkpoint_of_another_class_count_loads_all_but_the_classifiers(tiny_state, tmp_path):
    torch = pytest.importorskip("torch")
    _, state = tiny_state  # 10 classes (cifar10)
    path = tmp_path / "msdnet-tiny.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, str(path))
    kwargs = {**msdnet_convert.model_kwargs(TINY_FLAGS), "num_classes": 3}
    with pytest.warns(UserWarning, match="trained for 10 classes, this model has num_classes=3"):
        model = adaptive_zoo.MSDNet(**kwargs, weights=str(path))
    full = convert.from_authors("msdnet", TINY_FLAGS, state)
    heads = {id(v) for layer in model.classifier_layers() for v in layer.weights}
    for mine, theirs in zip(model.weights, full.weights):
        if id(mine) not in heads:
            np.testing.assert_array_equal(np.asarray(keras.ops.convert_to_numpy(mine)),
                                          np.asarray(keras.ops.convert_to_numpy(theirs)))
    assert [tuple(layer.kernel.shape)[-1] for layer in model.classifier_layers()] == [3, 3]
    # Any other difference is still an error, and nothing is assigned.
    broken = {**state, "blocks.0.0.layers.0.net.0.weight": np.zeros((5, 3, 3, 3), "float32")}
    fresh = adaptive_zoo.MSDNet(**kwargs)
    before = keras.ops.convert_to_numpy(fresh.weights[0])
    with pytest.raises(ValueError, match="blocks.0.0.layers.0.net.0.weight"):
        convert.load_state_dict(fresh, broken, "msdnet")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.weights[0]), before)
