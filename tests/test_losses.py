"""DMNN's training losses (`adaptive_zoo.losses`) against numbers worked out by
hand, and the class -> category mappings they read. That `fit` reports and
moves each term is tested with the models, in tests/test_dmnn.py."""

import keras
import numpy as np
import pytest
from keras import ops

from adaptive_zoo import losses


def _value(x):
    return float(keras.ops.convert_to_numpy(x))


# Two gated blocks of two sub-blocks each, a batch of four images.
GATES = [
    np.array([[1, 0], [1, 1], [0, 0], [1, 0]], "float32"),  # rates 0.75, 0.25
    np.array([[1, 1], [1, 1], [1, 0], [0, 0]], "float32"),  # rates 0.75, 0.5
]
SUB_BLOCK_FLOPS = [(10.0, 30.0), (20.0, 20.0)]  # gated FLOPs in all: 80


def test_execution_rate_loss_is_the_mean_square_gap_per_sub_block():
    # (0.25^2 + 0.25^2) / 2 for the first block, (0.25^2 + 0^2) / 2 for the second.
    expected = np.mean([0.0625, 0.0625, 0.0625, 0.0])
    assert _value(losses.execution_rate_loss(GATES, 0.5)) == pytest.approx(expected)


def test_a_static_split_that_meets_the_rate_per_block_is_still_penalised():
    # One sub-block always on, the other always off: the block runs half its
    # sub-blocks for every image (a per-block rate of 0.5), but nothing
    # depends on the image. Per sub-block the gap is 0.5 each way.
    static = [np.array([[1, 0]] * 4, "float32")]
    assert _value(losses.execution_rate_loss(static, 0.5)) == pytest.approx(0.25)
    varied = [np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")]
    assert _value(losses.execution_rate_loss(varied, 0.5)) == pytest.approx(0.0)


def test_executed_flops_per_image():
    flops = keras.ops.convert_to_numpy(losses.executed_flops(GATES, SUB_BLOCK_FLOPS))
    np.testing.assert_allclose(flops, [10 + 40, 40 + 40, 0 + 20, 10 + 0])


def test_flops_loss_counts_the_gated_flops_only():
    # Mean executed 40 of 80 gated FLOPs: exactly the target 0.5, whatever
    # the parts that always run cost (they are not in SUB_BLOCK_FLOPS).
    assert _value(losses.flops_loss(GATES, SUB_BLOCK_FLOPS, 0.5)) == pytest.approx(0.0)
    assert _value(losses.flops_loss(GATES, SUB_BLOCK_FLOPS, 0.75)) == pytest.approx(0.0625)


def test_category_loss_is_the_weighted_sum_of_cross_entropies():
    rng = np.random.RandomState(0)
    logits = [rng.randn(4, 3).astype("float32") for _ in range(2)]
    categories = np.array([0, 2, 1, 2])
    weights = (1e-2, 1e-1)
    expected = sum(
        w * np.mean(keras.ops.convert_to_numpy(
            keras.losses.sparse_categorical_crossentropy(categories, z, from_logits=True)))
        for z, w in zip(logits, weights)
    )
    assert _value(losses.category_loss(logits, categories, weights)) == pytest.approx(expected, rel=1e-5)


def test_the_losses_are_float32_under_mixed_precision():
    # Gates and category logits in float16 (a mixed-precision policy's
    # compute dtype) give float32 losses, as Keras' own losses do.
    half = [ops.cast(g, "float16") for g in GATES]
    logits = [ops.cast(np.zeros((4, 3), "float32"), "float16")]
    for value in (losses.execution_rate_loss(half, 0.5), losses.flops_loss(half, SUB_BLOCK_FLOPS, 0.5),
                  losses.category_loss(logits, np.array([0, 1, 2, 0]), (1.0,))):
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert _value(losses.category_loss(logits, np.array([0, 1, 2, 0]), (1.0,))) == pytest.approx(np.log(3))


def test_cifar100_category_map():
    mapping, count = losses.validate_category_map("cifar100", 100)
    assert count == 20 and len(mapping) == 100 and sorted(set(mapping)) == list(range(20))
    # Each coarse label groups five fine labels; apple (0) is a fruit (4).
    assert all(mapping.count(c) == 5 for c in range(20)) and mapping[0] == 4


def test_fashion_mnist_category_map():
    mapping, count = losses.validate_category_map("Fashion_MNIST", 10)  # names in any case
    # Sneaker (7) and ankle boot (9) are footwear like sandal (5); bag (8) alone.
    assert count == 5 and mapping[5] == mapping[7] == mapping[9] != mapping[8]


def test_a_mapping_as_a_dict_or_a_sequence():
    assert losses.validate_category_map({0: 1, 1: 0, 2: 1}, 3) == ([1, 0, 1], 2)
    assert losses.validate_category_map(np.array([2, 0, 2]), 3) == ([2, 0, 2], 3)


@pytest.mark.parametrize("mapping, num_classes, message", [
    ("imagenet", 10, r"Unknown category_map 'imagenet'"),
    ({0: 0, 2: 1}, 3, r"missing classes \[1\]"),
    ([0, 1], 3, "the model has 3 classes and the mapping covers 2"),
    ([0, -1, 1], 3, "category indices must be >= 0, got -1"),
    ([0, 0.5, 1], 3, "whole-number category ids"),
])
def test_bad_mappings_are_named(mapping, num_classes, message):
    with pytest.raises(ValueError, match=message):
        losses.validate_category_map(mapping, num_classes)
