"""The cost convention (PAPERS.md: a multiply-add is one operation)."""

import keras
import pytest

import adaptive_zoo
from adaptive_zoo import cost


def test_primitives_follow_the_authors_convention():
    assert cost.conv_flops(16, 32, 3, 8, 8) == 16 * 32 * 9 * 64
    assert cost.conv_flops(16, 16, 3, 8, 8, groups=16) == 16 * 9 * 64
    assert cost.dense_flops(128, 100) == 128 * 100 + 100
    assert cost.relu_flops(4, 4, 8) == 128
    assert cost.pool_flops(8, 2, 2, 3) == 8 * 4 * 9
    assert cost.conv_output_size(32, 3, 2, 1) == 16
    assert cost.conv_output_size(7, 3, 2, 1) == 4


def test_lin_grow_profile_is_cumulative_and_sums_its_parts():
    model = adaptive_zoo.MSDNetCIFARBudgeted(num_classes=10, n_blocks=3)
    profile = adaptive_zoo.profile(model)
    stages, heads = model._stage_flops(), model._exit_own_flops()
    running = 0
    for k, total in enumerate(profile.exit_flops):
        running += stages[k] + heads[k]
        assert total == running
    layers = [sum(type(layer).__name__ == "MSDLayer" for layer in block) for block in model.blocks]
    assert layers == [1, 2, 3]  # lin_grow: base, then step * i + 1 layers


def test_params_ignore_batchnorm_statistics_and_freezing():
    model = adaptive_zoo.MSDNetTiny()
    trainable = sum(int(keras.ops.size(v)) for v in model.trainable_weights)
    assert adaptive_zoo.profile(model).params == trainable
    model.trainable = False
    assert adaptive_zoo.profile(model).params == trainable


def test_profile_refuses_foreign_models():
    with pytest.raises(TypeError, match="adaptive_zoo model"):
        adaptive_zoo.profile(keras.Sequential([keras.layers.Dense(2)]))
