"""Convolution + BatchNorm + activation, with PyTorch's padding and BatchNorm epsilon.

The authors' networks pad strided convolutions symmetrically (`padding=k//2`),
which Keras' `"same"` does not do on even inputs, and use BatchNorm with
epsilon 1e-5 and momentum 0.1 (Keras: 0.9). This block reproduces both, so that
converted checkpoints compute the authors' function.
"""

import math

import keras
import numpy as np
from keras import ops

from adaptive_zoo import cost, fast_path
from adaptive_zoo.layers.base import Layer

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class AuthorsInit(keras.initializers.Initializer):
    """The authors' initialization, drawn with NumPy.

    - `"conv"`: normal with std `sqrt(2 / (k_h * k_w * C_out))` (He, fan-out),
      as MSDNet's and RANet's code initialize convolutions;
    - `"dense"`: uniform in `+-1 / sqrt(fan_in)`, PyTorch's default for a
      linear layer's weights.

    NumPy draws (seeded by `keras.utils.set_random_seed`) rather than backend
    random ops: on JAX every new weight shape compiles a random program
    (measured about 0.3 s each, 25 s for one CIFAR MSDNet); NumPy builds
    the same model in about a second on every backend.

    Args:
        kind: `"conv"` or `"dense"`.
        seed: optional int for a private generator (default: NumPy's global
            generator).
    """

    def __init__(self, kind="conv", seed=None):
        if kind not in ("conv", "dense"):
            raise ValueError(f"kind must be 'conv' or 'dense', got {kind!r}.")
        self.kind = kind
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, shape, dtype=None):
        rng = self._rng if self._rng is not None else np.random
        if self.kind == "conv":
            std = math.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
            value = rng.normal(0.0, std, size=shape)
        else:
            bound = 1.0 / math.sqrt(shape[0])
            value = rng.uniform(-bound, bound, size=shape)
        return ops.convert_to_tensor(value.astype("float32"), dtype=dtype)

    def get_config(self):
        return {"kind": self.kind, "seed": self.seed}


def batch_norm(name=None):
    """A BatchNormalization layer with the authors' (PyTorch) constants."""
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )


ACTIVATIONS = (None, "relu", "relu6")


def activate(x, activation):
    """`None` (identity), `"relu"` or `"relu6"`."""
    if activation == "relu":
        return ops.relu(x)
    if activation == "relu6":
        return ops.relu6(x)
    return x


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class ConvBNAct(Layer):
    """Convolution (optionally depthwise), BatchNorm, optional ReLU or ReLU6;
    symmetric padding `k // 2` as PyTorch.

    At inference BatchNorm is folded into the convolution's kernel and bias
    (one pass fewer over the activations; the same function).

    Args:
        filters: output channels (ignored for depthwise: same as input).
        kernel_size: odd square kernel size.
        strides: convolution stride.
        depthwise: a depthwise convolution (groups = channels).
        use_bias: whether the convolution has a bias (bias-free by default).
        activation: `"relu"` (default), `"relu6"` or `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Returns:
        A tensor `(batch, H_out, W_out, filters)`, with
        `H_out = (H + 2 * (k // 2) - k) // strides + 1`.

    Example:
    ```python
    block = ConvBNAct(16, kernel_size=3, strides=2)
    y = block(keras.ops.ones((2, 32, 32, 3)))  # (2, 16, 16, 16)
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        depthwise=False,
        use_bias=False,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.use_bias = bool(use_bias)
        self.activation = activation
        self.padding = self.kernel_size // 2
        # Stride 1 with an odd kernel: "same" pads k//2 on each side, as
        # PyTorch does. Strided: pad explicitly, then "valid".
        self._explicit_pad = self.strides > 1 and self.padding > 0
        padding = "valid" if self._explicit_pad else "same"
        if self.depthwise:
            self.conv = keras.layers.DepthwiseConv2D(
                self.kernel_size, strides=self.strides, padding=padding, use_bias=self.use_bias,
                depthwise_initializer=AuthorsInit("conv"), name="conv",
            )
        else:
            self.conv = keras.layers.Conv2D(
                self.filters, self.kernel_size, strides=self.strides, padding=padding,
                use_bias=self.use_bias, kernel_initializer=AuthorsInit("conv"), name="conv",
            )
        self.bn = batch_norm(name="bn")

    def build(self, input_shape):
        n, h, w, c = input_shape
        if self._explicit_pad:
            grow = lambda d: None if d is None else d + 2 * self.padding  # noqa: E731
            input_shape = (n, grow(h), grow(w), c)
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        if training:
            return activate(self.bn(self._training_conv(inputs), training=True), self.activation)
        return fast_path.activate_fresh(self._folded_conv(inputs), self.activation)

    def _training_conv(self, x):
        """Training: the Keras convolution layer on the padded input; a
        depthwise one as `fast_path.depthwise_conv` (on JAX's CPU backend
        XLA's grouped convolution is slow, forward and backward)."""
        if self.depthwise:  # in the layer's dtype, as its call would cast
            dtype = self.conv.compute_dtype
            y = fast_path.depthwise_conv(ops.cast(x, dtype), ops.cast(self.conv.kernel, dtype),
                                         self.strides, self.padding)
            return y + ops.cast(self.conv.bias, dtype) if self.use_bias else y
        if self._explicit_pad:
            p = self.padding
            x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        return self.conv(x)

    def _folded_conv(self, x):
        """Inference: BatchNorm folded into the convolution (one pass fewer)."""
        kernel, shift = fast_path.memoized(self, self._fold, self._fold_variables())
        return fast_path.conv2d(x, kernel, shift, self.strides, self.padding, self.depthwise)

    def _fold_variables(self):
        bn = self.bn
        variables = [self.conv.kernel, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance]
        return variables + ([self.conv.bias] if self.use_bias else [])

    def _fold(self, kernel, gamma, beta, mean, variance, bias=None):
        """The convolution's kernel and bias with BatchNorm folded in,
        computed in the variables' dtype and cast to the layer's compute
        dtype (they differ under mixed precision); the kernel laid out as
        the backend's convolution reads it fastest
        (`fast_path.inference_kernel`)."""
        kernel, gamma, beta, mean, variance = (
            ops.cast(t, self.variable_dtype) for t in (kernel, gamma, beta, mean, variance))
        scale = gamma * ops.rsqrt(variance + self.bn.epsilon)
        shift = beta - mean * scale
        if bias is not None:
            shift = shift + ops.cast(bias, self.variable_dtype) * scale
        if self.depthwise:  # kernel (k, k, C, 1): one output channel per input
            kernel = kernel * ops.reshape(scale, (-1, 1))
        else:
            kernel = kernel * scale
        kernel = fast_path.inference_kernel(ops.cast(kernel, self.compute_dtype), self.depthwise)
        return kernel, ops.cast(shift, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        out = lambda d: None if d is None else self.output_size(d)  # noqa: E731
        return (n, out(h), out(w), c if self.depthwise else self.filters)

    def output_size(self, size):
        return cost.conv_output_size(size, self.kernel_size, self.strides, self.padding)

    def flops(self, input_shape):
        """Multiply-adds for one image of shape `(H, W, C)`."""
        h, w, c = input_shape
        ho, wo = self.output_size(h), self.output_size(w)
        c_out = c if self.depthwise else self.filters
        total = cost.conv_flops(c, c_out, self.kernel_size, ho, wo, groups=c if self.depthwise else 1)
        if self.activation:
            total += cost.relu_flops(ho, wo, c_out)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            depthwise=self.depthwise,
            use_bias=self.use_bias,
            activation=self.activation,
        )
        return config
