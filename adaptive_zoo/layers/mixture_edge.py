"""MixtureEdge: one edge of a Convolutional Neural Mixture Model (Ruiz and
Verbeek, ICCV 2019).

A CNMM is a grid of feature maps (depth x scale); every edge between two of
them is a convolution block with a learned probability of being kept. Every
choice of kept edges is one CNN of the mixture, and they all share weights.

    outputs = conv_block(inputs)          # strided ("down"), or upsampled ("up")
    p = sigmoid(keep_logit)               # the edge's mixing weight

Training draws a relaxed Bernoulli (Concrete) mask per image with probability
`p`; inference uses `p` itself, the expectation pass. A node mixes its incoming
edges with `mix_node`: the sum of `weight * outputs`, normalized by the sum of
the weights, so a node keeps its scale whichever of its edges remain.
"""

import math

import keras
from keras import ops

from adaptive_zoo.checks import positive_integer
from adaptive_zoo.layers.base import Layer
from adaptive_zoo.layers.conv_bn import ConvBNAct

__all__ = ["DIRECTIONS", "MixtureEdge", "mix_node"]

DIRECTIONS = ("same", "down", "up")


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MixtureEdge(Layer):
    """One edge of a CNMM: a convolution block and its learned keep probability.

    Args:
        filters: output channels (the width of the node the edge feeds).
        direction: `"same"` (same scale: 3x3 convolution), `"down"` (to the
            next coarser scale: stride 2) or `"up"` (to the next finer scale:
            the convolution runs at the coarse scale, then a nearest-neighbour
            2x upsampling, which costs nothing under the zoo's convention).
        kernel_size: odd convolution kernel size.
        keep_logit: initial logit of the keep probability (2.0: kept with
            probability 0.88 at first, as a gate that starts mostly on).
        temperature: temperature of the relaxed Bernoulli samples in training
            (2/3, the value Maddison et al. recommend for Concrete relaxations;
            the CNMM paper does not state one).
        seed: seed of the layer's `keras.random.SeedGenerator`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the source node `(batch, H, W, C)`.
        training: training mode: a fresh relaxed Bernoulli sample per image
            (also under `jax.jit`, through the seed state).

    Returns:
        `(outputs, weight)`: the convolution block's outputs
        `(batch, H', W', filters)` and the edge's mixing weight: in training a
        `(batch, 1, 1, 1)` sample in (0, 1), at inference the keep probability
        (a scalar).

    Example:
    ```python
    edge = MixtureEdge(32, direction="down")
    outputs, weight = edge(keras.ops.ones((2, 16, 16, 16)))  # (2, 8, 8, 32), p
    ```
    """

    def __init__(self, filters, direction="same", kernel_size=3, keep_logit=2.0,
                 temperature=2.0 / 3.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        if not math.isfinite(float(keep_logit)):
            raise ValueError(f"keep_logit must be a finite number, got {keep_logit!r}.")
        self.filters = positive_integer(filters, "filters")
        self.direction = direction
        self.kernel_size = positive_integer(kernel_size, "kernel_size")
        self.keep_logit_init = float(keep_logit)
        self.temperature = float(temperature)
        self.seed = seed
        self.block = ConvBNAct(self.filters, self.kernel_size,
                               strides=2 if direction == "down" else 1, name="block")
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.input_spec = keras.InputSpec(ndim=4)  # the source node (batch, H, W, C)

    def build(self, input_shape):
        self.block.build(input_shape)
        self.keep_logit = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.keep_logit_init),
            name="keep_logit")

    def keep_probability(self):
        """The learned probability that the edge is kept (a scalar tensor)."""
        return ops.sigmoid(self.keep_logit)

    def sample(self, batch):
        """A relaxed Bernoulli (Concrete) mask per image, `(batch, 1, 1, 1)`."""
        uniform = keras.random.uniform((batch, 1, 1, 1), minval=1e-6, maxval=1.0 - 1e-6,
                                       seed=self.seed_generator)
        noise = ops.log(uniform) - ops.log(1.0 - uniform)
        logit = ops.cast(self.keep_logit, noise.dtype)
        return ops.sigmoid((logit + noise) / self.temperature)

    def call(self, inputs, training=None):
        outputs = self.block(inputs, training=training)
        if self.direction == "up":
            outputs = ops.repeat(ops.repeat(outputs, 2, axis=1), 2, axis=2)
        if training:
            weight = ops.cast(self.sample(ops.shape(inputs)[0]), outputs.dtype)
        else:
            weight = ops.cast(self.keep_probability(), outputs.dtype)
        return outputs, weight

    def compute_output_shape(self, input_shape):
        shape = self.block.compute_output_shape(input_shape)
        if self.direction == "up":
            grow = lambda d: None if d is None else 2 * d  # noqa: E731
            shape = (shape[0], grow(shape[1]), grow(shape[2]), shape[3])
        return shape, ()

    def flops(self, input_shape):
        """Multiply-adds for one source image of shape `(H, W, C)` (the
        upsampling counts zero, as resizing does in the zoo's convention)."""
        return self.block.flops(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            direction=self.direction,
            kernel_size=self.kernel_size,
            keep_logit=self.keep_logit_init,
            temperature=self.temperature,
            seed=self.seed,
        )
        return config


def mix_node(edge_results, size=None):
    """A node of the mixture: the normalized weighted sum of its edges.

    Args:
        edge_results: a non-empty list of `(outputs, weight)` from
            `MixtureEdge` calls into the same node.
        size: optional `(H, W)` of the node; outputs of `"up"` edges that
            are larger (an odd-sized finer scale) are cropped to it.

    Returns:
        `sum(weight * outputs) / sum(weight)`.
    """
    if not edge_results:
        raise ValueError("A node needs at least one incoming edge.")
    crop = (lambda t: t) if size is None else (lambda t: t[:, : size[0], : size[1], :])
    if len(edge_results) == 1 and len(ops.shape(edge_results[0][1])) == 0:
        # One edge at inference: w * f / w is f (no pass over the activations).
        return crop(edge_results[0][0])
    total, weights = None, None
    for outputs, weight in edge_results:
        term = crop(outputs) * weight
        total = term if total is None else total + term
        weights = weight if weights is None else weights + weight
    return total / ops.maximum(weights, 1e-6)
