"""The one backend-specific piece: compiled inference on varying batch sizes."""

import keras
import numpy as np

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
