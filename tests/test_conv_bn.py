"""Convolution + BatchNorm + activation (`layers/conv_bn.py`): PyTorch's
padding, and BatchNorm folded into the kernel at inference."""

import keras
import numpy as np
import pytest

from adaptive_zoo.layers.conv_bn import ConvBNAct


def _trained_statistics(layer, rng):
    """Non-trivial BatchNorm statistics and affine pair, as after training."""
    c = layer.bn.gamma.shape[0]
    layer.bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    layer.bn.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
    layer.bn.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
    layer.bn.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))


@pytest.mark.parametrize("depthwise", [False, True])
def test_folded_inference_equals_convolution_then_batchnorm(depthwise):
    rng = np.random.default_rng(0)
    layer = ConvBNAct(8, kernel_size=3, strides=2, depthwise=depthwise)
    x = rng.random((2, 9, 9, 8), dtype=np.float32)
    layer.build(x.shape)
    _trained_statistics(layer, rng)
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    unfolded = keras.ops.relu(layer.bn(layer.conv(padded), training=False))
    folded = layer(x, training=False)
    assert tuple(folded.shape) == (2, 5, 5, 8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded), keras.ops.convert_to_numpy(unfolded),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depthwise", [False, True])
def test_folded_inference_under_mixed_precision(depthwise):
    # float32 variables, bfloat16 computation: the folded kernel is cast to it.
    rng = np.random.default_rng(1)
    x = rng.random((2, 8, 8, 8), dtype=np.float32)
    reference = ConvBNAct(8, depthwise=depthwise)
    reference.build(x.shape)
    _trained_statistics(reference, rng)
    mixed = ConvBNAct(8, depthwise=depthwise, dtype="mixed_bfloat16")
    mixed.build(x.shape)
    mixed.set_weights(reference.get_weights())
    got = mixed(x, training=False)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    want = keras.ops.convert_to_numpy(reference(x, training=False))
    got = keras.ops.convert_to_numpy(keras.ops.cast(got, "float32"))
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("strides", [1, 2])
def test_training_convolution_equals_the_keras_layer(depthwise, strides):
    # Training runs Keras' convolution layer, or for a depthwise one
    # `fast_path.depthwise_conv` on its kernel (on JAX's CPU backend a sum of
    # shifted copies): the same outputs, batch statistics included.
    rng = np.random.default_rng(2)
    layer = ConvBNAct(8, kernel_size=3, strides=strides, depthwise=depthwise, use_bias=True)
    x = rng.random((2, 9, 9, 8), dtype=np.float32)
    layer.build(x.shape)
    layer.conv.bias.assign(rng.normal(size=(8,)).astype("float32"))
    conv_input = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]) if strides > 1 else x
    expected = keras.ops.relu(layer.bn(layer.conv(conv_input), training=True))
    got = layer(x, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-5)


def test_depthwise_training_under_mixed_precision_computes_in_its_dtype():
    # As the README says to: the global policy, which the inner layers follow.
    x = np.random.default_rng(3).random((2, 8, 8, 8), dtype=np.float32)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = ConvBNAct(8, depthwise=True, use_bias=True)
        out = layer(x, training=True)
        expected = layer.bn(layer.conv(x), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    want = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.relu(expected), "float32"))
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
