"""The one backend-specific piece: compiled inference on varying batch sizes."""

import keras
import numpy as np
import pytest

from adaptive_zoo import fast_path


def test_bucket_sizes_are_few_and_tight():
    assert [fast_path.bucket_size(n) for n in (1, 2, 3, 7, 9, 16)] == [1, 2, 4, 8, 16, 16]
    for n in range(17, 600):
        b = fast_path.bucket_size(n)
        assert n <= b <= n * 1.125 + 1
    assert len({fast_path.bucket_size(n) for n in range(17, 65)}) <= 16  # 8 per doubling


def test_compiled_function_matches_eager_for_every_batch_size():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    fn = fast_path.compile_inference(lambda x: keras.ops.relu(layer(x)), layer.variables)
    rng = np.random.default_rng(0)
    for n in (1, 5, 17, 40):
        x = rng.random((n, 4), dtype=np.float32)
        out = keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x)))
        assert out.shape == (n, 3)
        np.testing.assert_allclose(out, keras.ops.convert_to_numpy(keras.ops.relu(layer(x))), atol=1e-6)
    # New weights are seen (no stale constants baked in).
    layer.kernel.assign(np.zeros((4, 3), "float32"))
    layer.bias.assign(np.ones((3,), "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fn(keras.ops.ones((2, 4)))), 1.0)


def test_gathering_runs_only_on_the_selected_rows():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    seen = []

    def fn(x):
        seen.append(int(x.shape[0]) if x.shape[0] is not None else None)
        return layer(x)

    fn_compiled = fast_path.compile_inference(fn, layer.variables, gather=True)
    x = np.random.default_rng(1).random((20, 4), dtype=np.float32)
    for rows in ([3], [0, 5, 19], list(range(0, 20, 2))):
        indices = keras.ops.convert_to_tensor(np.asarray(rows, "int32"))
        out = keras.ops.convert_to_numpy(fn_compiled(indices, keras.ops.convert_to_tensor(x)))
        assert out.shape == (len(rows), 3)
        np.testing.assert_allclose(out, keras.ops.convert_to_numpy(layer(x[rows])), atol=1e-6)
    # The function never saw the whole batch (traced with an unknown or a
    # bucketed batch size, or run eagerly on the rows).
    assert 20 not in seen


def test_gathering_every_row_in_order_skips_the_copy_but_not_a_reordering():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    fn_compiled = fast_path.compile_inference(lambda x: layer(x), layer.variables, gather=True)
    x = np.random.default_rng(4).random((8, 4), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))
    assert fast_path.is_every_row(np.arange(8, dtype="int32"), [x])
    for rows in (np.arange(8), np.arange(8)[::-1], np.asarray([0, 1, 2, 3, 4, 5, 7, 6])):
        assert fast_path.is_every_row(rows.astype("int32"), [x]) == (rows == np.arange(8)).all()
        for run in (fn_compiled, fast_path.gathering(layer)):
            out = keras.ops.convert_to_numpy(run(rows.astype("int32"), keras.ops.convert_to_tensor(x)))
            np.testing.assert_allclose(out, expected[rows], atol=1e-6)


def test_take_rows_gathers_the_given_rows_in_order():
    x = np.arange(5 * 2 * 3, dtype="float32").reshape(5, 2, 3)
    rows = np.array([4, 0, 2, 2], dtype="int32")
    taken = fast_path.take_rows(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(rows))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(taken), x[rows])


def test_concatenated_rows_pools_rows_of_several_batches_in_order():
    rng = np.random.default_rng(5)
    a = rng.random((5, 2, 3), dtype=np.float32)
    b = rng.random((4, 2, 3), dtype=np.float32)
    for rows_a, rows_b in ((np.array([4, 1, 1]), np.array([0, 3])), (np.arange(5), np.arange(4))):
        expected = np.concatenate([a[rows_a], b[rows_b]])
        for convert in (np.asarray, keras.ops.convert_to_tensor):  # JAX's CPU stages hold NumPy
            out = fast_path.concatenated_rows([(convert(a), rows_a), (convert(b), rows_b)])
            assert isinstance(out, np.ndarray) == (convert is np.asarray)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)


def test_compiled_accumulation_adds_onto_the_selected_rows_only():
    layer = keras.layers.Dense(4)
    layer.build((None, 4))
    acc = fast_path.compile_accumulating(layer, layer.variables, then=lambda t: t - 1.0)
    rng = np.random.default_rng(2)
    x = rng.random((20, 4), dtype=np.float32)
    out = rng.random((20, 4), dtype=np.float32)
    dense = keras.ops.convert_to_numpy(layer(x))
    xt = keras.ops.convert_to_tensor(x)
    # All rows, onto the inputs themselves (the identity of a residual block).
    total = keras.ops.convert_to_numpy(acc(xt, xt))
    np.testing.assert_allclose(total, x + dense, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(xt), x)  # inputs untouched
    for rows in ([3], [0, 5, 19], list(range(0, 20, 2))):
        expected = out.copy()
        expected[rows] += dense[rows]
        index = keras.ops.convert_to_tensor(np.asarray(rows, "int32"))
        result = acc(keras.ops.convert_to_tensor(out), xt, index)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(result), expected, atol=1e-6)
        # The last sub-block's call also applies `then` (the activation).
        result = acc(keras.ops.convert_to_tensor(out), xt, index, last=True)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(result), expected - 1.0, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(acc(xt, xt, last=True)), x + dense - 1.0,
                               atol=1e-6)


def test_jax_accumulation_in_two_halves_adds_in_place():
    if keras.backend.backend() != "jax":
        pytest.skip("the two halves are JAX's (its buffers can be donated)")
    layer = keras.layers.Dense(4)
    layer.build((None, 4))
    acc = fast_path.compile_accumulating(layer, layer.variables, then=lambda t: t - 1.0)
    rng = np.random.default_rng(3)
    x = rng.random((20, 4), dtype=np.float32)
    dense = keras.ops.convert_to_numpy(layer(x))
    rows = np.asarray([0, 5, 19], "int32")
    xt = keras.ops.convert_to_tensor(x)
    results = acc.rows(xt, rows)
    out = acc.add_rows(xt, results, rows, last=True)
    expected = x.copy()
    expected[rows] += dense[rows]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected - 1.0, atol=1e-6)
    assert xt.is_deleted()  # the inputs' buffer was reused, not copied


def test_conv2d_pads_like_pytorch_and_adds_the_bias():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 9, 8, 5)).astype("float32")
    for k, strides, padding in ((3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (7, 2, 3)):
        kernel = rng.normal(size=(k, k, 5, 4)).astype("float32")
        bias = rng.normal(size=(4,)).astype("float32")
        padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        expected = keras.ops.convert_to_numpy(
            keras.ops.conv(padded, kernel, strides=strides, padding="valid")
        ) + bias
        out = fast_path.conv2d(*(keras.ops.convert_to_tensor(a) for a in (x, kernel, bias)),
                               strides=strides, padding=padding)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)


def test_banded_conv_equals_the_convolution():
    # The banded matrix product that conv2d uses on JAX's CPU backend for
    # few channels, checked on every backend against Keras' convolution:
    # tiles that do and do not divide the width, wider than the output, and
    # other kernel sizes and paddings.
    rng = np.random.default_rng(5)
    for h, w, c_in, c_out, k, padding in ((9, 8, 5, 4, 3, 1), (7, 5, 3, 16, 3, 1), (8, 8, 2, 3, 5, 2),
                                          (6, 11, 4, 4, 3, 0), (4, 4, 6, 6, 3, 1)):
        x = rng.normal(size=(2, h, w, c_in)).astype("float32")
        kernel = rng.normal(size=(k, k, c_in, c_out)).astype("float32")
        padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        expected = keras.ops.convert_to_numpy(keras.ops.conv(padded, kernel, padding="valid"))
        for tile in (1, 3, 8):
            out = fast_path.banded_conv(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(kernel),
                                        padding, tile=tile)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_takes_the_banded_product_only_where_it_was_measured_faster():
    on_jax_cpu = fast_path._jax_on_cpu()
    few = np.zeros((3, 3, 6, 6), "float32")
    assert fast_path._banded_pays(few, 1, False) == on_jax_cpu
    assert not fast_path._banded_pays(few, 2, False)  # stride 2: XLA's own is faster
    assert fast_path._banded_pays(np.zeros((3, 3, 3, 16), "float32"), 1, False) == on_jax_cpu
    # RGB to 17-47 channels: the zero fourth channel and XLA's convolution.
    assert not fast_path._banded_pays(np.zeros((3, 3, 3, 32), "float32"), 1, False)
    assert not fast_path._banded_pays(np.zeros((3, 3, 24, 12), "float32"), 1, False)
    assert not fast_path._banded_pays(np.zeros((3, 3, 8, 8), "float32"), 1, False)  # XLA's is fast
    assert not fast_path._banded_pays(np.zeros((3, 3, 6, 1), "float32"), 1, True)
    assert not fast_path._banded_pays(np.zeros((1, 1, 6, 6), "float32"), 1, False)


def test_conv2d_of_rgb_to_few_channels_equals_the_convolution():
    # On JAX's CPU backend these get a zero fourth input channel; the sum is
    # the same.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 15, 13, 3)).astype("float32")
    for k, strides, c_out in ((7, 2, 32), (3, 1, 24), (3, 2, 17), (3, 1, 16)):
        kernel = rng.normal(size=(k, k, 3, c_out)).astype("float32")
        bias = rng.normal(size=(c_out,)).astype("float32")
        p = k // 2
        padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        expected = keras.ops.convert_to_numpy(
            keras.ops.conv(padded, kernel, strides=strides, padding="valid")) + bias
        out = fast_path.conv2d(*(keras.ops.convert_to_tensor(a) for a in (x, kernel, bias)),
                               strides=strides, padding=p)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_pads_rgb_to_four_channels_only_where_it_was_measured_faster():
    on_jax_cpu = fast_path._jax_on_cpu()
    assert fast_path._fourth_channel_pays(np.zeros((7, 7, 3, 32), "float32"), False) == on_jax_cpu
    assert fast_path._fourth_channel_pays(np.zeros((3, 3, 3, 24), "float32"), False) == on_jax_cpu
    assert not fast_path._fourth_channel_pays(np.zeros((7, 7, 3, 16), "float32"), False)
    assert not fast_path._fourth_channel_pays(np.zeros((7, 7, 3, 64), "float32"), False)
    assert not fast_path._fourth_channel_pays(np.zeros((3, 3, 4, 32), "float32"), False)
    assert not fast_path._fourth_channel_pays(np.zeros((3, 3, 3, 1), "float32"), True)


def test_depthwise_as_shifted_sum_equals_the_depthwise_convolution():
    # What conv2d computes for a depthwise convolution on JAX's CPU backend,
    # checked on every backend against Keras' own: odd and even sizes,
    # strides 1 and 2, 3x3 and 5x5, with and without padding, and through
    # conv2d with its bias.
    rng = np.random.default_rng(8)
    for h, w, c, k, strides, padding in ((8, 8, 6, 3, 1, 1), (9, 7, 5, 3, 2, 1), (8, 10, 4, 5, 2, 2),
                                         (7, 7, 3, 5, 1, 2), (6, 5, 2, 3, 1, 0)):
        x = rng.normal(size=(2, h, w, c)).astype("float32")
        kernel = rng.normal(size=(k, k, c, 1)).astype("float32")
        bias = rng.normal(size=(c,)).astype("float32")
        padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        expected = keras.ops.convert_to_numpy(
            keras.ops.depthwise_conv(padded, kernel, strides=strides, padding="valid"))
        x_t, kernel_t, bias_t = (keras.ops.convert_to_tensor(a) for a in (x, kernel, bias))
        out = fast_path.depthwise_as_shifted_sum(x_t, kernel_t, strides, padding)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)
        out = fast_path.conv2d(x_t, kernel_t, bias_t, strides=strides, padding=padding, depthwise=True)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected + bias, rtol=1e-5, atol=1e-5)


def test_depthwise_conv_avoids_xla_grouped_convolution_on_jax_cpu():
    if not fast_path._jax_on_cpu():
        pytest.skip("JAX on the CPU only")
    import jax

    x, kernel = np.ones((1, 6, 6, 4), "float32"), np.ones((3, 3, 4, 1), "float32")
    for strides in (1, 2):
        program = str(jax.make_jaxpr(lambda x, k, s=strides: fast_path.depthwise_conv(x, k, s, 1))(x, kernel))
        assert "conv_general_dilated" not in program
    # conv2d's depthwise case goes through it; a dense one stays an XLA convolution.
    program = str(jax.make_jaxpr(
        lambda x, k: fast_path.conv2d(x, k, np.zeros(4, "float32"), 2, 1, True))(x, kernel))
    assert "conv_general_dilated" not in program
    dense = np.ones((3, 3, 4, 16), "float32")
    program = str(jax.make_jaxpr(
        lambda x, k: fast_path.conv2d(x, k, np.zeros(16, "float32"), 2, 1))(x, dense))
    assert "conv_general_dilated" in program


def _max_pool_reference(x, size, strides, padding):
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                    constant_values=-np.inf)
    h = (x.shape[1] + 2 * padding - size) // strides + 1
    w = (x.shape[2] + 2 * padding - size) // strides + 1
    out = np.full((x.shape[0], h, w, x.shape[3]), -np.inf, x.dtype)
    for dy in range(size):
        for dx in range(size):
            out = np.maximum(out, padded[:, dy:dy + strides * h:strides, dx:dx + strides * w:strides])
    return out


def test_max_pool_pads_like_pytorch():
    # Padded cells never win, also where every input is negative (a zero
    # padding would have).
    rng = np.random.default_rng(7)
    for shape, size, strides, padding in (((2, 9, 8, 3), 3, 2, 1), ((1, 6, 6, 2), 3, 2, 1),
                                          ((2, 7, 5, 4), 2, 2, 0), ((1, 5, 5, 1), 3, 1, 1)):
        x = rng.normal(size=shape).astype("float32") - 5.0
        out = fast_path.max_pool(keras.ops.convert_to_tensor(x), size, strides, padding)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out),
                                      _max_pool_reference(x, size, strides, padding))


def test_max_pool_trains_and_keeps_the_dtype():
    x = keras.ops.convert_to_tensor(np.arange(2 * 6 * 6 * 3, dtype="float32").reshape(2, 6, 6, 3))
    out = fast_path.max_pool(keras.ops.cast(x, "float16"), 3, 2, 1)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    layer = keras.layers.Lambda(lambda t: fast_path.max_pool(t, 3, 2, 1))
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(2, 1), layer,
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    before = [keras.ops.convert_to_numpy(w) for w in model.layers[0].weights]
    model.fit(x, np.ones((2, 1), "float32"), epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in model.layers[0].weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_conv2d_of_no_images_has_the_output_shape():
    # TensorFlow's CPU convolution returns the input's shape for an empty
    # batch, and the bias then failed to add.
    x = keras.ops.zeros((0, 9, 8, 5))
    for k, strides, padding, depthwise, shape in ((3, 1, 1, False, (0, 9, 8, 4)),
                                                  (3, 2, 1, False, (0, 5, 4, 4)),
                                                  (1, 1, 0, False, (0, 9, 8, 4)),
                                                  (3, 2, 1, True, (0, 5, 4, 5))):
        kernel = keras.ops.zeros((k, k, 5, 1 if depthwise else 4))
        bias = keras.ops.zeros((shape[-1],))
        out = fast_path.conv2d(x, kernel, bias, strides=strides, padding=padding,
                               depthwise=depthwise)
        assert tuple(out.shape) == shape


def test_conv2d_of_a_channel_slice():
    # RANet reads a block's narrower features as the first channels of the
    # widest (a strided view on PyTorch, where a 1x1 convolution of it is a
    # matrix product on the view's rows).
    rng = np.random.default_rng(4)
    wide = keras.ops.convert_to_tensor(rng.normal(size=(2, 5, 6, 9)).astype("float32"))
    narrow = wide[..., :5]
    for k, strides, padding in ((1, 1, 0), (1, 2, 0), (3, 1, 1)):
        kernel = keras.ops.convert_to_tensor(rng.normal(size=(k, k, 5, 4)).astype("float32"))
        bias = keras.ops.convert_to_tensor(rng.normal(size=(4,)).astype("float32"))
        expected = fast_path.conv2d(keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(narrow)),
                                    kernel, bias, strides=strides, padding=padding)
        out = fast_path.conv2d(narrow, kernel, bias, strides=strides, padding=padding)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                                   keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    if keras.backend.backend() == "torch":
        assert fast_path._pointwise_on_view(narrow, kernel[:1, :1], 1, 0, False)


def test_concatenate_channels_equals_keras_concatenate():
    rng = np.random.default_rng(3)
    parts = [keras.ops.convert_to_tensor(rng.normal(size=(2, 3, 4, c)).astype("float32"))
             for c in (5, 1, 2)]
    expected = np.concatenate([keras.ops.convert_to_numpy(p) for p in parts], axis=-1)
    outputs = [fast_path.concatenate_channels(parts)]
    if keras.backend.backend() == "torch":  # the preallocated path runs without gradients
        import torch

        with torch.no_grad():
            outputs.append(fast_path.concatenate_channels(parts))
    for out in outputs:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), expected)


def test_concatenating_onto_a_reserved_result_fills_it_in_place():
    # A dense block grows one feature map layer by layer; with `reserve`,
    # PyTorch inference writes each new part once into spare channels.
    rng = np.random.default_rng(5)
    part = lambda c: keras.ops.convert_to_tensor(  # noqa: E731
        rng.normal(size=(2, 3, 4, c)).astype("float32"))
    numpy = keras.ops.convert_to_numpy
    stem, a, b, c = part(4), part(2), part(3), part(2)

    def grow():
        first = fast_path.concatenate_channels([stem, a], reserve=5)
        second = fast_path.concatenate_channels([first, b], reserve=2)
        third = fast_path.concatenate_channels([second, c])
        again = fast_path.concatenate_channels([first, c])  # an older prefix: copied
        # The prefix that filled the buffer, extended again: copied too (the
        # buffer is full, and its last channels are `third`'s).
        other = fast_path.concatenate_channels([second, b[..., :2]])
        return first, second, third, again, other

    def check(first, second, third, again, other):
        np.testing.assert_array_equal(numpy(first), np.concatenate([numpy(stem), numpy(a)], -1))
        np.testing.assert_array_equal(numpy(second), np.concatenate([numpy(first), numpy(b)], -1))
        np.testing.assert_array_equal(numpy(third), np.concatenate([numpy(second), numpy(c)], -1))
        np.testing.assert_array_equal(numpy(again), np.concatenate([numpy(first), numpy(c)], -1))
        np.testing.assert_array_equal(numpy(other),
                                      np.concatenate([numpy(second), numpy(b)[..., :2]], -1))

    check(*grow())
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            first, second, third, again, other = grow()
        check(first, second, third, again, other)
        assert other.data_ptr() != first.data_ptr()
        # One buffer: the second and third results are wider views of it.
        assert second.data_ptr() == first.data_ptr() == third.data_ptr()
        assert third.is_contiguous() and not second.is_contiguous()
        assert again.data_ptr() != first.data_ptr()


def test_activate_fresh_equals_the_activation():
    x = np.linspace(-3.0, 9.0, 24, dtype="float32").reshape(2, 3, 4, 1)
    for activation, expected in ((None, x), ("relu", np.maximum(x, 0)), ("relu6", np.clip(x, 0, 6))):
        fresh = keras.ops.convert_to_tensor(x.copy())
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(fast_path.activate_fresh(fresh, activation)), expected)
    if keras.backend.backend() == "torch":
        import torch

        fresh = torch.tensor(x)
        with torch.no_grad():
            assert fast_path.activate_fresh(fresh, "relu") is fresh  # in place
        kept = torch.tensor(x, requires_grad=True) * 1.0
        out = fast_path.activate_fresh(kept, "relu")  # with gradients: a new tensor
        out.sum().backward()
        np.testing.assert_array_equal(kept.detach().numpy(), x)


def test_native_resize_keeps_the_dtype():
    x = keras.ops.ones((1, 3, 3, 2), dtype="bfloat16")
    out = fast_path.resize_bilinear_aligned(x, (5, 4))
    if keras.backend.backend() == "jax":
        assert out is None  # the einsum of layers.resize_bilinear_aligned runs there
        return
    assert tuple(out.shape) == (1, 5, 4, 2)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), 1.0)


def test_inference_kernel_keeps_the_values_and_convolves_the_same():
    import contextlib

    rng = np.random.default_rng(5)
    x = keras.ops.convert_to_tensor(rng.normal(size=(2, 6, 6, 5)).astype("float32"))
    bias = keras.ops.convert_to_tensor(rng.normal(size=(4,)).astype("float32"))
    no_grad = contextlib.nullcontext()
    if keras.backend.backend() == "torch":
        import torch

        no_grad = torch.no_grad()
    with no_grad:
        for k, strides, padding in ((3, 1, 1), (3, 2, 1), (1, 1, 0)):
            kernel = keras.ops.convert_to_tensor(rng.normal(size=(k, k, 5, 4)).astype("float32"))
            laid = fast_path.inference_kernel(kernel)
            assert tuple(laid.shape) == (k, k, 5, 4)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(laid),
                                          keras.ops.convert_to_numpy(kernel))
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(fast_path.conv2d(x, laid, bias, strides, padding)),
                keras.ops.convert_to_numpy(fast_path.conv2d(x, kernel, bias, strides, padding)),
                rtol=1e-5, atol=1e-5)
            if keras.backend.backend() == "torch":
                # The (C_out, C_in, k, k) view conv2d passes on: channels-last memory.
                assert laid.permute(3, 2, 0, 1).is_contiguous(memory_format=torch.channels_last)
            else:
                assert laid is kernel
        depthwise = keras.ops.ones((3, 3, 5, 1))  # measured no faster laid out: kept
        assert fast_path.inference_kernel(depthwise, depthwise=True) is depthwise
    if keras.backend.backend() == "torch":  # with gradients recorded: untouched
        assert fast_path.inference_kernel(kernel) is kernel


def test_memoized_recomputes_after_the_weights_change():
    layer = keras.layers.Dense(2)
    layer.build((None, 2))
    calls = []

    def double(kernel):
        calls.append(1)
        return kernel * 2.0

    owner = keras.layers.Layer()
    first = keras.ops.convert_to_numpy(fast_path.memoized(owner, double, [layer.kernel]))
    np.testing.assert_allclose(first, 2.0 * keras.ops.convert_to_numpy(layer.kernel))
    layer.kernel.assign(np.ones((2, 2), "float32"))
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            fast_path.memoized(owner, double, [layer.kernel])
            n = len(calls)
            fast_path.memoized(owner, double, [layer.kernel])
            assert len(calls) == n  # reused while the weights are unchanged
            layer.kernel.assign(np.full((2, 2), 3.0, "float32"))
            again = fast_path.memoized(owner, double, [layer.kernel])
    else:
        again = fast_path.memoized(owner, double, [layer.kernel])
        layer.kernel.assign(np.full((2, 2), 3.0, "float32"))
        again = fast_path.memoized(owner, double, [layer.kernel])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again), 6.0)


def test_compile_dynamic_holds_value_dependent_shapes_or_declines():
    def positives_doubled(x):
        kept = keras.ops.take(x, keras.ops.nonzero(x > 0)[0], axis=0)
        return keras.ops.sum(kept * 2.0)

    fn = fast_path.compile_dynamic(positives_doubled, [])
    if keras.backend.backend() != "tensorflow":
        assert fn is None  # the caller compiles static pieces instead
        return
    for values in ([1.0, -2.0, 3.0], [-1.0], [4.0, 5.0]):
        x = keras.ops.convert_to_tensor(np.asarray(values, "float32"))
        expected = 2.0 * sum(v for v in values if v > 0)
        assert float(keras.ops.convert_to_numpy(fn(x))) == expected


def test_direct_calls_only_for_explicit_torch_inference_without_gradients():
    from adaptive_zoo.layers.conv_bn import ConvBNAct

    layer = ConvBNAct(4, 3)
    x = keras.ops.ones((2, 5, 5, 3))
    layer(x)  # builds
    if keras.backend.backend() != "torch":
        assert not fast_path.may_call_directly(layer, (x,), {"training": False})
        return
    import torch

    with torch.no_grad():
        assert fast_path.may_call_directly(layer, (x,), {"training": False})
        assert not fast_path.may_call_directly(layer, (x,), {})  # training unknown
        assert not fast_path.may_call_directly(layer, (x,), {"training": True})
        assert not fast_path.may_call_directly(layer, (np.ones((2, 5, 5, 3)),), {"training": False})
        # Lists of tensors (MSDNet's scales), nested too; a NumPy array or
        # nothing anywhere among them goes through Keras.
        inference = {"training": False}
        assert fast_path.may_call_directly(layer, ([x, x],), inference)
        assert fast_path.may_call_directly(layer, ([x, (x, [x])],), inference)
        assert not fast_path.may_call_directly(layer, ([x, np.ones(2)],), inference)
        assert not fast_path.may_call_directly(layer, ([x, [np.ones(2)]],), inference)
        assert not fast_path.may_call_directly(layer, ([],), inference)
        assert not fast_path.may_call_directly(layer, (), inference)
        # None for a scale nothing reads (a sample that leaves at an exit),
        # but not None alone.
        assert fast_path.may_call_directly(layer, ([None, x, x],), inference)
        assert fast_path.may_call_directly(layer, ([None, (x, None)],), inference)
        assert not fast_path.may_call_directly(layer, ([None, None],), inference)
        assert not fast_path.may_call_directly(layer, ([None, np.ones(2)],), inference)
        direct = layer(x, training=False)
    assert not fast_path.may_call_directly(layer, (x,), {"training": False})  # gradients on
    np.testing.assert_allclose(keras.ops.convert_to_numpy(direct),
                               keras.ops.convert_to_numpy(layer(x, training=False)), atol=1e-6)


class _CountedDense(keras.layers.Dense):
    calls_through_keras = 0

    def __call__(self, *args, **kwargs):
        type(self).calls_through_keras += 1
        return super().__call__(*args, **kwargs)


def test_call_layer_runs_keras_layers_directly_for_torch_inference_only():
    # The exits' and gates' Dense layers: at batch 1 Keras' `__call__` cost
    # more than the matrix product (MSDNet CIFAR's stages 10.1 -> 7.3 ms).
    layer = _CountedDense(3)
    x = keras.ops.ones((2, 4))
    expected = keras.ops.convert_to_numpy(layer(x))
    _CountedDense.calls_through_keras = 0

    def run(**kwargs):
        if keras.backend.backend() != "torch":
            return fast_path.call_layer(layer, x, **kwargs)
        import torch

        with torch.no_grad():
            return fast_path.call_layer(layer, x, **kwargs)

    for kwargs, through_keras in (({"training": False}, keras.backend.backend() != "torch"),
                                  ({}, True), ({"training": None}, True)):
        before = _CountedDense.calls_through_keras
        out = run(**kwargs)
        assert _CountedDense.calls_through_keras - before == int(through_keras), kwargs
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-6)
    if keras.backend.backend() == "torch":
        # Keras' quantized layers compute in `quantized_call`, from `__call__`.
        assert getattr(layer, "quantization_mode", None) is None
        layer.quantize("int8", type_check=False)
        before = _CountedDense.calls_through_keras
        run(training=False)
        assert _CountedDense.calls_through_keras - before == 1


_ALLOCATOR_PROBE = """
import ctypes, sys, threading
import numpy as np
import adaptive_zoo

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mmapped_for(nbytes):
    base = libc.mallinfo2().hblkhd
    a = np.ones(nbytes // 4, np.float32)
    grew = libc.mallinfo2().hblkhd - base
    del a
    return grew

def mmapped_on_a_new_thread(nbytes):
    grew = []
    worker = threading.Thread(target=lambda: grew.append(mmapped_for(nbytes)))
    worker.start()
    worker.join()
    return grew[0]

before = mmapped_for(64 << 20)
applied = adaptive_zoo.tune_cpu_allocator()
after = mmapped_for(64 << 20)
# A thread's own arena holds at most 64 MiB: 80 MiB there would be mmapped.
on_thread = mmapped_on_a_new_thread(80 << 20)
# Row-wise JAX programs are no longer split below the new threshold.
from adaptive_zoo import fast_path
print(fast_path._cpu_call_bytes == 256 << 20)
print(before >= 64 << 20, applied, after == 0, on_thread == 0)
"""


def test_tune_cpu_allocator_keeps_large_buffers_in_the_heap():
    import ctypes
    import subprocess
    import sys

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    # In a child process: the setting is process-wide.
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True,
                         text=True, check=True).stdout.split()
    # A 64 MiB buffer gets its own pages by default, and comes from the heap
    # after, as does an 80 MiB one allocated on a thread started after.
    assert out[-5:] == ["True"] * 5
    for bad in (0, 2**31, "big", 1.5e8):  # "big" failed inside int(), 1.5e8 was truncated
        with pytest.raises(ValueError, match=r"thresholds are whole bytes in \(0, 2\*\*31\)"):
            fast_path.tune_cpu_allocator(mmap_threshold=bad)


def _conv_net(channels=3):
    from adaptive_zoo.layers.conv_bn import ConvBNAct

    net = keras.Sequential([ConvBNAct(8, 3), ConvBNAct(8, 3, depthwise=True), ConvBNAct(4, 1)])
    net.build((None, 8, 8, channels))
    rng = np.random.default_rng(4)
    for v in net.weights:  # moving statistics too: not the initial ones
        value = rng.normal(size=v.shape).astype("float32") * 0.3
        v.assign(np.abs(value) + 0.5 if "variance" in v.path else value)
    return net


@pytest.fixture
def splits(monkeypatch):
    """On JAX's CPU backend, every buffer counts as large (the allocator's
    limit at 1 KiB), and this list gets the number of calls of each program
    run in row chunks; elsewhere it stays empty."""
    calls = []
    if fast_path._jax_on_cpu():
        chunked = fast_path._jax_in_row_chunks

        def spy(pure, n, *args):
            calls.append(n)
            return chunked(pure, n, *args)

        monkeypatch.setattr(fast_path, "_jax_in_row_chunks", spy)
        monkeypatch.setattr(fast_path, "_cpu_call_bytes", 1024)
    return calls


def test_rowwise_programs_with_large_buffers_run_in_row_chunks(splits):
    """On JAX's CPU backend a row-wise program whose temporary buffers pass
    the allocator's limit runs in several calls on consecutive rows, with
    the same outputs; elsewhere `rowwise` changes nothing."""
    net = _conv_net()

    def fn(x):
        return net(x, training=False)

    x = np.random.default_rng(0).random((24, 8, 8, 3), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(fn(x))
    whole = fast_path.compile_inference(fn, net.weights, rowwise=True)
    some = fast_path.compile_inference(fn, net.weights, rowwise=True, gather=True)
    for out in (whole(keras.ops.convert_to_tensor(x)), some(np.arange(24, dtype="int32"), x)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    rows = np.array([3, 1, 7, 20, 0, 5, 9, 11, 2, 13, 17], "int32")  # 11 rows, padded to 16
    np.testing.assert_allclose(keras.ops.convert_to_numpy(some(rows, x)), expected[rows],
                               rtol=1e-5, atol=1e-5)
    if fast_path._jax_on_cpu():
        # 24 rows, and 11 padded to 16: two calls (at least 8 rows in each).
        assert splits == [2, 2]
        # Not row-wise (e.g. a top-k across the batch): never split.
        splits.clear()
        fast_path.compile_inference(fn, net.weights)(x)
        assert splits == []


def test_accumulating_runs_in_row_chunks(splits):
    """A sub-block's sum on every row (DMNN at a full budget) and its results
    on some rows (`acc.rows`, over the rows' index) are row-wise too: on
    JAX's CPU backend in row chunks where their buffers are large, with the
    same sums, onto the inputs or onto a running sum."""
    net = _conv_net(channels=4)
    x = np.random.default_rng(1).random((16, 8, 8, 4), dtype=np.float32)
    dense = keras.ops.convert_to_numpy(net(x, training=False))
    acc = fast_path.compile_accumulating(lambda t: net(t, training=False), net.weights,
                                         then=lambda t: t - 1.0)
    xt = keras.ops.convert_to_tensor(x)
    once = acc(xt, xt)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(once), x + dense, rtol=1e-5, atol=1e-5)
    twice = acc(once, xt, last=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(twice), x + 2 * dense - 1.0,
                               rtol=1e-5, atol=1e-5)
    if fast_path._jax_on_cpu():
        assert splits == [2, 2]  # 16 rows, at least 8 per call
        index = np.array([3, 1, 7, 12, 0, 5, 9, 11, 2, 13, 15], "int32")  # padded to 16
        results = acc.rows(xt, index)
        np.testing.assert_allclose(np.asarray(results)[:11], dense[index], rtol=1e-5, atol=1e-5)
        assert splits == [2, 2, 2]
        summed = acc.add_rows(xt + 0.0, results, index, last=True)
        expected = x - 1.0
        expected[index] += dense[index]
        np.testing.assert_allclose(np.asarray(summed), expected, rtol=1e-5, atol=1e-5)


def test_rows_per_call_halves_until_the_buffers_fit(monkeypatch):
    if not fast_path._jax_on_cpu():
        pytest.skip("JAX's CPU backend only")
    import jax

    def two_layers(values, x):  # the hidden layer is a temporary buffer
        return keras.ops.matmul(keras.ops.relu(keras.ops.matmul(x, values[0])), values[0])

    jitted = jax.jit(two_layers)
    values = [np.ones((64, 64), "float32")]
    x = np.ones((96, 64), "float32")
    temp = jitted.lower(values, x).compile().memory_analysis().temp_size_in_bytes
    assert temp > 0
    monkeypatch.setattr(fast_path, "_cpu_call_bytes", temp)  # fits: one call
    assert fast_path.rows_per_call(jitted, values, (x,)) == 1
    monkeypatch.setattr(fast_path, "_cpu_call_bytes", temp // 2)  # to a quarter of temp
    assert fast_path.rows_per_call(jitted, values, (x,)) == 4
    monkeypatch.setattr(fast_path, "_cpu_call_bytes", 1)  # at least 8 rows per call
    assert fast_path.rows_per_call(jitted, values, (x,)) == 8
    assert fast_path.rows_per_call(jitted, values, (x[:24],)) == 2  # 24 = 3 * 8: not 4 calls
    # Where the outputs are images larger than 32x32, fewer per call,
    # as many pixels as 8 of 32x32: 2 of 64x64, 1 of 128x128 (a 224x224
    # DMNN-50's first block needs 55 MiB of buffers for 8 images); not where
    # an output has a vector per image (a whole network: its last layers
    # have few pixels).
    images = np.ones((16, 64, 64, 64), "float32")
    assert fast_path.rows_per_call(jitted, values, (images,)) == 8
    assert fast_path.rows_per_call(jitted, values, (images[:, :32, :32],)) == 2
    assert fast_path.rows_per_call(jitted, values, (np.ones((4, 128, 128, 64), "float32"),)) == 4

    def with_pooled(values, x):
        y = two_layers(values, x)
        return y, keras.ops.mean(y, axis=(1, 2))

    assert fast_path.rows_per_call(jax.jit(with_pooled), values, (images,)) == 2
