"""The multi-scale layers (`adaptive_zoo.layers.multi_scale_dense`) on their
own: the public exit `MultiScaleDenseExit`, RANet's blocks and its bilinear
resizing with aligned corners. The MSD layers, stems and transitions are
tested inside the networks they build (tests/test_msdnet.py, tests/test_ranet.py),
against the authors' outputs."""

import keras
import numpy as np
import pytest

import adaptive_zoo
from adaptive_zoo.layers.multi_scale_dense import (
    RANetBlock,
    RANetFusionBlock,
    aligned_interpolation_matrix,
    resize_bilinear_aligned,
)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- #
# MultiScaleDenseExit.
# --------------------------------------------------------------------------- #
def test_layers_serialize():
    head = adaptive_zoo.MultiScaleDenseExit(num_classes=5, width=8)
    x = np.random.default_rng(0).random((2, 8, 8, 4), dtype=np.float32)
    y = head([x])
    clone = adaptive_zoo.MultiScaleDenseExit.from_config(head.get_config())
    clone.build([x.shape])
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone([x])), keras.ops.convert_to_numpy(y),
                               atol=1e-6)
    assert tuple(y.shape) == (2, 5)


def test_exit_takes_one_scale_or_a_list_and_names_bad_input():
    x = np.random.default_rng(0).random((2, 8, 8, 4), dtype=np.float32)
    head = adaptive_zoo.MultiScaleDenseExit(num_classes=5, width=8)
    # Built on one tensor (not in a list), it failed with "'int' object is not subscriptable".
    alone = keras.ops.convert_to_numpy(head(x))
    listed = keras.ops.convert_to_numpy(head([None, x]))  # the scales nothing reads may be None
    np.testing.assert_allclose(alone, listed, atol=1e-6)
    with pytest.raises(ValueError, match=r"coarsest scale \(batch, H, W, C\).*got shape \(2, 4\)"):
        adaptive_zoo.MultiScaleDenseExit(num_classes=5)(x[:, 0, 0])
    for kwargs, message in [({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
                            ({"num_classes": 5, "width": 0}, "width must be a positive integer, got 0")]:
        with pytest.raises(ValueError, match=message):
            adaptive_zoo.MultiScaleDenseExit(**kwargs)


# --------------------------------------------------------------------------- #
# Bilinear resizing with corner alignment.
# --------------------------------------------------------------------------- #
def _reference_resize(x, h_out, w_out):
    """PyTorch's align_corners=True bilinear rule, pixel by pixel, NHWC."""
    n, h_in, w_in, c = x.shape
    out = np.zeros((n, h_out, w_out, c), dtype=np.float64)

    def source(i, size_in, size_out):
        pos = i * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        low = min(int(np.floor(pos)), size_in - 1)
        high = min(low + 1, size_in - 1)
        return low, high, pos - low

    for i in range(h_out):
        y0, y1, fy = source(i, h_in, h_out)
        for j in range(w_out):
            x0, x1, fx = source(j, w_in, w_out)
            out[:, i, j] = ((1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x1]
                            + fy * (1 - fx) * x[:, y1, x0] + fy * fx * x[:, y1, x1])
    return out


SIZES = [((4, 4), (8, 8)), ((8, 8), (16, 16)), ((7, 7), (14, 14)), ((16, 16), (8, 8)),
         ((5, 3), (3, 7)), ((1, 1), (4, 4)), ((4, 6), (1, 2)), ((8, 8), (8, 8))]


@pytest.mark.parametrize("size_in,size_out", SIZES)
def test_resize_matches_pytorch_formula(size_in, size_out):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + size_in + (3,)).astype("float32")
    ours = _numpy(resize_bilinear_aligned(keras.ops.convert_to_tensor(x), size_out))
    np.testing.assert_allclose(ours, _reference_resize(x.astype(np.float64), *size_out),
                               rtol=1e-5, atol=1e-5)


def test_interpolation_matrix():
    np.testing.assert_allclose(aligned_interpolation_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]])
    for n_in, n_out in [(3, 8), (8, 3), (1, 5), (5, 1)]:
        m = aligned_interpolation_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(aligned_interpolation_matrix(6, 6), np.eye(6))


@pytest.mark.parametrize("size_in,size_out", SIZES)
def test_resize_matches_torch_interpolate(size_in, size_out):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2,) + size_in + (3,)).astype("float32")
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()), size=size_out, mode="bilinear",
        align_corners=True,
    ).numpy()
    ours = _numpy(resize_bilinear_aligned(keras.ops.convert_to_tensor(x), size_out))
    np.testing.assert_allclose(ours, np.transpose(theirs, (0, 2, 3, 1)), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- #
# RANet's blocks.
# --------------------------------------------------------------------------- #
def test_fusion_block_shapes_and_flops():
    low = RANetBlock(2, growth_rate=8, bn_factor=2, name="low")
    low_out = low(keras.ops.ones((2, 4, 4, 8)))
    block = RANetFusionBlock(2, growth_rate=4, bn_factor=1, low_bn_factor=2, down=True,
                             transition=True, name="fusion")
    inputs = [keras.ops.ones((2, 8, 8, 6))] + low_out[1:]
    outputs = block(inputs)
    expected = block.compute_output_shape([tuple(t.shape) for t in inputs])
    assert [tuple(o.shape) for o in outputs] == [tuple(e) for e in expected]
    # Down: the last layer halves the resolution; dense 6 + 2 * 4 = 14 channels,
    # plus floor(14 / 4) = 3 fused, then the transition keeps floor(17 / 2).
    assert tuple(outputs[0].shape) == (2, 4, 4, 8)
    assert tuple(outputs[-1].shape) == (2, 4, 4, 14)
    assert block.flops([tuple(t.shape) for t in inputs]) > 0
    config = block.get_config()
    assert RANetFusionBlock.from_config(config).get_config() == config


@pytest.mark.parametrize("down", [False, True])
def test_block_features_are_channel_prefixes(down):
    # The early-exit state keeps only the widest of a block's features of one
    # resolution and reads the others as its first channels
    # (RANet._plan_kept_state): that is exact only if each feature is the first
    # channels of the next one of the same size.
    rng = np.random.default_rng(3)
    low = RANetBlock(2, growth_rate=8, bn_factor=2, name="low")
    low_out = low(rng.normal(size=(2, 4, 4, 8)).astype("float32"))
    block = RANetFusionBlock(2, growth_rate=4, bn_factor=1, low_bn_factor=2, down=down,
                             transition=False, name="fusion")
    fused = block([rng.normal(size=(2, 8, 8, 6)).astype("float32")] + low_out[1:])
    resolutions = []
    for features in (low_out[1:], fused[1:]):
        for narrow, wide in zip(features, features[1:]):
            if tuple(narrow.shape[1:3]) == tuple(wide.shape[1:3]):
                np.testing.assert_array_equal(_numpy(narrow),
                                              _numpy(wide)[..., : narrow.shape[-1]])
        resolutions.append(len({tuple(f.shape[1:3]) for f in features}))
    assert resolutions == [1, 2 if down else 1]
