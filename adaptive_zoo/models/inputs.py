"""Input checks shared by every model of the zoo."""

__all__ = ["check_image_batch"]


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
