"""MixtureEdge and mix_node: directions, keep probability, relaxed samples,
the normalized node, serialization, cost."""

import numpy as np
import pytest
from keras import ops

from adaptive_zoo.layers import ConvBNAct, MixtureEdge, mix_node


def _x(batch=4, size=8, channels=3, seed=0):
    return np.random.RandomState(seed).rand(batch, size, size, channels).astype("float32")


@pytest.mark.parametrize("direction, size", [("same", 8), ("down", 4), ("up", 16)])
def test_directions_change_the_scale(direction, size):
    edge = MixtureEdge(5, direction=direction)
    outputs, weight = edge(_x())
    assert tuple(outputs.shape) == (4, size, size, 5)
    assert edge.compute_output_shape((4, 8, 8, 3))[0] == (4, size, size, 5)
    np.testing.assert_allclose(float(ops.convert_to_numpy(weight)), 1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_up_edge_is_the_coarse_convolution_repeated():
    edge = MixtureEdge(2, direction="up")
    outputs = ops.convert_to_numpy(edge(_x())[0])
    coarse = ops.convert_to_numpy(edge.block(_x()))
    np.testing.assert_allclose(outputs[:, ::2, ::2], coarse, rtol=1e-6)
    np.testing.assert_allclose(outputs[:, 1::2, 1::2], coarse, rtol=1e-6)


def test_training_samples_are_relaxed_bernoulli_per_image_and_fresh():
    edge = MixtureEdge(2, keep_logit=0.8, seed=3)
    x = _x(batch=2000, size=2, channels=1)
    first = ops.convert_to_numpy(edge(x, training=True)[1]).reshape(-1)
    second = ops.convert_to_numpy(edge(x, training=True)[1]).reshape(-1)
    assert 0.0 < first.min() and first.max() < 1.0
    assert (first != second).mean() > 0.99
    # A Concrete sample exceeds 1/2 exactly with the keep probability.
    p = 1 / (1 + np.exp(-0.8))
    assert abs((first > 0.5).mean() - p) < 0.04


def test_keep_logit_is_learned():
    edge = MixtureEdge(2, keep_logit=0.0, seed=1)
    edge.build((None, 4, 4, 3))
    assert [w.name for w in edge.trainable_weights if "keep" in w.name] == ["keep_logit"]


def test_mix_node_is_the_normalized_weighted_sum():
    a, b = np.full((1, 2, 2, 1), 1.0, "float32"), np.full((1, 2, 2, 1), 4.0, "float32")
    mixed = ops.convert_to_numpy(mix_node([(a, 0.25), (b, 0.75)]))
    np.testing.assert_allclose(mixed, np.full((1, 2, 2, 1), 3.25), rtol=1e-6)
    # One edge: its outputs, whatever its weight; larger (upsampled) maps cropped.
    big = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    alone = ops.convert_to_numpy(mix_node([(big, ops.convert_to_tensor(0.1))], size=(2, 2)))
    np.testing.assert_array_equal(alone, big[:, :2, :2])
    with pytest.raises(ValueError, match="at least one incoming edge"):
        mix_node([])


def test_serialization_round_trip_and_cost():
    edge = MixtureEdge(6, direction="down", keep_logit=-1.0, temperature=0.5, seed=7, name="e")
    edge.build((None, 8, 8, 3))
    clone = MixtureEdge.from_config(edge.get_config())
    clone.build((None, 8, 8, 3))
    clone.set_weights(edge.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(_x())[0]),
                               ops.convert_to_numpy(edge(_x())[0]), rtol=1e-6)
    assert (clone.direction, clone.temperature, clone.keep_logit_init) == ("down", 0.5, -1.0)
    assert edge.flops((8, 8, 3)) == ConvBNAct(6, 3, strides=2).flops((8, 8, 3)) == 3 * 6 * 9 * 16 + 6 * 16


@pytest.mark.parametrize("kwargs, message", [
    ({"direction": "left"}, "direction"),
    ({"temperature": 0.0}, "temperature"),
    ({"keep_logit": float("nan")}, "keep_logit"),
    ({"kernel_size": 0}, "kernel_size must be a positive integer, got 0"),
    ({"filters": 2.5}, "filters must be a positive integer, got 2.5"),
])
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"filters": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        MixtureEdge(**kwargs)


def test_input_of_the_wrong_rank_is_named():
    # It failed with "not enough values to unpack".
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        MixtureEdge(4)(np.zeros((8, 8, 3), "float32"))
