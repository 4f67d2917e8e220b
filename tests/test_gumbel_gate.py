"""GumbelGate: decisions, noise, threshold, serialization, cost."""

import numpy as np
import pytest
from keras import ops

from adaptive_zoo.layers import GumbelGate


def _x(batch=6, seed=0):
    return np.random.RandomState(seed).rand(batch, 4, 4, 8).astype("float32")


def test_inference_is_deterministic_hard_and_exposes_state():
    gate = GumbelGate(3, use_previous_state=False, seed=1)
    gates, state = gate(_x())
    again, _ = gate(_x())
    g = ops.convert_to_numpy(gates)
    assert g.shape == (6, 3) and tuple(state.shape) == (6, 32)
    assert set(np.unique(g)) <= {0.0, 1.0}
    np.testing.assert_array_equal(g, ops.convert_to_numpy(again))


def test_threshold_moves_the_decisions():
    gate = GumbelGate(2, use_previous_state=False, seed=1)
    on, _ = gate(_x(), threshold=0.0)
    off, _ = gate(_x(), threshold=1.01)
    assert ops.convert_to_numpy(on).min() == 1.0
    assert ops.convert_to_numpy(off).max() == 0.0


def test_training_draws_fresh_hard_samples():
    # on_bias 0.1 = off logit: p(on) = 0.5, so samples must differ between calls.
    gate = GumbelGate(4, use_previous_state=False, on_bias=0.1, seed=3)
    x = _x(batch=32)
    first = ops.convert_to_numpy(gate(x, training=True)[0])
    second = ops.convert_to_numpy(gate(x, training=True)[0])
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert (first != second).any()
    assert 0.2 < first.mean() < 0.8


def test_previous_state_is_required_and_used():
    first = GumbelGate(2, use_previous_state=False, name="g0")
    second = GumbelGate(2, use_previous_state=True, name="g1")
    _, state = first(_x())
    _, s1 = second(_x(), previous_state=state)
    _, s2 = second(_x(), previous_state=ops.zeros_like(state) + 5.0)
    assert not np.allclose(ops.convert_to_numpy(s1), ops.convert_to_numpy(s2))
    with pytest.raises(ValueError, match="previous_state"):
        second(_x())


def test_config_round_trip_and_errors():
    gate = GumbelGate(4, units=16, use_previous_state=False, temperature=0.5, seed=7)
    clone = GumbelGate.from_config(gate.get_config())
    assert clone.get_config() == gate.get_config()
    with pytest.raises(ValueError, match="num_sub_blocks"):
        GumbelGate(0)
    with pytest.raises(ValueError, match="temperature"):
        GumbelGate(2, temperature=0.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_sub_blocks": 2.5}, "num_sub_blocks must be a positive integer, got 2.5"),
    ({"num_sub_blocks": "2"}, "num_sub_blocks must be a positive integer"),
    ({"num_sub_blocks": 2, "units": 0}, "units must be a positive integer, got 0"),
    ({"num_sub_blocks": 2, "on_bias": float("inf")}, "on_bias must be a finite number"),
])
def test_bad_arguments_are_named(kwargs, message):
    # 2.5 sub-blocks used to become 2 without a word.
    with pytest.raises(ValueError, match=message):
        GumbelGate(**kwargs)


@pytest.mark.parametrize("shape", [(6, 7), (6, 4, 32)])
def test_previous_state_of_another_shape_is_named(shape):
    gate = GumbelGate(2, units=32)
    with pytest.raises(ValueError, match=r"previous_state of shape \(batch, 32\)"):
        gate(_x(), previous_state=np.zeros(shape, "float32"))


@pytest.mark.parametrize("shape", [(6, 8), (4, 4, 8), (1, 6, 4, 4, 8)])
def test_input_of_the_wrong_rank_is_named(shape):
    # (6, 8) failed deep inside with "tuple index out of range".
    gate = GumbelGate(2, use_previous_state=False)
    with pytest.raises(ValueError, match=f"expected ndim=4, found ndim={len(shape)}"):
        gate(np.zeros(shape, "float32"))


def test_flops_counts_pooling_and_the_three_fcs():
    gate = GumbelGate(2, units=32, use_previous_state=True)
    h, w, c = 7, 7, 64
    expected = h * w * c + (c * 32 + 32) + 32 + (32 * 32 + 32) + 64 + (32 * 4 + 4)
    assert gate.flops((h, w, c)) == expected
