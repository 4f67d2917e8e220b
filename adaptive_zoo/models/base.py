"""What every model of the zoo shares: the images it takes, its classes, the
input checks and the base of its config."""

import keras

from adaptive_zoo.models.inputs import check_image_batch

__all__ = ["ZooModel"]


class ZooModel(keras.Model):
    """Base of the zoo's model families (multi-exit nets, DMNN).

    Args:
        input_shape: `(H, W, C)` of the images the model takes.
        num_classes: number of logits, a positive integer.
        **kwargs: `keras.Model` arguments (`name`, ...). A `dtype` other
            than the global policy is refused: set
            `keras.mixed_precision.set_global_policy` before building.

    Example:
    ```python
    model = adaptive_zoo.MSDNetCIFARAnytime(num_classes=10)
    model.input_shape  # (None, 32, 32, 3), as on keras.applications models
    ```
    """

    def __init__(self, input_shape, num_classes, **kwargs):
        if kwargs.get("dtype") is not None:
            policy = keras.dtype_policies.get(kwargs["dtype"]).name
            if policy != keras.config.dtype_policy().name:
                # A model's own dtype does not reach the layers it builds.
                raise ValueError(
                    f"dtype={policy!r} would set the model's policy but not its layers'. Set it for "
                    "the whole model before building it: "
                    f"keras.mixed_precision.set_global_policy({policy!r})."
                )
        super().__init__(**kwargs)
        try:
            self.image_shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            self.image_shape = ()
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) of positive integers, got {input_shape!r}.")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self._compiled_fns = {}

    @property
    def input_shape(self):
        """`(None, H, W, C)`: the batches the model takes."""
        return (None,) + self.image_shape

    def _check_inputs(self, inputs):
        check_image_batch(self.name, self.image_shape, inputs)

    def _family_config(self):
        """The constructor arguments of the subclass's architecture."""
        raise NotImplementedError

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
        }
        config.update(self._family_config())
        return config
