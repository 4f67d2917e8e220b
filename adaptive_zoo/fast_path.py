"""The one backend-specific piece: compiling an inference function whose batch
size changes from call to call (the survivors of an early exit).

- TensorFlow: `tf.function` traced once for any batch size.
  The survivors' rows are gathered inside the graph.
- JAX: `jax.jit` on the variables' values (Keras' stateless scope), with the
  batch padded up to a few bucket sizes so that only a handful of shapes are
  ever compiled. Padding wastes at most 1/8 of a stage's work. On JAX's CPU
  backend a gathering function gathers, pads and un-pads its rows in NumPy
  (eager JAX ops compile once per shape, and survivors come in many counts),
  and a row-wise function whose program needs large buffers runs a batch in
  row chunks (`rows_per_call`).
- PyTorch: eager, under `torch.no_grad()`, with denormals flushed to zero.

For the gated sub-blocks of DMNN, `compile_accumulating` compiles "add this
sub-block's output onto these rows" as one piece (on JAX: gather, sub-block
and scatter-add in one program).

Plus backend-native primitives where `keras.ops` measured slow:
`scatter_add_rows` (the scatter-add of the gated sub-blocks' results), on
TensorFlow `take_rows` (an eager gather of rows), `conv2d` (the inference
convolution: on PyTorch without layout copies, on JAX's CPU backend 1x1
convolutions as matrix products), `max_pool` (PyTorch's padded max-pool
without a padded copy), `resize_bilinear_aligned` (TensorFlow's and
PyTorch's own corner-aligned resize), `concatenate_channels` (on PyTorch
in inference, into one preallocated output with room for the channels that
later layers add) and `activate_fresh` (on PyTorch in inference, the
activation of a convolution's output in place). The gathering functions skip
the gather when every row stays, in order.

Everything else in the package uses `keras.ops`. Outside any backend,
`tune_cpu_allocator` is an opt-in setting of glibc's `malloc` for CPU
inference (large buffers kept in the heap); the package never calls it.
"""

import weakref

import keras
import numpy as np
from keras import ops
from keras import tree

from adaptive_zoo.checks import is_whole_number

__all__ = [
    "accumulating",
    "activate_fresh",
    "banded_conv",
    "bucket_size",
    "call_layer",
    "compile_accumulating",
    "compile_dynamic",
    "graphs_hold_dynamic_shapes",
    "compile_inference",
    "concatenated_rows",
    "conv2d",
    "depthwise_as_shifted_sum",
    "depthwise_conv",
    "gathering",
    "is_every_row",
    "is_traced",
    "max_pool",
    "may_call_directly",
    "memoized",
    "rows_per_call",
    "scatter_add_rows",
    "take_rows",
    "tune_cpu_allocator",
]


def bucket_size(n, per_doubling=8):
    """The padded batch size compiled for `n` samples.

    Up to `2 * per_doubling` (a power of two): the next power of two (few
    programs for the small remainders, whose compute is negligible). Above:
    the smallest `m * 2**e >= n` with `per_doubling <= m < 2 * per_doubling`,
    at most `per_doubling` sizes per doubling, each at most
    `1 / per_doubling` larger (12.5% by default).
    """
    if n <= 2 * per_doubling:
        return 1 << max(n - 1, 0).bit_length()
    e = n.bit_length() - per_doubling.bit_length()
    m = -(-n // (1 << e))  # ceil
    return m << e


def is_traced(x):
    """True for a tensor being traced (`jax.jit`, `tf.function`), whose
    values are not at hand, rather than a value."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.is_symbolic_tensor(x)
    return False


def gathering(fn):
    """`fn` applied to the rows `indices` of each of its tensors.

    Args:
        fn: a function of tensors with a leading batch axis.

    Returns:
        `run(indices, *tensors) == fn(*(take_rows(t, indices) ...))`.
    """

    def run(indices, *tensors):
        if is_every_row(indices, tensors):
            return fn(*tensors)
        return fn(*[take_rows(t, indices) for t in tensors])

    return run


def is_every_row(indices, tensors):
    """Whether NumPy `indices` select every row of `tensors` in order (no
    sample has left): then a gather would only copy the tensors, which the
    gathering functions skip. False for tensor indices (inside a graph)."""
    if not isinstance(indices, np.ndarray) or not tensors:
        return False
    n = tensors[0].shape[0]
    return indices.shape[0] == n and np.array_equal(indices, np.arange(n))


def compile_inference(fn, variables, bucket=None, gather=False, rowwise=False):
    """Compile `fn(*tensors)` for inference on the current backend.

    Args:
        fn: a function of tensors with a leading batch axis, returning a
            (nested) structure of such tensors. It may read `variables`.
        variables: every Keras variable that `fn` reads.
        bucket: JAX only: the padded batch size for a batch of `n`
            (default `bucket_size`).
        gather: if True, the compiled callable takes `(indices, *tensors)`
            and runs `fn` on those rows only (as `gathering(fn)`): inside the
            graph on TensorFlow, eagerly and padded to a bucket on JAX. On
            JAX's CPU backend the rows are gathered and the outputs un-padded
            in NumPy, and the outputs are NumPy arrays: eager JAX ops would
            compile once per row count (the README's main job compiled 477
            eager gathers, slices and concatenations without this).
        rowwise: whether each output row depends on the same input row
            only (a network's layers in inference; not a rule that ranks the
            images of a batch). On JAX's CPU backend a large batch of such a
            function may then run in a few calls on consecutive rows (see
            `rows_per_call`).

    Returns:
        A callable with the same signature (plus `indices` first if
        `gather`), compiled where the backend allows it.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        # JAX gathers outside the compiled program, padding to a bucket.
        return _jax_bucketed(fn, list(variables), bucket or bucket_size, gather, rowwise)
    inner = gathering(fn) if gather else fn
    if backend == "tensorflow":
        if not gather:
            return _tf_any_batch(fn)
        some_rows, every_row = _tf_any_batch(inner), _tf_any_batch(fn)
        return lambda indices, *tensors: (
            every_row(*tensors) if is_every_row(indices, tensors) else some_rows(indices, *tensors))
    if backend == "torch":
        import torch

        # Flush denormals to zero, as TensorFlow and XLA do on CPU: without it
        # we measured stages of a CIFAR MSDNet 7-20x slower on PyTorch's CPU
        # kernels. (A process-wide setting; it only affects numbers < 1e-38.)
        torch.set_flush_denormal(True)

        def run(*args):
            with torch.no_grad():
                return inner(*args)

        return run
    return inner


def accumulating(fn, then=None, take=None, add=None):
    """`fn`'s output added onto a running sum, for all rows or some.

    Args:
        fn: a function of one tensor with a leading batch axis, returning a
            tensor shaped like the running sum's rows.
        then: optional function applied to the sum when the call is marked
            `last` (e.g. the block's activation).
        take, add: the row gather `take(x, index)` and the scatter-add
            `add(out, index, rows)` (default `take_rows`, `scatter_add_rows`).

    Returns:
        `acc(out, inputs, index=None, last=False)`: `out + fn(inputs)`, or,
        with `index`, `out` with `fn(inputs[index])` added to the rows
        `index`; then `then` of it if `last`.
    """
    take = take or take_rows
    add = add or scatter_add_rows

    def acc(out, inputs, index=None, last=False):
        if index is None:
            out = out + fn(inputs)
        else:
            out = add(out, index, fn(take(inputs, index)))
        return then(out) if last and then is not None else out

    return acc


def compile_accumulating(fn, variables, then=None, bucket=None):
    """`accumulating(fn, then)` compiled for inference on the current backend.

    On JAX each case is one `jax.jit` program (the sum, or the gather, `fn`
    and the scatter-add; with `then` or without), with `index` padded to a
    bucket by out-of-range rows whose results the scatter drops; the running
    sum's buffer is reused (donated) when it is not `inputs`. The JAX `acc`
    also has the two halves, `acc.rows(inputs, index)` (`fn` of those rows)
    and `acc.add_rows(out, rows, index, last=False)` (added onto `out`'s
    buffer in place, then `then`), for a caller that may overwrite `inputs`
    (`SubBlockBranch.skip`). On the CPU the sum on every row, and `rows`
    (over its index), run in row chunks where their buffers are large
    (`rows_per_call`). Elsewhere `accumulating` of `compile_inference(fn)`.

    Args:
        fn, then: as in `accumulating`.
        variables: every Keras variable that `fn` reads.
        bucket: JAX only: the padded size for `n` rows (default
            `bucket_size`).

    Returns:
        `acc(out, inputs, index=None, last=False)` as in `accumulating`.
    """
    if keras.backend.backend() != "jax":
        return accumulating(compile_inference(fn, variables), then)
    return _jax_accumulating(fn, list(variables), then, bucket or bucket_size)


def _jax_accumulating(fn, variables, then, bucket):
    import jax
    import jax.numpy as jnp

    def apply(values, x):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(x)

    # Padded indices are out of range: clipped when gathering, dropped when
    # adding.
    def take(x, index):
        return jnp.take(x, index, axis=0, mode="clip")

    def add(out, index, rows):
        return out.at[index].add(rows.astype(out.dtype), mode="drop")

    def program(last):
        def run(values, out, inputs, index=None):
            body = accumulating(lambda x: apply(values, x), then, take, add)
            return body(out, inputs, index, last)

        return run

    programs = {}
    chunks = {}  # the every-row sum and `rows` in row chunks (`_run_row_wise`)
    on_cpu = _jax_on_cpu()

    def padded(index, size):
        # Padded in NumPy: an eager JAX pad would compile once per row count.
        index = np.asarray(index, "int32")
        n = index.shape[0]
        return np.pad(index, (0, bucket(n) - n), constant_values=size)

    # The same in two steps, for adding onto a buffer that may be
    # overwritten: `rows` computes `fn` on the rows `index` (padded), and
    # `add_rows` adds them onto `out` in place (donated).
    def rows_of(values, index, x):  # row-wise in `index`
        return apply(values, take(x, index))

    def rows(inputs, index):
        if "rows" not in programs:
            programs["rows"] = jax.jit(rows_of)
        values, index = [v.value for v in variables], padded(index, inputs.shape[0])
        if on_cpu:  # in chunks of the index where its buffers are large
            return _run_row_wise(chunks, programs["rows"], rows_of, values, (index, inputs),
                                 "rows", whole=1)
        return programs["rows"](values, index, inputs)

    def add_rows(out, results, index, last=False):
        key = ("add", bool(last))
        if key not in programs:
            def run(out, results, index, last=bool(last)):
                out = add(out, index, results)
                return then(out) if last and then is not None else out

            programs[key] = jax.jit(run, donate_argnums=(0,))
        return programs[key](out, results, padded(index, out.shape[0]))

    def acc(out, inputs, index=None, last=False):
        donate = out is not inputs
        key = (index is not None, bool(last), donate)
        if key not in programs:
            programs[key] = jax.jit(program(key[1]), donate_argnums=(1,) if donate else ())
        values = [v.value for v in variables]
        if index is None:
            # The sum on every row is row-wise: in row chunks where its
            # buffers are large (as `compile_inference(..., rowwise=True)`).
            if on_cpu:
                return _run_row_wise(chunks, programs[key], program(key[1]), values,
                                     (out, inputs), key)
            return programs[key](values, out, inputs)
        return programs[key](values, out, inputs, padded(index, out.shape[0]))

    acc.rows, acc.add_rows = rows, add_rows
    return acc


def graphs_hold_dynamic_shapes():
    """Whether the backend's compiled graphs hold shapes that depend on
    values (gathers of the samples a gate or an exit selects): TensorFlow's
    do; XLA (JAX) needs static shapes, and PyTorch runs eagerly."""
    return keras.backend.backend() == "tensorflow"


def compile_dynamic(fn, variables):
    """Compile a whole inference function whose intermediate shapes depend on
    values (gathers of the samples a gate selects), where the backend can.

    TensorFlow graphs hold such shapes: one `tf.function` runs the whole
    function with no Python between its pieces. XLA (JAX) needs static
    shapes and PyTorch runs eagerly anyway: there this returns `None`, and
    the caller compiles the pieces instead (`compile_inference`).

    Args:
        fn: a function of tensors.
        variables: every Keras variable that `fn` reads.

    Returns:
        The compiled callable, or `None`.
    """
    del variables  # tf.function reads the variables as they are at each call
    return _tf_any_batch(fn) if graphs_hold_dynamic_shapes() else None


def _tf_any_batch(fn):
    """`tf.function(fn)` traced once, at the first call, for any batch size:
    the signature is the first call's tensors with the batch axis unknown.
    (Relaxing shapes on retracing would trace twice and warn in loops.)"""
    import tensorflow as tf

    compiled = None

    def run(*args):
        nonlocal compiled
        if compiled is None:
            signature = [tf.TensorSpec((None,) + tuple(a.shape[1:]), a.dtype) for a in args]
            compiled = tf.function(fn, input_signature=signature, jit_compile=False)
        return compiled(*args)

    return run


def _jax_bucketed(fn, variables, bucket=bucket_size, gather=False, rowwise=False):
    import jax
    import jax.numpy as jnp

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(pure)
    split = rowwise and _jax_on_cpu()
    chunks = {}  # see `_run_row_wise`

    def pad(a, size):
        return jnp.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))

    on_host = gather and _jax_on_cpu()

    def run(*args):
        if gather:
            # Gathering with padded indices pads the rows in the same op. The
            # indices are padded in NumPy: an eager JAX pad would compile once
            # per row count.
            indices, tensors = np.asarray(args[0], "int32"), args[1:]
            n = indices.shape[0]
            size = bucket(n)
            every = size == n and is_every_row(indices, tensors)
            indices = np.pad(indices, (0, size - n))
            if every:  # no gather: it would only copy
                args = tensors
            elif on_host:  # CPU buffers: NumPy reads them in place
                args = [np.asarray(t)[indices] for t in tensors]
            else:
                args = [jnp.take(t, indices, axis=0) for t in tensors]
        else:
            n = tree.flatten(args)[0].shape[0]
            size = bucket(n)
            if size != n:
                args = tree.map_structure(lambda a: pad(a, size), args)
        values = [v.value for v in variables]
        if split:
            outputs = _run_row_wise(chunks, jitted, pure, values, args)
        else:
            outputs = jitted(values, *args)
        if on_host:
            return tree.map_structure(lambda a: np.asarray(a)[:n], outputs)
        if size != n:
            outputs = tree.map_structure(lambda a: a[:n], outputs)
        return outputs

    return run


# Above this many bytes, glibc's `malloc` serves a buffer with fresh pages at
# every call (its mmap threshold rises to at most 32 MiB by default); see
# `rows_per_call`. `tune_cpu_allocator` raises it to its own threshold.
_cpu_call_bytes = 32 << 20
# Fewer rows per call cost XLA's convolutions more than the page faults: the
# dense DMNN-50 CIFAR (279 MiB of buffers at batch 64) took 291 ms in one call,
# 314 ms in 32 calls of 2 images (one-off timing). A program whose outputs
# are all larger images than 32x32 may take fewer, down to the pixels of 8
# images of 32x32: a DMNN-50 at 224x224, whose first block needs 55 MiB for
# 8 images, took 1666 ms instead of 1820 at b = 0.5 (one-off timing,
# `docs/speed_log.md`).
_MIN_ROWS_PER_CALL = 8
_MIN_PIXELS_PER_CALL = 8 * 32 * 32


def rows_per_call(jitted, values, args):
    """How many calls a batch of a row-wise JAX CPU program should take: 1 if
    the program's temporary buffers (XLA's `memory_analysis`) fit in
    `_cpu_call_bytes`, else the smallest power of two that divides the batch
    and brings them (linear in the batch) to at most half of that, with at
    least `_MIN_ROWS_PER_CALL` rows per call, or fewer where every output is
    an image larger than 32x32 (`_least_rows_per_call`).

    XLA allocates a program's intermediate buffers as one block per call.
    Above glibc's mmap threshold (32 MiB at most by default) that block is
    fresh pages from the kernel at every call, page-faulted in as the program
    writes them; a worker thread's own arena, whose heaps hold at most 64 MiB,
    also fails to reuse blocks near that size. One-off timings
    (`docs/speed_log.md`), batch 64: a DMNN-MobileNetV2 block with 75 MiB of
    buffers took 21.9 ms and 19,226 page faults per call, 16.9 ms and as many
    faults in two calls, 6.7-7.2 ms and none in four or eight; a block with
    27 MiB, no faults, 1.7 ms in one call and 2.3 ms in two.

    Args:
        jitted: the `jax.jit` function, called as `jitted(values, *args)`.
        values, args: its arguments (the first of `args` has the leading
            batch axis that the calls split).

    Returns:
        The number of calls, each on `batch / calls` consecutive rows.
    """
    lowered = jitted.lower(values, *args)
    temp = lowered.compile().memory_analysis().temp_size_in_bytes
    batch = tree.flatten(args)[0].shape[0]
    calls = 1
    if temp > _cpu_call_bytes:
        least = _least_rows_per_call([a.shape for a in tree.flatten(lowered.out_info)])
        while (temp / calls > _cpu_call_bytes / 2 and batch % (2 * calls) == 0
               and batch // (2 * calls) >= least):
            calls *= 2
    return calls


def _least_rows_per_call(shapes):
    """The fewest rows that a call in row chunks may take (`rows_per_call`),
    given the shapes `(batch, spatial axes..., channels)` of its outputs:
    the smallest must hold `_MIN_PIXELS_PER_CALL` pixels. (A program's
    outputs are its last, smallest layers; one with a vector per row, such
    as a whole network's logits, takes the full `_MIN_ROWS_PER_CALL`.)"""
    pixels = min(int(np.prod(s[1:-1])) if len(s) > 2 else 1 for s in shapes)
    return max(1, min(_MIN_ROWS_PER_CALL, -(-_MIN_PIXELS_PER_CALL // pixels)))


def _run_row_wise(cache, jitted, pure, values, args, key=(), whole=0):
    """`jitted(values, *args)` (row-wise in all `args` but the last `whole`;
    `jitted` is `jax.jit(pure)`, or a donating one), in row chunks where
    `rows_per_call` says so. The calls per shape of `args` (and `key`) and
    the chunked programs are found once and kept in `cache`."""
    signature = ("calls", key) + tuple((a.shape, str(a.dtype)) for a in tree.flatten(args))
    if signature not in cache:
        cache[signature] = rows_per_call(jitted, values, args)
    calls = cache[signature]
    if calls == 1:
        return jitted(values, *args)
    if ("program", key, calls) not in cache:
        cache["program", key, calls] = _jax_in_row_chunks(pure, calls, whole)
    return cache["program", key, calls](values, *args)


def _jax_in_row_chunks(pure, calls, whole=0):
    """`pure(values, *args)` (row-wise) as `calls` jitted calls on
    consecutive rows of `args` (all but the last `whole`, which every call
    takes whole), each writing its rows into one output buffer in place
    (donated): no slices of the inputs, no concatenation.

    Returns:
        `run(values, *args)`, the same outputs as `pure`.
    """
    import jax
    import jax.numpy as jnp

    def rows_of(args, start):
        split, rest = args[:len(args) - whole], args[len(args) - whole:]
        size = tree.flatten(split)[0].shape[0] // calls
        split = tree.map_structure(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), split)
        return tuple(split) + tuple(rest)

    def first(values, *args):
        batch = tree.flatten(args)[0].shape[0]
        y = pure(values, *rows_of(args, 0))
        return tree.map_structure(
            lambda r: jnp.zeros((batch,) + r.shape[1:], r.dtype).at[:r.shape[0]].set(r), y)

    def later(out, start, values, *args):
        y = pure(values, *rows_of(args, start))
        return tree.map_structure(
            lambda o, r: jax.lax.dynamic_update_slice_in_dim(o, r, start, 0), out, y)

    first, later = jax.jit(first), jax.jit(later, donate_argnums=(0,))

    def run(values, *args):
        args = tree.map_structure(jnp.asarray, args)  # once, not per call
        rows = tree.flatten(args)[0].shape[0] // calls
        out = first(values, *args)
        for start in range(rows, rows * calls, rows):
            out = later(out, np.int32(start), values, *args)
        return out

    return run


def take_rows(x, indices):
    """`x[indices]` along the batch axis, for non-negative `indices`: the
    row gather of this module (`gathering`, `accumulating`, and the survivors
    pooled between stages, which gather eagerly).

    On TensorFlow, native `tf.gather`: `keras.ops.take` first maps negative
    indices with extra ops, which eagerly cost about 0.8 ms per call here.
    Elsewhere `keras.ops.take`.

    A NumPy array is gathered in NumPy (on JAX's CPU backend the early-exit
    pipeline holds its survivors as NumPy arrays; see `compile_inference`).

    Args:
        x: a tensor (or NumPy array) with a leading batch axis.
        indices: int32 row indices, each in `[0, len(x))`.

    Returns:
        `(len(indices),) + x.shape[1:]`.
    """
    if isinstance(x, np.ndarray):
        return x[np.asarray(indices)]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, indices, axis=0)
    return ops.take(x, indices, axis=0)


def concatenated_rows(parts):
    """`concatenate([x[rows] for x, rows in parts])` along the batch axis:
    the samples of several batches pooled for one stage call.

    On PyTorch and for NumPy arrays each part's rows are gathered straight
    into one preallocated output: one copy instead of a gather and then a
    concatenation. Elsewhere `take_rows` (skipped for a part whose rows are
    all of it, in order), then `keras.ops.concatenate`.

    Args:
        parts: `(x, rows)` pairs: tensors (or NumPy arrays) with the same
            trailing shape, and int row indices of each, in `[0, len(x))`.

    Returns:
        `(sum of len(rows),) + x.shape[1:]`.
    """
    first = parts[0][0]
    total = sum(len(rows) for _, rows in parts)
    if isinstance(first, np.ndarray):
        out = np.empty((total,) + first.shape[1:], first.dtype)
        start = 0
        for x, rows in parts:
            # "clip" (the rows are in range) writes into `out` unbuffered.
            np.take(x, rows, axis=0, out=out[start:start + len(rows)], mode="clip")
            start += len(rows)
        return out
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            out = first.new_empty((total,) + tuple(first.shape[1:]))
            start = 0
            for x, rows in parts:
                index = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=x.device)
                torch.index_select(x, 0, index, out=out[start:start + len(rows)])
                start += len(rows)
        return out
    gathered = [
        x if is_every_row(np.asarray(rows), [x]) else take_rows(x, np.asarray(rows, "int32"))
        for x, rows in parts
    ]
    return ops.concatenate(gathered, axis=0)


def scatter_add_rows(target, indices, updates):
    """`target[indices] += updates` along the batch axis, out of place.

    JAX's `.at[].add` and `torch.index_add`, each backend's native
    scatter-add (`keras.ops.segment_sum` followed by an add was measured
    2.4x slower than the dense path on torch). On TensorFlow a gather and an
    add instead: each row of `target` takes its update or a zero row.
    `tf.tensor_scatter_nd_add` cost about 3 ms per call on a (64, 32, 32,
    128) activation on our 2-core CPU: the 24 gated sub-blocks of the
    benchmark's DMNN-50 at budget 1.0 took 246-256 ms per batch of 64 with
    it and 206-215 ms with the gather (interleaved one-off timings of the
    whole skipping graph, the dense network 174-180 ms).

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

        indices = tf.cast(tf.reshape(indices, (-1,)), "int32")
        count = tf.size(indices)
        # Row r of target takes update position[r]; rows not in indices the
        # zero row appended after the updates (position = count).
        position = tf.tensor_scatter_nd_update(
            tf.fill(tf.shape(target)[:1], count), indices[:, None], tf.range(count))
        padded = tf.concat([tf.cast(updates, target.dtype), tf.zeros_like(target[:1])], 0)
        return target + tf.gather(padded, position)
    if backend == "jax":
        return target.at[indices].add(updates.astype(target.dtype))
    if backend == "torch":
        import torch

        return torch.index_add(target, 0, indices.to(torch.long), updates.to(target.dtype))
    raise NotImplementedError(f"No scatter-add for the {backend} backend.")


def conv2d(inputs, kernel, bias, strides=1, padding=0, depthwise=False):
    """2-D convolution of NHWC `inputs` with PyTorch's symmetric zero padding,
    plus a per-channel bias: the inference convolution of `ConvBNAct`.

    On PyTorch, native `conv2d` on a channels-last view of the input, with
    its own padding and bias: no copies (a 1x1 stride-1 convolution of a
    non-contiguous input, a channel slice, is a matrix product on its rows).
    `keras.ops.conv` there copies the input twice per call (to NCHW, then to
    channels-last memory) and pads separately; the seven stages of a CIFAR
    MSDNet took 500 ms per batch of 64 with it and 208 ms with this. On
    JAX's CPU backend, a 1x1 stride-1 convolution is a matrix product over
    the channels (`ops.matmul`): XLA's CPU convolution measured about twice
    as slow for the narrow 1x1 bottlenecks of MSDNet (e.g. 34 -> 6 channels
    at 32x32, batch 64: 3.3 ms against 1.3 ms), and the seven stages of a
    CIFAR MSDNet went from about 300 to 190-225 ms per batch of 64; a
    stride-1 convolution of few channels (`C_in * C_out <= 96`, e.g. MSDNet
    CIFAR's 3x3 convolutions of 6 to 6 channels at 32x32) is a banded matrix
    product (`banded_conv`, about twice as fast as XLA's there); an RGB
    input convolved to 17-47 channels (MSDNet ImageNet's 7x7 stem to 32) gets
    a fourth, zero input channel (`_fourth_channel_pays`); and a depthwise
    convolution is a sum of shifted copies (`depthwise_conv`, 10-50 times
    faster than XLA's grouped convolution there). Elsewhere
    `keras.ops` (a native TensorFlow version measured no faster; TensorFlow
    and PyTorch measured no gain from the matrix product), with `"same"`
    padding at stride 1 (equal to the symmetric padding for odd kernels,
    without a padded copy).

    Args:
        inputs: `(batch, H, W, C_in)`.
        kernel: `(k, k, C_in, C_out)` (Keras' layout), or `(k, k, C, 1)` if
            `depthwise`.
        bias: `(C_out,)`.
        strides: int.
        padding: zero rows/columns added on every side.
        depthwise: one filter per input channel.

    Returns:
        `(batch, H', W', C_out)`.
    """
    if keras.backend.backend() == "torch":
        import torch.nn.functional as F

        if _pointwise_on_view(inputs, kernel, strides, padding, depthwise):
            import torch

            # A matrix product reads the strided rows as they are; conv2d
            # would first copy them into a channels-last tensor (4.6 against
            # 2.3 ms for 96 of 160 channels, 64x32x32, 1x1 to 24 channels).
            rows = inputs.flatten(0, 2)
            w = kernel[0, 0]
            y = torch.mm(rows, w) if bias is None else torch.addmm(bias, rows, w)
            return y.view(*inputs.shape[:3], w.shape[1])
        x = inputs.permute(0, 3, 1, 2)  # a channels-last NCHW view, no copy
        w = kernel.permute(*_TORCH_WEIGHT_ORDER[bool(depthwise)])
        groups = kernel.shape[2] if depthwise else 1
        y = F.conv2d(x, w, bias, stride=strides, padding=padding, groups=groups)
        return y.permute(0, 2, 3, 1)
    if keras.backend.backend() == "tensorflow" and inputs.shape[0] == 0:
        return _empty_conv(inputs, kernel, strides, padding, depthwise)
    if _pointwise_as_matmul(kernel, strides, depthwise):
        return ops.matmul(inputs, ops.reshape(kernel, kernel.shape[2:])) + bias
    if _banded_pays(kernel, strides, depthwise):
        return banded_conv(inputs, kernel, padding) + bias
    if depthwise:
        return depthwise_conv(inputs, kernel, strides, padding) + bias
    if _fourth_channel_pays(kernel, depthwise):
        inputs = ops.pad(inputs, ((0, 0), (0, 0), (0, 0), (0, 1)))
        kernel = ops.pad(kernel, ((0, 0), (0, 0), (0, 1), (0, 0)))
    inputs, mode = _symmetric_padding(inputs, kernel.shape[0], strides, padding)
    return ops.conv(inputs, kernel, strides=strides, padding=mode) + bias


# PyTorch's `(C_out, C_in / groups, k, k)` weight from Keras' kernel
# `(k, k, C_in, C_out)` (depthwise: `(k, k, C, 1)`), keyed by `depthwise`.
_TORCH_WEIGHT_ORDER = {False: (3, 2, 0, 1), True: (2, 3, 0, 1)}


def inference_kernel(kernel, depthwise=False):
    """A convolution kernel `(k, k, C_in, C_out)` laid out in memory the way
    `conv2d` reads it fastest, for a kernel kept between calls (BatchNorm
    folded in, `fast_path.memoized`).

    On PyTorch with gradients off, a copy whose `(C_out, C_in, k, k)` view
    (the weight `conv2d` hands to `torch.nn.functional.conv2d`) is
    channels-last contiguous, the input's own layout: oneDNN then prepares
    the weights faster at every call than from Keras' `(k, k, C_in, C_out)`
    memory. One-off CPU timings (2026-12-07; not measured on a GPU): MSDNet
    CIFAR's 3x3 and 1x1 convolutions 5-25% faster at batches of 2-16 images
    and 3-8% at 64, its seven stages alone 10-20% faster at batch 1-16 and
    about 6% at batch 64. Same values; the shape and indexing are unchanged.

    Elsewhere, and for depthwise kernels, `kernel` itself: laid out the same
    way, a depthwise kernel made DMNN-MobileNetV2's skipping path no faster
    on PyTorch (b = 0.5: 95.0-100.9 against 87.9-94.6 ms in three
    alternating pairs; some of its depthwise convolutions at batch 64 were
    slower).

    Args:
        kernel: `(k, k, C_in, C_out)`, or `(k, k, C, 1)` if `depthwise`.
        depthwise: one filter per input channel.

    Returns:
        A kernel of the same shape and values.
    """
    if depthwise or keras.backend.backend() != "torch":
        return kernel
    import torch

    if torch.is_grad_enabled() or not isinstance(kernel, torch.Tensor):
        return kernel
    order = _TORCH_WEIGHT_ORDER[False]
    weight = kernel.permute(*order).contiguous(memory_format=torch.channels_last)
    return weight.permute(*np.argsort(order).tolist())


def _symmetric_padding(inputs, k, strides, padding):
    """`(inputs, mode)` for a `keras.ops` convolution of a `k`x`k` kernel
    with PyTorch's `padding` on every side: `"same"` at stride 1 where it
    pads the same (an odd kernel), without a padded copy; else the input
    padded, and `"valid"`."""
    if strides == 1 and 2 * padding == k - 1:
        return inputs, "same"
    if padding:
        inputs = ops.pad(inputs, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    return inputs, "valid"


def depthwise_conv(inputs, kernel, strides=1, padding=0):
    """Depthwise convolution of NHWC `inputs` with PyTorch's symmetric zero
    padding, for inference (`conv2d`) and training (`ConvBNAct`) alike.

    On JAX's CPU backend a sum of shifted copies of the input
    (`depthwise_as_shifted_sum`): XLA's CPU convolution with one group per
    channel is very slow. One-off timings (not in the repo; the log has
    them), 3x3 at batch 64, XLA's grouped convolution against the shifted
    sum: 32x32 with 96 channels 143 against 4 ms, 16x16 with 192 at stride
    2 22 against 1.5, 8x8 with 576 54 against 1.5, 4x4 with 960 22 against
    1.0. Elsewhere `keras.ops.depthwise_conv`.

    Args:
        inputs: `(batch, H, W, C)`.
        kernel: `(k, k, C, 1)` (Keras' layout).
        strides: int.
        padding: zero rows/columns added on every side.

    Returns:
        `(batch, H', W', C)`, without a bias.
    """
    if _jax_on_cpu():
        return depthwise_as_shifted_sum(inputs, kernel, strides, padding)
    inputs, mode = _symmetric_padding(inputs, kernel.shape[0], strides, padding)
    return ops.depthwise_conv(inputs, kernel, strides=strides, padding=mode)


def _empty_conv(inputs, kernel, strides, padding, depthwise):
    """`conv2d` of a batch of no images: zeros of the output's shape.
    TensorFlow's CPU convolution returns the input's shape for an empty
    batch (`tf.nn.conv2d` of `(0, 32, 32, 3)` by a 16-channel kernel gives
    `(0, 32, 32, 3)`), and the bias then fails to add."""
    size = lambda n: (n + 2 * padding - kernel.shape[0]) // strides + 1  # noqa: E731
    channels = kernel.shape[2] if depthwise else kernel.shape[3]
    shape = (0, size(inputs.shape[1]), size(inputs.shape[2]), channels)
    return ops.zeros(shape, dtype=inputs.dtype)


def concatenate_channels(parts, reserve=0):
    """`keras.ops.concatenate(parts, axis=-1)` of NHWC tensors.

    On PyTorch in inference (gradients off), the output is allocated once
    and each part copied into its channel slice: `torch.cat` along the last
    axis of channels-last tensors with few channels per part measured 1.4-5x
    slower than a copy of the same data (a one-off microbenchmark, not in the
    repo). There, `reserve` more channels are left free after the result, and
    a later concatenation onto the result (as its first part) fills them in
    place instead of copying it again: a dense block that grows one tensor
    layer by layer copies each new part once (see `_torch_concatenate`).
    Elsewhere `keras.ops.concatenate`, and `reserve` is ignored.

    Args:
        parts: tensors `(batch, H, W, C_i)`.
        reserve: PyTorch inference: channels to leave free after the result
            for later concatenations onto it.

    Returns:
        `(batch, H, W, sum C_i)`.
    """
    if keras.backend.backend() == "torch":
        import torch

        if not torch.is_grad_enabled() and all(isinstance(p, torch.Tensor) for p in parts):
            return _torch_concatenate(parts, reserve)
    return ops.concatenate(parts, axis=-1)


def _torch_concatenate(parts, reserve):
    """`concatenate_channels` on PyTorch without gradients.

    The result is the first channels of a buffer with `reserve` channels to
    spare. When `parts[0]` is such a result, still the widest filled prefix
    of its buffer, and the other parts fit in what is spare, they are
    written there and the result is the wider prefix: no existing view of
    the buffer sees a value change (every view is a prefix no wider than
    what was filled). Anything else (a prefix that was already extended, no
    room) is copied into a new buffer.
    """
    import torch

    first = parts[0]
    total = sum(p.shape[-1] for p in parts)
    buffer = getattr(first, "_az_buffer", None)
    if (
        buffer is not None
        and buffer._az_filled == first.shape[-1]
        and buffer.shape[-1] >= total
        and first.data_ptr() == buffer.data_ptr()
        and first.shape[:-1] == buffer.shape[:-1]
        and first.stride() == buffer.stride()
    ):
        start, parts = first.shape[-1], parts[1:]
    else:
        buffer = torch.empty(first.shape[:-1] + (total + reserve,), dtype=first.dtype,
                             device=first.device)
        start = 0
    for p in parts:
        buffer[..., start:start + p.shape[-1]] = p
        start += p.shape[-1]
    buffer._az_filled = total  # also when full: no narrower prefix may write here again
    if total == buffer.shape[-1]:
        return buffer  # full: nothing to extend in place
    out = buffer[..., :total]
    out._az_buffer = buffer
    return out


def activate_fresh(x, activation):
    """`None` (identity), `"relu"` or `"relu6"` of `x`, a tensor that nothing
    else holds (a convolution's fresh output).

    On PyTorch without gradients, in place (`relu_`, `clamp_`): no new
    tensor to allocate and fill. MSDNet CIFAR on PyTorch at batch 64, the
    first stage and the whole network, alternately (a one-off timing, not in
    the repo): 22.4-24.1 against 20.7-22.4 ms and 64.5-67.7 against
    57.7-64.9 ms. Elsewhere `keras.ops`, which compilers fuse anyway.

    Args:
        x: a tensor.
        activation: `None`, `"relu"` or `"relu6"`.

    Returns:
        The activated tensor (on PyTorch inference, `x` itself).
    """
    if activation is None:
        return x
    if keras.backend.backend() == "torch":
        import torch

        if not torch.is_grad_enabled() and isinstance(x, torch.Tensor):
            return x.relu_() if activation == "relu" else x.clamp_(0.0, 6.0)
    return ops.relu(x) if activation == "relu" else ops.relu6(x)


def max_pool(inputs, pool_size, strides, padding):
    """Max-pool of NHWC `inputs` with PyTorch's symmetric padding: `padding`
    rows and columns on every side that never win the max.

    PyTorch: native `max_pool2d` on a channels-last view; JAX: one
    `lax.reduce_window` with the padding; TensorFlow: a pad with -inf, then
    `keras.ops.max_pool`. The 3x3 stride-2 pool of MSDNet ImageNet's stem
    (64 x 112 x 112 x 32) took 182 ms on PyTorch and 45 ms on JAX as a zero
    pad then `keras.ops.max_pool`, against 19 and 16 ms this way (one-off
    timings, not in the repo): Keras' PyTorch pool copies the input to
    channels-first memory and back.

    Args:
        inputs: `(batch, H, W, C)`.
        pool_size: int, square window.
        strides: int.
        padding: rows/columns added on every side.

    Returns:
        `(batch, H', W', C)`, `H' = (H + 2 * padding - pool_size) // strides + 1`.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch.nn.functional as F

        y = F.max_pool2d(inputs.permute(0, 3, 1, 2), pool_size, strides, padding)
        return y.permute(0, 2, 3, 1)
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    if backend == "jax":
        from jax import lax

        # A Python -inf lets JAX see a max-pool (one it can differentiate).
        window, steps = (1, pool_size, pool_size, 1), (1, strides, strides, 1)
        return lax.reduce_window(inputs, -np.inf, lax.max, window, steps, pads)
    if padding:
        inputs = ops.pad(inputs, pads, constant_values=float("-inf"))
    return ops.max_pool(inputs, pool_size, strides=strides, padding="valid")


def resize_bilinear_aligned(images, size):
    """Each backend's native bilinear resize with corner alignment, or None
    where there is none (JAX): then `layers.resize_bilinear_aligned` applies
    its interpolation matrices with `keras.ops.einsum`.

    PyTorch: `F.interpolate(..., mode="bilinear", align_corners=True)` on a
    channels-last view (what the RANet authors call); TensorFlow:
    `ResizeBilinear` with `align_corners=True`. With both, RANet's stage 5
    (CIFAR anytime, the first with 32x32 fusion blocks) went from 209-246 to
    161-180 ms per batch of 64 on both backends (`examples/benchmark.py
    --model ranet_cifar_anytime --stage-batches 64`, two alternating rounds).

    Args:
        images: `(batch, H, W, C)` float tensor.
        size: `(H_out, W_out)`.

    Returns:
        `(batch, H_out, W_out, C)`, or None.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch.nn.functional as F

        y = F.interpolate(images.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear",
                          align_corners=True)
        return y.permute(0, 2, 3, 1)
    if backend == "tensorflow":
        import tensorflow as tf

        y = tf.raw_ops.ResizeBilinear(images=images, size=tuple(size), align_corners=True,
                                      half_pixel_centers=False)
        return tf.cast(y, images.dtype)  # the op computes in float32
    return None


def _pointwise_on_view(inputs, kernel, strides, padding, depthwise):
    """True for a 1x1 stride-1 PyTorch convolution of a non-contiguous input,
    such as RANet's channel prefix of a wider feature (`RANet._read`)."""
    return (tuple(kernel.shape[:2]) == (1, 1) and strides == 1 and not padding
            and not depthwise and not inputs.is_contiguous())


def _pointwise_as_matmul(kernel, strides, depthwise):
    """Whether `conv2d` computes this convolution as a matrix product: a
    1x1, stride-1, non-depthwise convolution on JAX's CPU backend."""
    if depthwise or strides != 1 or tuple(kernel.shape[:2]) != (1, 1):
        return False
    return _jax_on_cpu()


# A banded convolution pays for itself up to this C_in * C_out (stride 1, a
# channel count off the multiples of 8): see `banded_conv`.
_BANDED_MAX_CHANNEL_PRODUCT = 96


def _banded_pays(kernel, strides, depthwise):
    """Whether `conv2d` computes this convolution with `banded_conv`: on
    JAX's CPU backend, a stride-1, non-depthwise convolution larger than 1x1
    with few channels (`C_in * C_out <= 96`), not both multiples of 8 (XLA's
    own convolution is fast there), and not an RGB input that
    `_fourth_channel_pays` takes: XLA's convolution of the padded input was
    as fast or faster (3x3 at 32x32, 3 to 20 / 24 / 32 channels, ms, banded
    against four channels: batch 64 1.62 / 1.64, 1.88 / 1.91, 2.45 / 1.87;
    batch 16 0.51 / 0.39, 0.71 / 0.51, 0.76 / 0.45; one-off, 2026-12-07).
    DMNN-MobileNetV2's CIFAR stem (3 to 32 channels) is one."""
    k, _, c_in, c_out = kernel.shape
    if depthwise or strides != 1 or k == 1 or c_in * c_out > _BANDED_MAX_CHANNEL_PRODUCT:
        return False
    if c_in % 8 == 0 and c_out % 8 == 0:
        return False
    if _fourth_channel_pays(kernel, depthwise):
        return False
    return _jax_on_cpu()


def depthwise_as_shifted_sum(inputs, kernel, strides, padding):
    """Depthwise convolution of NHWC `inputs` as the sum of `k * k` shifted
    (and strided) copies of the zero-padded input, each scaled per channel by
    one tap of the kernel: elementwise work that XLA fuses into one loop.

    Args:
        inputs: `(batch, H, W, C)`.
        kernel: `(k, k, C, 1)`, one filter per channel (Keras' layout).
        strides: int.
        padding: zero rows/columns added on every side (PyTorch's).

    Returns:
        `(batch, H', W', C)`, without a bias.
    """
    k = kernel.shape[0]
    out_h = (inputs.shape[1] + 2 * padding - k) // strides + 1
    out_w = (inputs.shape[2] + 2 * padding - k) // strides + 1
    x = inputs
    if padding:
        x = ops.pad(inputs, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    taps = ops.reshape(kernel, (k, k, kernel.shape[2]))
    out = None
    for dy in range(k):
        rows = x[:, dy:dy + strides * (out_h - 1) + 1:strides]
        for dx in range(k):
            term = rows[:, :, dx:dx + strides * (out_w - 1) + 1:strides] * taps[dy, dx]
            out = term if out is None else out + term
    return out


def _fourth_channel_pays(kernel, depthwise):
    """Whether `conv2d` pads a 3-channel input with a zero fourth channel
    (and the kernel with zeros to match): on JAX's CPU backend, a
    non-depthwise convolution of 3 input channels to 17-47 output channels.

    XLA's CPU convolution is several times slower there than with 4 input
    channels, the same sum. One-off timings (not in the repo; the log has
    them), 3 against 4 input channels: 7x7 stride 2 at 224x224 to 32
    channels (MSDNet ImageNet's stem), batch 64, 302-307 against 120-126 ms;
    batch 16: to 24 channels 200 against 25, to 32 75 against 31, to 16 12
    against 19 (slower), to 48-128 within 15% either way; 3x3 at stride 1 and
    2 alike.
    """
    if depthwise or kernel.shape[2] != 3 or not 16 < kernel.shape[3] < 48:
        return False
    return _jax_on_cpu()


def banded_conv(inputs, kernel, padding, tile=8):
    """Stride-1 convolution of NHWC `inputs` as one matrix product: each
    output row is cut into tiles of `tile` columns, and a tile is the product
    of the `k` input rows' `tile + k - 1` columns (all channels, flattened)
    with a banded (block-Toeplitz) matrix made from the kernel.

    It does `(tile + k - 1) / k` times the multiply-adds of the convolution
    (3.3 for a 3x3 one in tiles of 8), as one well-shaped matrix product.
    XLA's CPU convolution is slow per FLOP on few channels that are not
    multiples of 8: at batch 64, 3x3, 32x32 (one-off microbenchmarks,
    `docs/speed_log.md`), 6 to 6 channels (MSDNet CIFAR's finest scale) took
    2.2-4.5 ms in XLA and 1.3-1.6 ms this way (TensorFlow's oneDNN: 1.5 ms),
    3 to 16 (MSDNet's stem) 1.7-3.4 against 1.0-1.4 ms, 3 to 32 (DMNN
    CIFAR's stem) 4.5 against 1.5-1.9 ms, 12 to 6 at 16x16 1.0-1.9 against
    0.7-0.9 ms. It lost at 8 to 8 (1.3 against 1.6 ms), above `C_in * C_out
    = 96` (16 to 8: 2.0 against 4.5 ms) and at stride 2, hence
    `_banded_pays`. Zero padding as PyTorch's (`padding` on every side).

    Args:
        inputs: `(batch, H, W, C_in)`.
        kernel: `(k, k, C_in, C_out)`.
        padding: zero rows/columns added on every side.
        tile: output columns per tile.

    Returns:
        `(batch, H + 2 * padding - k + 1, W + 2 * padding - k + 1, C_out)`,
        without a bias.
    """
    k, _, c_in, c_out = kernel.shape
    batch, height, width = ops.shape(inputs)[0], inputs.shape[1], inputs.shape[2]
    out_h, out_w = height + 2 * padding - k + 1, width + 2 * padding - k + 1
    tile = min(tile, out_w)
    tiles = -(-out_w // tile)
    span = tile + k - 1
    right = tiles * tile + k - 1 - width - padding  # at least `padding`
    x = ops.pad(inputs, ((0, 0), (padding, padding), (padding, right), (0, 0)))
    rows = ops.stack([x[:, dy:dy + out_h] for dy in range(k)], axis=2)  # (B, out_h, k, W', C)
    x = ops.stack([rows[:, :, :, j * tile:j * tile + span] for j in range(tiles)], axis=2)
    # band[u, t, dx] = 1 where input column u of a tile feeds its output t through kernel column dx.
    band = np.zeros((span, tile, k), dtype="float32")
    for t in range(tile):
        band[np.arange(t, t + k), t, np.arange(k)] = 1.0
    matrix = ops.einsum("utx,yxco->yucto", ops.cast(band, kernel.dtype), kernel)
    depth = k * span * c_in
    y = ops.matmul(ops.reshape(x, (-1, depth)), ops.reshape(matrix, (depth, tile * c_out)))
    y = ops.reshape(y, (batch, out_h, tiles * tile, c_out))
    return y[:, :, :out_w] if tiles * tile != out_w else y


def _jax_on_cpu():
    """Whether this is the JAX backend computing on the CPU."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def may_call_directly(layer, args, kwargs):
    """Whether `layer(*args, **kwargs)` may run `layer.call` directly.

    True only on PyTorch, for an explicit inference call (`training=False`)
    with gradients off, on a built float32 layer, with tensor inputs: there
    Keras' `Layer.__call__` (argument binding, input conversion, autocast,
    tracking) only adds Python time. It is about half of a small-batch
    stage: the seven stages of a CIFAR MSDNet took 67 ms at batch 1 through
    `__call__` and 31 ms calling `call` directly.

    Args:
        layer: a Keras layer.
        args: the positional arguments of the call.
        kwargs: the keyword arguments of the call.

    Returns:
        A bool.
    """
    if keras.backend.backend() != "torch" or kwargs.get("training", None) is not False:
        return False
    import torch

    if (torch.is_grad_enabled() or not layer.built or layer.compute_dtype != "float32"
            or getattr(layer, "quantization_mode", None) is not None):  # Keras' quantized call
        return False
    tensor = torch.Tensor
    # The usual arguments first, without Keras' tree functions: tensors, or
    # flat lists of tensors (MSDNet's scales), where None stands for a scale
    # nothing reads (a sample that leaves computes only what its exit reads).
    # The seven stages of a CIFAR MSDNet at batch 1 went from 12.6 to 11.2 ms
    # (one-off timing).
    if args and all(isinstance(a, tensor) or (type(a) in (list, tuple)
                                                 and any(isinstance(t, tensor) for t in a)
                                                 and all(t is None or isinstance(t, tensor) for t in a))
                    for a in args):
        return True
    leaves = [a for a in tree.flatten(args) if a is not None]
    return bool(leaves) and all(isinstance(a, tensor) for a in leaves)


def call_layer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, or `layer.call(*args, **kwargs)` where
    `may_call_directly` allows it: for Keras' own layers (`Dense`) inside the
    zoo's, which do not derive from `adaptive_zoo.layers.Layer`.

    Args:
        layer: a Keras layer whose `call` takes the arguments given
            (`training` among them, for the direct call).
        *args: the positional arguments of the call.
        **kwargs: the keyword arguments of the call.

    Returns:
        What the layer returns.

    Example:
    ```python
    logits = fast_path.call_layer(self.dense, features, training=training)
    ```
    """
    if may_call_directly(layer, args, kwargs):
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)


_MEMO = weakref.WeakKeyDictionary()


def memoized(owner, fn, variables):
    """`fn(*values of variables)`, computed once per change of the variables
    in PyTorch inference; elsewhere computed on every call.

    On PyTorch (eager) a layer's derived weights, such as a convolution with
    BatchNorm folded in, would otherwise be recomputed at every call: about
    a third of the time of a small-batch stage. A PyTorch tensor counts its
    in-place updates (`_version`; Keras assigns in place), so the result is
    reused only while every variable is the same tensor at the same version.
    It is not reused when gradients are being recorded. On TensorFlow and JAX
    the computation sits inside the compiled graph.

    Args:
        owner: the object the result belongs to (held weakly).
        fn: a function of the variables' values.
        variables: Keras variables.

    Returns:
        `fn`'s result.
    """
    values = [v.value for v in variables]
    if keras.backend.backend() != "torch":
        return fn(*values)
    import torch

    if torch.is_grad_enabled():
        return fn(*values)
    key = tuple((id(t), t._version) for t in values)
    cached = _MEMO.get(owner)
    if cached is None or cached[0] != key:
        cached = (key, fn(*values))
        _MEMO[owner] = cached
    return cached[1]


def tune_cpu_allocator(mmap_threshold=256 << 20, trim_threshold=1 << 30):
    """Keep large buffers in glibc's heap: opt-in, process-wide, for CPU
    inference on Linux.

    glibc's `malloc` serves every buffer above its mmap threshold (at most
    32 MiB by default) with fresh pages from the kernel and hands them back
    when it is freed, so a large activation is page-faulted in again at every
    call. On our 2-core machine `examples/benchmark_dmnn.py` ran 1.2-1.5x
    faster at every budget on JAX and PyTorch with this setting (README, "CPU
    inference: the memory allocator"; TensorFlow has its own allocator).

    It also makes every thread allocate from the one main heap (glibc
    `M_ARENA_MAX` 1). By default each thread that allocates gets an arena of
    its own, whose heaps hold at most 64 MiB, so a larger buffer allocated on
    a worker thread (XLA runs its programs on its own threads) gets fresh
    pages whatever the threshold: a DMNN-MobileNetV2 block at batch 64, with
    about 75 MiB of intermediate buffers, page-faulted 19,000 pages and took
    17-18 ms per call on JAX with the thresholds alone, about 6 ms with one
    arena (one-off timing, `docs/speed_log.md`). Threads keep the arena they
    first allocated from, so call this before the first inference.

    The same as starting Python with `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=
    ...:glibc.malloc.trim_threshold=...:glibc.malloc.arena_max=1`, but callable
    from Python (e.g. in a notebook). The cost: the process keeps up to
    `trim_threshold` bytes of freed memory for reuse instead of returning it
    to the system, and threads share one heap's lock.

    Args:
        mmap_threshold: buffers of at least this many bytes still get their
            own pages (glibc `M_MMAP_THRESHOLD`).
        trim_threshold: freed memory at the top of the heap beyond this many
            bytes is returned to the system (`M_TRIM_THRESHOLD`).

    Returns:
        True if glibc took the three settings; False where there is no glibc
        `mallopt` (macOS, Windows, musl) or it refused a value, in which
        case nothing is changed that glibc did not accept.

    Example:

    >>> adaptive_zoo.tune_cpu_allocator()  # once, before inference
    True
    """
    import ctypes

    for value in (mmap_threshold, trim_threshold):
        if not (is_whole_number(value) and 0 < value < 2**31):  # "big" or 2.5 failed in int()
            raise ValueError(f"Allocator thresholds are whole bytes in (0, 2**31); got {value!r}.")
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # glibc's <malloc.h>
    tuned = bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(
        mallopt(m_trim_threshold, int(trim_threshold))) and bool(mallopt(m_arena_max, 1))
    if tuned:  # buffers below the threshold now stay in the heap
        global _cpu_call_bytes
        _cpu_call_bytes = max(_cpu_call_bytes, int(mmap_threshold))
    return tuned
