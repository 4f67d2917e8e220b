"""Input checks and batching shared by every model of the zoo."""

import collections.abc
import copy
import functools
import itertools
import re
import sys
import types

import keras
import numpy as np
from keras import ops

from adaptive_zoo.checks import positive_integer, whole_valued

__all__ = [
    "as_float_images",
    "check_class_labels",
    "check_image_batch",
    "check_label_spec",
    "checked_batches",
    "checked_label_batches",
    "checked_python_batches",
    "held_out_arrays",
    "held_out_batches",
    "held_out_passes",
    "image_batches",
    "image_dtype",
    "label_error",
    "labeled_batches",
    "positive_batch_size",
]


def check_image_batch(name, image_shape, inputs):
    """Raise a `ValueError` naming the problem unless `inputs` is a batch of
    NHWC images of `image_shape` `(H, W, C)`."""
    if not hasattr(inputs, "shape"):
        raise ValueError(
            f"{name} takes a batch of images as one array or tensor (batch, H, W, C) = (batch, "
            f"{', '.join(map(str, image_shape))}); got a {type(inputs).__name__}."
        )
    shape = tuple(inputs.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{name} takes a batch of images (batch, H, W, C) = (batch, "
            f"{', '.join(map(str, image_shape))}); got an input of rank {len(shape)} "
            f"with shape {shape}."
        )
    if shape[-1] is not None and int(shape[-1]) != image_shape[-1]:
        raise ValueError(
            f"{name} takes images with {image_shape[-1]} channels (NHWC); got "
            f"{shape[-1]} channels in an input of shape {shape}. Channels-first input "
            "must be transposed to (batch, H, W, C)."
        )
    for got, want, axis in zip(shape[1:3], image_shape[:2], ("height", "width")):
        if got is not None and int(got) != want:
            raise ValueError(
                f"{name} was built for {image_shape[0]}x{image_shape[1]} "
                f"images; got {axis} {got} in an input of shape {shape}."
            )


def check_class_labels(name, num_classes, labels, ignore_class=None, label_shape=(), loss_hints=True):
    """Raise a `ValueError` naming the problem unless `labels` are what
    sparse cross-entropy takes: one class id in `[0, num_classes)` (or
    `ignore_class`) per image, or per pixel, an integer or a float with an
    integer value.

    Wrong labels would otherwise fail late and unclearly (Keras' shape
    error, PyTorch's "Target 13 is out of bounds", TensorFlow's graph
    error), after the forward pass had moved BatchNorm's statistics, or not
    fail at all (out-of-range labels train with a loss of zero on JAX).

    Args:
        name: the model's name, for the message.
        num_classes: the number of logits.
        labels: an array or tensor `(batch,) + label_shape`, a trailing
            axis of size 1 allowed.
        ignore_class: a label value the loss ignores, or `None`.
        label_shape: the label's shape for one image: `()`, or `(H, W)`
            for segmentation.
        loss_hints: whether the messages name the loss to compile for
            one-hot or soft labels (not for `calibrate`, which scores class
            ids whatever the loss).
    """
    values = np.asarray(ops.convert_to_numpy(labels))
    check_label_spec(name, num_classes, labels.shape, values.dtype, label_shape, loss_hints=loss_hints)
    if values.size == 0:
        return
    floating = np.issubdtype(values.dtype, np.floating)
    if floating and not whole_valued(values):
        if not loss_hints:
            raise ValueError(f"{name} takes integer class ids as labels; got labels that are not "
                             f"whole numbers (dtype {values.dtype}).")
        raise ValueError(
            f"{name} takes integer class ids as labels (the default loss, sparse cross-entropy); got "
            f"labels that are not whole numbers (dtype {values.dtype}). For soft labels, compile "
            "with loss=keras.losses.CategoricalCrossentropy(from_logits=True).")
    valid = (values >= 0) & (values < num_classes)
    if ignore_class is not None:
        valid |= values == ignore_class
    if not np.all(valid):
        bad = values[~valid]
        raise ValueError(f"{_label_range(name, num_classes, ignore_class)}; got {bad.size} label(s) "
                         f"outside, from {bad.min():g} to {bad.max():g}.")


def check_label_spec(name, num_classes, shape, dtype, label_shape=(), dtype_name=None,
                     loss_hints=True):
    """Raise a `ValueError` unless a batch of labels of `shape` and `dtype`
    (a NumPy dtype; `dtype_name` the name to show, if another) can hold one
    class id per image (`label_shape` `()`) or per pixel (`(H, W)`):
    integers or floats, with an optional trailing axis of 1; unknown
    (`None`) sizes match any, an unknown rank (`shape` `None`) too.
    `loss_hints`: as in `check_class_labels`."""
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{name} takes integer class ids as labels; got labels of dtype "
                         f"{dtype_name or np.dtype(dtype)}.")
    if shape is None:
        return
    got = tuple(shape)[1:]
    want = tuple(label_shape)

    def matches(expected):
        return len(got) == len(expected) and all(g is None or g == e for g, e in zip(got, expected))

    if not (matches(want) or matches(want + (1,))):
        hint = ""
        if matches(want + (num_classes,)):
            hint = " These look one-hot: pass the class ids (argmax)" + (
                ", or compile with loss=keras.losses.CategoricalCrossentropy(from_logits=True)."
                if loss_hints else ".")
        raise ValueError(
            f"{name} takes one class id per {'pixel' if want else 'image'} as labels, shape "
            f"(batch, {', '.join(map(str, want + (1,)))}) or (batch{''.join(f', {d}' for d in want)}); "
            f"got labels of shape {tuple(shape)}.{hint}")


# In every out-of-range message; marks the one of `checked_label_batches`'
# assertion, so that the error it raises inside Keras' loop can be told
# apart (`label_error`).
_LABEL_ASSERTION = "labels must be class ids in"


def _label_range(name, num_classes, ignore_class):
    """The head of an out-of-range message: the labels `name` takes."""
    allowed = f"[0, {num_classes})" + ("" if ignore_class is None else f" or {ignore_class}")
    return f"{name} has {num_classes} classes: {_LABEL_ASSERTION} {allowed}"


def checked_label_batches(dataset, name, num_classes, ignore_class=None):
    """`dataset` of `(images, labels, ...)` batches with each batch's labels
    checked as Keras' loop reads it: a label outside `[0, num_classes)` (and
    not `ignore_class`) stops the loop before that batch runs, with an error
    that `label_error` turns into a `ValueError` naming the range found.
    Other data with an element spec (a `tf.distribute` distributed dataset,
    whose batches are already split among the devices) is returned as it
    is."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    head = _label_range(name, num_classes, ignore_class)

    def check(images, labels, *rest):
        values = tf.cast(labels, "float64")  # any dtype, any number of classes
        valid = (values >= 0) & (values < num_classes)
        if ignore_class is not None:
            valid |= tf.equal(values, ignore_class)

        def fail():  # the message is built only for a bad batch
            shown = tf.boolean_mask(values, tf.logical_not(valid))
            message = tf.strings.format(head + "; a batch holds labels outside, from {} to {}.",
                                        (tf.reduce_min(shown), tf.reduce_max(shown)))
            with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
                return tf.identity(labels)

        return (images, tf.cond(tf.reduce_all(valid), lambda: labels, fail)) + rest

    return dataset.map(check)


def checked_python_batches(data, name, num_classes, ignore_class=None, label_shape=()):
    """`data`, a Python generator, a `keras.utils.PyDataset` or a
    `torch.utils.data.DataLoader` of `(images, labels, ...)` batches, with
    each batch's labels checked by `check_class_labels` as Keras' loop reads
    it: a bad batch raises its `ValueError` before it runs (Keras reads the
    first batches before the loop starts). Other data is returned as it is.

    The check is a `functools.partial` of module-level functions, so that a
    `PyDataset` with `use_multiprocessing=True`, or a `DataLoader` with
    worker processes, can still be sent to its workers. A `DataLoader` is
    copied with its `collate_fn` followed by the check (the user's own is
    left as it is)."""
    check = functools.partial(check_class_labels, name, num_classes, ignore_class=ignore_class,
                              label_shape=label_shape)
    if isinstance(data, types.GeneratorType):
        return (_checked_labels(batch, check) for batch in data)
    if isinstance(data, keras.utils.PyDataset):
        return _CheckedPyDataset(data, check)
    if _is_torch_data_loader(data):
        loader = copy.copy(data)
        loader.collate_fn = functools.partial(_collated_and_checked, data.collate_fn, check)
        return loader
    return data


def _is_torch_data_loader(data):
    torch_data = sys.modules.get("torch.utils.data")  # never imports torch itself
    return torch_data is not None and isinstance(data, torch_data.DataLoader)


def _collated_and_checked(collate_fn, check, samples):
    return _checked_labels(collate_fn(samples), check)


def _checked_labels(batch, check):
    """`batch` after `check(labels)`, where it is `(images, labels, ...)`."""
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and hasattr(batch[1], "shape"):
        check(batch[1])
    return batch


class _CheckedPyDataset(keras.utils.PyDataset):
    """A user's `PyDataset` whose batches have their labels checked
    (`checked_python_batches`); its workers, length and epoch hooks are the
    user's."""

    def __init__(self, dataset, check):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset, self.check = dataset, check

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __getitem__(self, index):
        return _checked_labels(self.dataset[index], self.check)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def label_error(error):
    """The `ValueError` for an error raised by `checked_label_batches`'
    check inside Keras' loop (TensorFlow's `InvalidArgumentError`, from the
    data iterator or the compiled step), or `None` for any other error."""
    if isinstance(error, ValueError):
        return None
    found = re.search(rf"[^\s\[\]]+ has \d+ classes: {_LABEL_ASSERTION} .*? to \S+?\.", str(error))
    return None if found is None else ValueError(found.group(0))


def positive_batch_size(batch_size, default):
    """`batch_size`, or `default` where it is None; a `ValueError` unless it
    is a positive integer."""
    return default if batch_size is None else positive_integer(batch_size, "batch_size")


def checked_batches(x, batch_size, check, steps=None, verbose=0):
    """The image batches of `x` (see `image_batches`) as tensors, each passed
    to `check` (which raises for a bad one) before it is yielded; only the
    first `steps` batches where `steps` is not None (Keras' `predict(steps=)`).
    `verbose` as in Keras' `predict`: `"auto"` or 1, Keras' progress bar,
    advanced as the caller asks for the next batch; 2, one line at the end;
    0, nothing.

    Raises:
        ValueError: if `x` holds no images.
    """
    return _counted(_checked(x, batch_size, check, steps), _progress_bar(x, batch_size, steps, verbose))


def _checked(x, batch_size, check, steps):
    empty = True
    for batch in itertools.islice(image_batches(x, batch_size), steps):
        batch = as_float_images(batch)
        check(batch)
        if int(batch.shape[0]) == 0:
            continue
        empty = False
        yield batch
    if empty:
        raise ValueError("predict got no images.")


def _counted(batches, bar):
    """`batches`, advancing Keras' progress bar `bar` (None: no bar) as the
    caller asks for the next one; its last line once, at the end."""
    done = 0
    for batch in batches:
        yield batch
        done += 1
        if bar is not None:
            bar.update(done, finalize=False)
    if bar is not None:
        bar.update(done, finalize=True)


def _progress_bar(x, batch_size, steps, verbose):
    """Keras' `Progbar` for `checked_batches`, or None for `verbose=0`; its
    target is the number of batches where that is known."""
    verbose = 1 if verbose == "auto" else verbose
    if not verbose:
        return None
    if hasattr(x, "shape") and len(x.shape) == 4:
        target = -(-int(x.shape[0]) // batch_size)
    else:
        try:
            target = len(x)
        except TypeError:  # a generator; a tf.data.Dataset of unknown length
            target = None
    if steps is not None:
        target = steps if target is None else min(target, steps)
    return keras.utils.Progbar(target, verbose=verbose)


def labeled_batches(data, steps=None, verbose=0):
    """The batches of `data`, an iterable of `(images, labels)` or
    `(images, labels, sample_weight)` tuples (a `tf.data.Dataset`, a
    generator, a `keras.utils.PyDataset`), as NumPy triples
    `(images, labels, sample_weight or None)`; only the first `steps` where
    `steps` is not None; Keras' progress bar as in `checked_batches`.

    Raises:
        ValueError: for a batch without labels.
    """
    def triples():
        for item in itertools.islice(data, steps):
            if not isinstance(item, (tuple, list)) or len(item) < 2 or item[1] is None:
                raise ValueError("Each batch must be (images, labels) or (images, labels, "
                                 "sample_weight): evaluate needs labels.")
            weights = item[2] if len(item) > 2 else None
            yield tuple(None if a is None else np.asarray(ops.convert_to_numpy(a))
                        for a in (item[0], item[1], weights))

    return _counted(triples(), _progress_bar(data, 1, steps, verbose))


_FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def image_dtype(dtype):
    """The dtype images of `dtype` are given to the layers in: float64 (NumPy's
    default) and integers (uint8 pixels) become `keras.config.floatx()`, as
    `keras.Model.predict` would cast them; float32/16 stay as they are.
    (PyTorch's convolutions refuse float64 inputs with float32 weights.)"""
    dtype = keras.backend.standardize_dtype(dtype)
    return dtype if dtype in _FLOAT_DTYPES else keras.config.floatx()


def as_float_images(images):
    """`images` as a tensor of the dtype `image_dtype` gives."""
    images = ops.convert_to_tensor(images)
    dtype = image_dtype(images.dtype)
    return images if dtype == keras.backend.standardize_dtype(images.dtype) else ops.cast(images, dtype)


def _labelled_arrays(data, lengths):
    """Whether `data` is a tuple or list of arrays (its length one of
    `lengths`): images `(N, H, W, C)`, then labels of a lower rank, then
    whatever follows (sample weights): not a sequence of image batches."""
    return (isinstance(data, (tuple, list)) and len(data) in lengths
            and all(hasattr(t, "shape") for t in data)
            and len(data[0].shape) == 4 and len(data[1].shape) < 4)


def image_batches(x, batch_size):
    """Yield the image batches of `x`, as the models' `predict` and
    `calibrate` take it.

    Args:
        x: an array or tensor of images `(N, H, W, C)`, split into batches of
            `batch_size`; or an iterable of image batches or of
            `(images, labels, ...)` tuples (the labels are dropped).
        batch_size: rows per batch for an array.

    Returns:
        A generator of image batches. An array of another rank is yielded
        whole, so that the caller's `check_image_batch` names its rank.

    Raises:
        ValueError: for a batch given as a dict.
    """
    if isinstance(x, tuple) and _labelled_arrays(x, (2, 3)):
        # Read as two batches, the labels failed the image check as an input of rank 1.
        raise ValueError(
            "Got an (images, labels) tuple of arrays where images go: pass the images alone, or a "
            "dataset of (images, labels) batches (its labels are dropped)."
        )
    if hasattr(x, "shape"):
        if len(x.shape) == 4:
            for start in range(0, int(x.shape[0]), batch_size):
                yield x[start : start + batch_size]
        else:
            yield x
        return
    for item in x:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, dict):
            raise ValueError("Batches must be images or (images, labels) pairs, not dicts.")
        yield item if hasattr(item, "shape") else ops.convert_to_numpy(item)


_UNWEIGHTED = (
    "Calibration weighs every held-out image alike: pass (images, labels) without sample weights "
    "(for a dataset of (images, labels, weights): dataset.map(lambda x, y, w: (x, y)))."
)


def held_out_batches(data, labels_required=True, batch_size=None, verbose=0, check_labels=None):
    """`calibrate`'s held-out data, one batch at a time, as NumPy
    `(images, labels)` pairs (`labels` None where the data has none).

    A dataset is read once and only a batch is held at a time, so
    calibrating on a large held-out set (ImageNet's) needs no more memory
    than its per-sample results.

    Args:
        data: `(images, labels)` arrays or tensors, an iterable of
            `(images, labels)` batches (e.g. a `tf.data.Dataset`), or, where
            labels are optional, images alone or an iterable of image batches.
            A tuple or list of exactly two arrays is read as
            `(images, labels)`.
        labels_required: raise unless every batch has labels (the multi-exit
            models' calibration needs them; DMNN's does not).
        batch_size: rows per batch for arrays (None: all of them at once).
        verbose: Keras' progress bar over the batches, as in `predict`
            (`"auto"` or 1, 2, or 0 for none).
        check_labels: `None`, or a function that raises a `ValueError` for
            labels the model cannot score (`check_class_labels` bound to the
            model): called on all of an array's labels before any batch is
            read, else on each batch's as it comes.

    Yields:
        `(images, labels)` of each non-empty batch.

    Raises:
        ValueError: for missing labels (if required), sample weights (every
            image counts alike), no data, dict batches, a label count other
            than the image count, or labels that `check_labels` refuses.
    """
    images = data
    if _labelled_arrays(data, (3,)):
        # (images, labels, sample_weight) was read as three batches of images.
        raise ValueError(_UNWEIGHTED)
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape"):
        images = data[0]
        if data[1] is None and labels_required:
            raise ValueError("Calibration needs labels: pass (images, labels).")
        if data[1] is not None and check_labels is not None:
            check_labels(data[1])
            check_labels = None  # all of them are checked
        pairs = _array_batches(*data, batch_size)
    elif hasattr(data, "shape"):
        if labels_required:
            raise ValueError("Calibration needs labels: pass (images, labels), not images alone.")
        pairs = _array_batches(data, None, batch_size)
    else:
        pairs = _iterated_batches(data, labels_required)
    if hasattr(images, "shape") and len(images.shape) == 4:
        rows = batch_size or max(int(images.shape[0]), 1)
    else:
        rows = 1  # an iterable of batches: `_progress_bar` counts them where it can
    return _counted(_numpy_pairs(pairs, check_labels), _progress_bar(images, rows, None, verbose))


def _numpy_pairs(pairs, check_labels=None):
    """`(images, labels)` batches as NumPy, the empty ones left out, each
    batch's labels checked by `check_labels` (if not None)."""
    empty = True
    for x, y in pairs:
        x = np.asarray(ops.convert_to_numpy(x))
        if y is not None:
            y = np.asarray(ops.convert_to_numpy(y))
            if check_labels is not None:
                check_labels(y)
            y = y.reshape(-1)
            if len(y) != len(x):
                raise ValueError(f"Calibration data has {len(x)} images but {len(y)} labels.")
        if len(x):
            empty = False
            yield x, y
    if empty:
        raise ValueError("The calibration data is empty.")


def _array_batches(images, labels, batch_size):
    n = int(images.shape[0]) if len(images.shape) else 0
    if labels is not None and int(np.size(labels)) != n:
        raise ValueError(f"Calibration data has {n} images but {int(np.size(labels))} labels.")
    step = batch_size or max(n, 1)
    for start in range(0, n, step):
        yield images[start:start + step], None if labels is None else labels[start:start + step]


def _iterated_batches(data, labels_required):
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) > 2 and item[2] is not None:
            raise ValueError(_UNWEIGHTED)  # its weights were dropped without a word
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            yield item[0], item[1]
        elif labels_required:
            raise ValueError("Calibration needs labels: each batch must be (images, labels).")
        elif isinstance(item, dict):
            raise ValueError("Batches must be images or (images, labels) pairs, not dicts.")
        else:
            yield item, None


def held_out_arrays(data, labels_required=True):
    """All of `held_out_batches(data, labels_required)` at once: NumPy
    `(images, labels)`, `labels` None where the data has none."""
    pairs = list(held_out_batches(data, labels_required))
    images = np.concatenate([x for x, _ in pairs])
    if any(y is None for _, y in pairs):
        return images, None
    return images, np.concatenate([y for _, y in pairs])


def held_out_passes(data, labels_required=True, batch_size=None, verbose=0, check_labels=None):
    """A function that reads `data` once more at each call, as
    `held_out_batches(data, labels_required, batch_size, verbose,
    check_labels)` does, for the
    calibrations that go over the held-out data many times (DMNN's).

    Arrays are sliced, and data that can be iterated again (a
    `tf.data.Dataset`, a `keras.utils.PyDataset`, a list of batches) is
    read anew at each call, so one batch at a time is held, whatever the
    size of the data; only a one-shot iterator (a generator) is read into
    memory, once.

    Returns:
        A function of no arguments returning an iterator of NumPy
        `(images, labels)` batches (`labels` None where the data has none).
    """
    if isinstance(data, collections.abc.Iterator):
        images, labels = held_out_arrays(data, labels_required)
        data = images if labels is None else (images, labels)
    return lambda: held_out_batches(data, labels_required, batch_size, verbose, check_labels)
