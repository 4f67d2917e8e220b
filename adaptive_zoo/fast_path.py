"""The one backend-specific piece: compiling an inference function whose batch
size changes from call to call (the survivors of an early exit).

- TensorFlow: `tf.function` with relaxed shapes (one trace serves every batch).
- JAX: `jax.jit` on the variables' values (Keras' stateless scope), with the
  batch padded up to a few bucket sizes so that only a handful of shapes are
  ever compiled. Padding wastes at most 1/8 of a stage's work.
- PyTorch: eager, under `torch.no_grad()`, with denormals flushed to zero.

Plus one backend-native primitive, `scatter_add_rows` (the scatter-add of the
gated sub-blocks' results), where `keras.ops` is slower than the dense path.

Everything else in the package uses `keras.ops`.
"""

import keras
from keras import tree

__all__ = ["bucket_size", "compile_inference", "scatter_add_rows"]


def bucket_size(n):
    """The padded batch size compiled for `n` samples.

    Up to 16: the next power of two (few programs for the small remainders,
    whose compute is negligible). Above: the smallest `m * 2**e >= n` with
    `8 <= m < 16`, at most 8 sizes per doubling, each at most 12.5% larger.
    """
    if n <= 16:
        return 1 << max(n - 1, 0).bit_length()
    e = n.bit_length() - 4
    m = -(-n // (1 << e))  # ceil
    return m << e


def compile_inference(fn, variables, bucket=None):
    """Compile `fn(*tensors)` for inference on the current backend.

    Args:
        fn: a function of tensors with a leading batch axis, returning a
            (nested) structure of such tensors. It may read `variables`.
        variables: every Keras variable that `fn` reads.
        bucket: JAX only: the padded batch size for a batch of `n`
            (default `bucket_size`).

    Returns:
        A callable with the same signature, compiled where the backend allows
        it; a batch of size 0 returns `fn`'s outputs with no compute.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, jit_compile=False)
    if backend == "jax":
        return _jax_bucketed(fn, list(variables), bucket or bucket_size)
    if backend == "torch":
        import torch

        # Flush denormals to zero, as TensorFlow and XLA do on CPU: without it
        # we measured stages of a CIFAR MSDNet 7-20x slower on PyTorch's CPU
        # kernels. (A process-wide setting; it only affects numbers < 1e-38.)
        torch.set_flush_denormal(True)

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    return fn


def _jax_bucketed(fn, variables, bucket=bucket_size):
    import jax
    import jax.numpy as jnp

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(pure)

    def run(*args):
        n = tree.flatten(args)[0].shape[0]
        size = bucket(n)
        if size != n:
            pad = lambda a: jnp.pad(a, [(0, size - n)] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
            args = tree.map_structure(pad, args)
        outputs = jitted([v.value for v in variables], *args)
        if size != n:
            outputs = tree.map_structure(lambda a: a[:n], outputs)
        return outputs

    return run


def scatter_add_rows(target, indices, updates):
    """`target[indices] += updates` along the batch axis, out of place.

    Each backend's native scatter-add: `tf.tensor_scatter_nd_add`, JAX's
    `.at[].add`, `torch.index_add`. (`keras.ops.segment_sum` followed by an
    add was measured 2.4x slower than the dense path on torch.)

    Args:
        target: `(batch, ...)` tensor.
        indices: `(k,)` integer row indices into `target` (distinct).
        updates: `(k, ...)` rows to add.

    Returns:
        A new tensor shaped like `target`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        indices = tf.cast(tf.reshape(indices, (-1, 1)), "int32")
        return tf.tensor_scatter_nd_add(target, indices, tf.cast(updates, target.dtype))
    if backend == "jax":
        return target.at[indices].add(updates.astype(target.dtype))
    if backend == "torch":
        import torch

        return torch.index_add(target, 0, indices.to(torch.long), updates.to(target.dtype))
    raise NotImplementedError(f"No scatter-add for the {backend} backend.")
