"""The base of this package's layers: Keras layers with a lighter call at
PyTorch inference (see `fast_path.may_call_directly`)."""

import keras

from adaptive_zoo import fast_path

__all__ = ["Layer"]


class Layer(keras.layers.Layer):
    """A `keras.layers.Layer` whose explicit inference calls on PyTorch run
    `call` directly, without Keras' per-call machinery.

    Everywhere else (training, gradients recorded, TensorFlow, JAX, symbolic
    building, unbuilt layers, non-float32 policies) it is `keras.layers.Layer`
    unchanged. Subclasses pass `training` on to their sublayers.
    """

    def __call__(self, *args, **kwargs):
        if fast_path.may_call_directly(self, args, kwargs):
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)
