"""Input checks and batching shared by every model of the zoo."""

from keras import ops

__all__ = ["check_image_batch", "image_batches"]


def check_image_batch(name, image_shape, inputs):
    """Raise a `ValueError` naming the problem unless `inputs` is a batch of
    NHWC images of `image_shape` `(H, W, C)`."""
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
