"""Multi-scale dense building blocks (MSDNet, Huang et al. 2018) and their exit.

Features live on several scales at once, finest first: a list of tensors
`[(B, H, W, C0), (B, H/2, W/2, C1), ...]`. The public layer is
`MultiScaleDenseExit`, the classifier attached to the coarsest scale; the stem,
the dense layer and the transition are the building blocks beside it.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from adaptive_zoo import cost
from adaptive_zoo import fast_path
from adaptive_zoo.checks import positive_integer
from adaptive_zoo.layers.base import Layer
from adaptive_zoo.layers.conv_bn import AuthorsInit, ConvBNAct, batch_norm


def _shape_hwc(shape):
    return tuple(int(d) for d in shape[-3:])


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDStem(Layer):
    """The first layer of MSDNet: one feature map per scale.

    CIFAR style: 3x3 conv-BN-ReLU at full resolution. ImageNet style: 7x7
    stride-2 conv (with bias) + BN + ReLU + 3x3 stride-2 max-pool. Each coarser
    scale is a 3x3 stride-2 conv-BN-ReLU of the previous one.

    Args:
        channels: list of output channels, one per scale (finest first).
        imagenet_stem: use the ImageNet stem.

    Returns:
        A list of tensors, one per scale.
    """

    def __init__(self, channels, imagenet_stem=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = list(channels)
        self.imagenet_stem = imagenet_stem
        self.convs = []
        for i, c in enumerate(self.channels):
            if i == 0 and imagenet_stem:
                conv = ConvBNAct(c, kernel_size=7, strides=2, use_bias=True, name="conv_0")
            else:
                conv = ConvBNAct(c, 3, strides=1 if i == 0 else 2, name=f"conv_{i}")
            self.convs.append(conv)

    def build(self, input_shape):
        shape = input_shape
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if i == 0 and self.imagenet_stem:
                shape = self._pool_shape(shape)

    @staticmethod
    def _pool_shape(shape):
        n, h, w, c = shape
        return (n, cost.conv_output_size(h, 3, 2, 1), cost.conv_output_size(w, 3, 2, 1), c)

    def call(self, inputs, training=None):
        outputs = []
        x = inputs
        for i, conv in enumerate(self.convs):
            x = conv(x, training=training)
            if i == 0 and self.imagenet_stem:
                x = fast_path.max_pool(x, 3, strides=2, padding=1)
            outputs.append(x)
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = []
        shape = input_shape
        for i, conv in enumerate(self.convs):
            shape = conv.compute_output_shape(shape)
            if i == 0 and self.imagenet_stem:
                shape = self._pool_shape(shape)
            shapes.append(shape)
        return shapes

    def flops(self, input_shape):
        total = 0
        shape = (None,) + _shape_hwc(input_shape)
        for i, conv in enumerate(self.convs):
            total += conv.flops(shape[1:])
            shape = conv.compute_output_shape(shape)
            if i == 0 and self.imagenet_stem:
                shape = self._pool_shape(shape)
                total += cost.pool_flops(shape[3], shape[1], shape[2], 3)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, imagenet_stem=self.imagenet_stem)
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDConv(Layer):
    """MSDNet's ConvBN: optional 1x1 bottleneck, then a 3x3 conv (stride 1 or 2).

    Args:
        filters: output channels.
        bottleneck_width: the bottleneck has `min(C_in, bottleneck_width *
            filters)` channels; `None` for no bottleneck.
        strides: 1 ("normal") or 2 ("down").
    """

    def __init__(self, filters, bottleneck_width=None, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.bottleneck_width = bottleneck_width
        self.strides = strides
        self.bottleneck = None
        self.conv = ConvBNAct(filters, 3, strides=strides, name="conv")

    def build(self, input_shape):
        shape = input_shape
        if self.bottleneck_width is not None:
            inner = min(int(input_shape[-1]), self.bottleneck_width * self.filters)
            self.bottleneck = ConvBNAct(inner, 1, name="bottleneck")
            self.bottleneck.build(shape)
            shape = self.bottleneck.compute_output_shape(shape)
        self.conv.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.bottleneck is not None:
            x = self.bottleneck(x, training=training)
        return self.conv(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def flops(self, input_shape):
        shape = _shape_hwc(input_shape)
        total = 0
        if self.bottleneck_width is not None:
            inner = min(shape[-1], self.bottleneck_width * self.filters)
            total += cost.conv_flops(shape[2], inner, 1, shape[0], shape[1])
            total += cost.relu_flops(shape[0], shape[1], inner)
            shape = shape[:2] + (inner,)
        return total + self.conv.flops(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            bottleneck_width=self.bottleneck_width,
            strides=self.strides,
        )
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDLayer(Layer):
    """One dense layer of MSDNet across scales (output = concat(input, new)).

    On the finest kept scale a normal branch adds `growth_rate * gr_factor[s]`
    channels; on every coarser scale a strided branch from the finer scale and
    a normal branch each add half of that, concatenated as
    `[input, down, normal]`. When `in_scales > out_scales` the finest input
    scale is only used as the strided input of the first output scale.

    Args:
        growth_rate: base growth rate.
        gr_factor: per-scale growth factors (all scales of the network).
        bn_factor: per-scale bottleneck factors, or `None` for no bottleneck.
        in_scales: number of input scales (the coarsest ones).
        out_scales: number of output scales.
    """

    def __init__(self, growth_rate, gr_factor, bn_factor, in_scales, out_scales, **kwargs):
        super().__init__(**kwargs)
        self.growth_rate = growth_rate
        self.gr_factor = list(gr_factor)
        self.bn_factor = None if bn_factor is None else list(bn_factor)
        self.in_scales = in_scales
        self.out_scales = out_scales
        n_scales = len(self.gr_factor)
        self.offset = n_scales - out_scales
        self.discard = in_scales - out_scales
        if self.discard not in (0, 1):
            raise ValueError(
                f"An MSD layer drops at most one scale; got in_scales={in_scales}, "
                f"out_scales={out_scales}."
            )
        bn = (lambda s: None) if self.bn_factor is None else (lambda s: self.bn_factor[s])
        self.down = []
        self.normal = []
        for j in range(out_scales):
            s = self.offset + j
            new = growth_rate * self.gr_factor[s]
            if j == 0 and self.discard == 0:
                self.down.append(None)
                self.normal.append(MSDConv(new, bn(s), 1, name=f"normal_{j}"))
            else:
                self.down.append(MSDConv(new // 2, bn(s - 1), 2, name=f"down_{j}"))
                self.normal.append(MSDConv(new // 2, bn(s), 1, name=f"normal_{j}"))

    def _pairs(self, items):
        """(finer, same) inputs of each output scale."""
        if self.discard:
            return [(items[j], items[j + 1]) for j in range(self.out_scales)]
        return [(None, items[0])] + [(items[j - 1], items[j]) for j in range(1, self.out_scales)]

    def build(self, input_shape):
        for (finer, same), down, normal in zip(self._pairs(input_shape), self.down, self.normal):
            if down is not None:
                down.build(finer)
            normal.build(same)

    def call(self, inputs, training=None, reserve=None, scales=None):
        """The layer on each output scale (or on some of them).

        Args:
            inputs: the feature maps of the input scales, finest first
                (`None` for one that no computed output scale reads).
            training: Keras' training flag.
            reserve: per output scale, channels to leave free after it for
                the block's next layers to fill in place
                (`fast_path.concatenate_channels`; PyTorch inference only,
                the values are the same either way). `None`: none.
            scales: the positions (in the output list) of the output scales
                to compute; `None`: all. Output scale `j` reads input scales
                `j` and `j + 1` if the layer drops a scale, else `j` and
                (for `j > 0`) `j - 1`.

        Returns:
            The feature maps of the output scales, finest first; `None` at
            the positions not in `scales`.
        """
        outputs = []
        reserve = reserve or [0] * self.out_scales
        pairs = zip(self._pairs(inputs), self.down, self.normal, reserve)
        for j, ((finer, same), down, normal, spare) in enumerate(pairs):
            if scales is not None and j not in scales:
                outputs.append(None)
                continue
            parts = [same]
            if down is not None:
                parts.append(down(finer, training=training))
            parts.append(normal(same, training=training))
            outputs.append(fast_path.concatenate_channels(parts, reserve=spare))
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = []
        for (_, same), down, normal in zip(self._pairs(input_shape), self.down, self.normal):
            c = same[-1]
            if down is not None:
                c += down.filters
            c += normal.filters
            shapes.append(tuple(same[:-1]) + (c,))
        return shapes

    def flops(self, input_shapes, scales=None):
        """MUL-ADDs per image, of the output scales at `scales` (positions,
        as in `call`; `None`: all)."""
        total = 0
        pairs = zip(self._pairs(input_shapes), self.down, self.normal)
        for j, ((finer, same), down, normal) in enumerate(pairs):
            if scales is not None and j not in scales:
                continue
            if down is not None:
                total += down.flops(finer)
            total += normal.flops(same)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            growth_rate=self.growth_rate,
            gr_factor=self.gr_factor,
            bn_factor=self.bn_factor,
            in_scales=self.in_scales,
            out_scales=self.out_scales,
        )
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDTransition(Layer):
    """1x1 conv-BN-ReLU on each scale, reducing channels.

    Args:
        channels: output channels per scale (finest kept scale first).
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = list(channels)
        self.convs = [ConvBNAct(c, 1, name=f"conv_{i}") for i, c in enumerate(self.channels)]

    def build(self, input_shape):
        for conv, shape in zip(self.convs, input_shape):
            conv.build(shape)

    def call(self, inputs, training=None, scales=None):
        """The 1x1 conv of each scale; with `scales` (positions in the list),
        only those, `None` at the others."""
        return [
            conv(x, training=training) if scales is None or j in scales else None
            for j, (conv, x) in enumerate(zip(self.convs, inputs))
        ]

    def compute_output_shape(self, input_shape):
        return [conv.compute_output_shape(s) for conv, s in zip(self.convs, input_shape)]

    def flops(self, input_shapes, scales=None):
        """MUL-ADDs per image, of the scales at `scales` (`None`: all)."""
        return sum(conv.flops(_shape_hwc(s)) for j, (conv, s) in enumerate(zip(self.convs, input_shapes))
                   if scales is None or j in scales)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MultiScaleDenseExit(Layer):
    """An exit classifier on the coarsest scale of a multi-scale network.

    Two 3x3 stride-2 conv-BN-ReLU, global average pooling, dense. This is the
    head of MSDNet and RANet (the authors' `AvgPool2d(2)` sees a 2x2 map in
    every published configuration, where it equals the global average used
    here, which also serves other input sizes).

    Args:
        num_classes: number of logits.
        width: channels of the two convolutions; `None` keeps the input's
            channel count (the ImageNet head), CIFAR heads use 128.

    Returns:
        Logits `(batch, num_classes)`. Called on a list of scales, it uses the
        last (coarsest) one.

    Example:
    ```python
    head = MultiScaleDenseExit(num_classes=10, width=128)
    logits = head([keras.ops.ones((2, 8, 8, 64))])  # (2, 10)
    ```
    """

    def __init__(self, num_classes, width=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = positive_integer(num_classes, "num_classes")
        self.width = None if width is None else positive_integer(width, "width")
        self.conv1 = None
        self.conv2 = None
        self.dense = keras.layers.Dense(num_classes, kernel_initializer=AuthorsInit("dense"), name="dense")

    @staticmethod
    def _coarsest(x):
        """The coarsest scale of a list of scales (tensors or their shapes),
        or the one tensor or shape given."""
        last = x[-1] if isinstance(x, (list, tuple)) and len(x) else None
        is_dimension = last is None or isinstance(last, (int, np.integer))  # x is one shape
        return x if is_dimension else last

    def build(self, input_shape):
        shape = self._coarsest(input_shape)
        if len(shape) != 4:
            raise ValueError(
                f"{self.name} takes the coarsest scale (batch, H, W, C), or a list of scales "
                f"ending with it; got shape {tuple(shape)}."
            )
        width = self.width or int(shape[-1])
        self.conv1 = ConvBNAct(width, 3, strides=2, name="conv1")
        self.conv2 = ConvBNAct(width, 3, strides=2, name="conv2")
        self.conv1.build(shape)
        shape = self.conv1.compute_output_shape(shape)
        self.conv2.build(shape)
        self.dense.build((None, width))

    def call(self, inputs, training=None):
        x = self._coarsest(inputs)
        x = self.conv1(x, training=training)
        x = self.conv2(x, training=training)
        x = ops.mean(x, axis=(1, 2))
        return fast_path.call_layer(self.dense, x, training=training)

    def compute_output_shape(self, input_shape):
        return (self._coarsest(input_shape)[0], self.num_classes)

    def flops(self, input_shape):
        h, w, c = _shape_hwc(self._coarsest(input_shape))
        width = self.width or c
        total = self.conv1.flops((h, w, c))
        h, w = self.conv1.output_size(h), self.conv1.output_size(w)
        total += self.conv2.flops((h, w, width))
        h, w = self.conv2.output_size(h), self.conv2.output_size(w)
        total += width * h * w  # the average pool, one op per element read
        return total + cost.dense_flops(width, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, width=self.width)
        return config



# ---------------------------------------------------------------------- #
# RANet (Yang et al., CVPR 2020): sub-networks at one resolution each, fused
# from coarse to fine. They reuse MSDConv (the authors' ConvBN) and the exit.
# ---------------------------------------------------------------------- #


def aligned_interpolation_matrix(size_in, size_out):
    """Weights of 1-D linear interpolation with corner alignment.

    Output position `i` samples the input at `i * (size_in - 1) / (size_out - 1)`
    (0 when `size_out == 1`), mixing its two neighbours linearly: the rule
    of PyTorch's `interpolate(..., mode="bilinear", align_corners=True)`
    along one axis.

    Args:
        size_in: input length.
        size_out: output length.

    Returns:
        A float32 NumPy array `(size_out, size_in)` whose rows sum to 1.

    Example:
    ```python
    aligned_interpolation_matrix(2, 3)
    # [[1, 0], [0.5, 0.5], [0, 1]]
    ```
    """
    size_in, size_out = int(size_in), int(size_out)
    if size_in < 1 or size_out < 1:
        raise ValueError(f"Sizes must be positive, got {size_in} -> {size_out}.")
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    source = np.arange(size_out, dtype=np.float64) * scale
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix.astype("float32")


def resize_bilinear_aligned(images, size):
    """Bilinear resizing with corner alignment, channels last.

    Computes what PyTorch's `F.interpolate(x, size, mode="bilinear",
    align_corners=True)` computes, for NHWC tensors: on TensorFlow and
    PyTorch with their own op (`fast_path.resize_bilinear_aligned`, faster),
    elsewhere with `keras.ops`: one interpolation matrix per spatial axis,
    applied by `einsum`. A size that does not change is returned as is (the
    interpolation is the identity there). Resizing counts zero FLOPs in the
    zoo's convention.

    Args:
        images: tensor `(batch, H, W, C)` with static `H` and `W`.
        size: `(H_out, W_out)`.

    Returns:
        Tensor `(batch, H_out, W_out, C)`.

    Example:
    ```python
    x = keras.ops.ones((2, 8, 8, 16))
    y = resize_bilinear_aligned(x, (16, 16))  # (2, 16, 16, 16)
    ```
    """
    h_in, w_in = int(images.shape[1]), int(images.shape[2])
    h_out, w_out = int(size[0]), int(size[1])
    x = images
    if (h_out, w_out) == (h_in, w_in):
        return x
    native = fast_path.resize_bilinear_aligned(x, (h_out, w_out))
    if native is not None:
        return native
    if h_out != h_in:
        rows = ops.convert_to_tensor(aligned_interpolation_matrix(h_in, h_out), dtype=x.dtype)
        x = ops.einsum("oh,bhwc->bowc", rows, x)
    if w_out != w_in:
        cols = ops.convert_to_tensor(aligned_interpolation_matrix(w_in, w_out), dtype=x.dtype)
        x = ops.einsum("pw,bhwc->bhpc", cols, x)
    return x


def _positive(value, what):
    value = int(value)
    if value < 1:
        raise ValueError(f"{what} must be at least 1 channel, got {value}.")
    return value


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class RANetStem(Layer):
    """RANet's base features: one feature map per sub-network.

    Built from the highest resolution down: the first convolution sees the
    image (CIFAR: 3x3 conv-BN-ReLU; ImageNet: 7x7 stride-2 conv with bias,
    BN, ReLU, 3x3 stride-2 max-pool); each further one is a 3x3 conv-BN-ReLU
    of the previous feature, with stride 2 only where the sub-network's scale
    index changes.

    Args:
        channels: output channels per sub-network, lowest resolution first
            (`n_channels * gr_factor[i]`).
        scale_list: scale index per sub-network, lowest resolution first
            (e.g. `(1, 2, 3, 3)`).
        imagenet_stem: use the ImageNet first convolution.
        **kwargs: base layer arguments.

    Returns:
        A list of tensors, lowest resolution first (the order of the
        sub-networks).

    Example:
    ```python
    stem = RANetStem([64, 32, 16, 16], [1, 2, 3, 3])
    feats = stem(keras.ops.ones((2, 32, 32, 3)))  # 8x8x64, 16x16x32, 32x32x16, 32x32x16
    ```
    """

    def __init__(self, channels, scale_list, imagenet_stem=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]
        self.scale_list = [int(s) for s in scale_list]
        if len(self.channels) != len(self.scale_list):
            raise ValueError(
                f"channels {self.channels} and scale_list {self.scale_list} need one entry "
                "per sub-network."
            )
        self.imagenet_stem = bool(imagenet_stem)
        # The convolutions in execution order: highest resolution first.
        channels_hr, scales_hr = self.channels[::-1], self.scale_list[::-1]
        self.convs = []
        for i, c in enumerate(channels_hr):
            if i == 0 and self.imagenet_stem:
                conv = ConvBNAct(c, 7, strides=2, use_bias=True, name="conv_0")
            elif i == 0:
                conv = ConvBNAct(c, 3, strides=1, name="conv_0")
            else:
                strides = 1 if scales_hr[i] == scales_hr[i - 1] else 2
                conv = ConvBNAct(c, 3, strides=strides, name=f"conv_{i}")
            self.convs.append(conv)

    def _shapes(self, input_shape):
        """Output shapes in execution order (highest resolution first)."""
        shapes, shape = [], tuple(input_shape)
        for i, conv in enumerate(self.convs):
            shape = conv.compute_output_shape(shape)
            if i == 0 and self.imagenet_stem:
                shape = MSDStem._pool_shape(shape)
            shapes.append(shape)
        return shapes

    def build(self, input_shape):
        shapes = [tuple(input_shape)] + self._shapes(input_shape)
        for conv, shape in zip(self.convs, shapes):
            conv.build(shape)

    def call(self, inputs, training=None):
        outputs, x = [], inputs
        for i, conv in enumerate(self.convs):
            x = conv(x, training=training)
            if i == 0 and self.imagenet_stem:
                x = fast_path.max_pool(x, 3, strides=2, padding=1)
            outputs.append(x)
        return outputs[::-1]

    def compute_output_shape(self, input_shape):
        return self._shapes(input_shape)[::-1]

    def flops(self, input_shape):
        """Multiply-adds for one image; `input_shape` ends with `(H, W, C)`."""
        shape = (None,) + _shape_hwc(input_shape)
        total = 0
        for i, conv in enumerate(self.convs):
            total += conv.flops(shape[1:])
            shape = conv.compute_output_shape(shape)
            if i == 0 and self.imagenet_stem:
                shape = MSDStem._pool_shape(shape)
                total += cost.pool_flops(shape[3], shape[1], shape[2], 3)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels, scale_list=self.scale_list, imagenet_stem=self.imagenet_stem
        )
        return config


class _RANetBlockBase(Layer):
    """Shared parts of RANet's blocks: the optional 1x1 transition."""

    def _make_transition(self, transition, reduction):
        self.transition = bool(transition)
        self.reduction = float(reduction)
        self.trans = None

    def _build_transition(self, channels):
        if self.transition:
            out = _positive(math.floor(self.reduction * channels), "The transition")
            self.trans = ConvBNAct(out, 1, name="trans")

    def _transition_channels(self, channels):
        return math.floor(self.reduction * channels) if self.transition else channels

    def _transition_flops(self, h, w, channels):
        if not self.transition:
            return 0
        return cost.conv_flops(channels, self._transition_channels(channels), 1, h, w) + \
            cost.relu_flops(h, w, self._transition_channels(channels))


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class RANetBlock(_RANetBlockBase):
    """A dense block of one RANet sub-network (no fusion).

    Each of `num_layers` layers appends `growth_rate` channels computed by a
    bottleneck ConvBN (`MSDConv`) from everything before it; an optional 1x1
    conv-BN-ReLU transition then keeps `floor(reduction * C)` channels.

    Args:
        num_layers: dense layers in the block.
        growth_rate: channels each layer adds.
        bn_factor: bottleneck width factor of the layers.
        transition: end with a transition.
        reduction: the transition's compression.
        **kwargs: base layer arguments.

    Returns:
        A flat list `[block_output, f_0, ..., f_n]`: the block's output (after
        the transition) and the features before each layer and after the last
        (`f_0` is the input), which the next sub-network's fusion block reads.

    Example:
    ```python
    block = RANetBlock(num_layers=2, growth_rate=6, bn_factor=4)
    out, *features = block(keras.ops.ones((2, 8, 8, 16)))  # out: (2, 8, 8, 28)
    ```
    """

    def __init__(self, num_layers, growth_rate, bn_factor, transition=False, reduction=0.5,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_layers = _positive(num_layers, "num_layers")
        self.growth_rate = _positive(growth_rate, "growth_rate")
        self.bn_factor = int(bn_factor)
        self._make_transition(transition, reduction)
        self.convs = [
            MSDConv(self.growth_rate, self.bn_factor, 1, name=f"layer_{i}")
            for i in range(self.num_layers)
        ]

    @staticmethod
    def _input(inputs):
        """The block's input (or its shape) from `x`, `[x]`, a shape or `[shape]`."""
        if isinstance(inputs, (list, tuple)) and inputs and not isinstance(
            inputs[0], (numbers.Integral, type(None))
        ):
            return inputs[0]
        return inputs

    def build(self, input_shape):
        n, h, w, c = self._input(input_shape)
        for i, conv in enumerate(self.convs):
            conv.build((n, h, w, c + i * self.growth_rate))
        self._build_transition(c + self.num_layers * self.growth_rate)
        if self.trans is not None:
            self.trans.build((n, h, w, c + self.num_layers * self.growth_rate))

    def call(self, inputs, training=None):
        x = self._input(inputs)
        features = [x]
        for i, conv in enumerate(self.convs):
            # The later layers' channels are reserved: on PyTorch inference
            # they fill one buffer in place (the features are its prefixes).
            reserve = (self.num_layers - 1 - i) * self.growth_rate
            x = fast_path.concatenate_channels([x, conv(x, training=training)], reserve=reserve)
            features.append(x)
        if self.trans is not None:
            x = self.trans(x, training=training)
        return [x] + features

    def compute_output_shape(self, input_shape):
        n, h, w, c = self._input(input_shape)
        features = [(n, h, w, c + i * self.growth_rate) for i in range(self.num_layers + 1)]
        out = (n, h, w, self._transition_channels(features[-1][3]))
        return [out] + features

    def flops(self, input_shape):
        """Multiply-adds for one image."""
        h, w, c = _shape_hwc(self._input(input_shape))
        total = sum(conv.flops((h, w, c + i * self.growth_rate)) for i, conv in enumerate(self.convs))
        return total + self._transition_flops(h, w, c + self.num_layers * self.growth_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers, growth_rate=self.growth_rate, bn_factor=self.bn_factor,
            transition=self.transition, reduction=self.reduction,
        )
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class RANetFusionBlock(_RANetBlockBase):
    """A fusion block: a RANet block that also reads the lower-resolution
    sub-network's features.

    Layer `i` reads its own input `x` and feature `f_i` of the matching block
    of the lower-resolution sub-network; it appends `floor(growth_rate *
    compress_factor)` channels computed from `f_i` (a bottleneck ConvBN, then
    resized up with corner-aligned bilinear interpolation) and the remaining
    channels from `x` (a bottleneck ConvBN), as `[x, up, new]`. With `down`,
    the last layer's ConvBN on `x` has stride 2 and `x` and `up` are resized
    to its output. At the end, a 1x1 conv-BN-ReLU of the lower sub-network's
    last feature adds `floor(C * compress_factor)` channels (resized), and an
    optional transition follows.

    Args:
        num_layers: layers in the block (the lower block has as many).
        growth_rate: channels each layer adds.
        bn_factor: bottleneck factor of the ConvBNs on this sub-network.
        low_bn_factor: bottleneck factor of the ConvBNs on the lower one.
        compress_factor: share of the new channels taken from the lower
            sub-network (0.25 in the paper).
        down: the block halves the resolution.
        transition: end with a transition.
        reduction: the transition's compression.
        **kwargs: base layer arguments.

    Returns:
        Called on the flat list `[x, f_0, ..., f_n]` (`f_*` from the lower
        sub-network's block), a flat list `[block_output, g_0, ..., g_n]`
        like `RANetBlock`.

    Example:
    ```python
    low = RANetBlock(2, growth_rate=24, bn_factor=4)(keras.ops.ones((2, 8, 8, 64)))
    block = RANetFusionBlock(2, growth_rate=12, bn_factor=2, low_bn_factor=4,
                             compress_factor=0.25)
    out, *features = block([keras.ops.ones((2, 16, 16, 32))] + low[1:])
    ```
    """

    def __init__(self, num_layers, growth_rate, bn_factor, low_bn_factor, compress_factor=0.25,
                 down=False, transition=False, reduction=0.5, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = _positive(num_layers, "num_layers")
        self.growth_rate = _positive(growth_rate, "growth_rate")
        self.bn_factor = int(bn_factor)
        self.low_bn_factor = int(low_bn_factor)
        self.compress_factor = float(compress_factor)
        self.down = bool(down)
        self._make_transition(transition, reduction)
        up = _positive(math.floor(self.growth_rate * self.compress_factor),
                       "The lower-resolution share of a fusion layer")
        own = _positive(self.growth_rate - up, "The own share of a fusion layer")
        self.up_convs, self.own_convs = [], []
        for i in range(self.num_layers):
            strides = 2 if (self.down and i == self.num_layers - 1) else 1
            self.up_convs.append(MSDConv(up, self.low_bn_factor, 1, name=f"layer_{i}_up"))
            self.own_convs.append(MSDConv(own, self.bn_factor, strides, name=f"layer_{i}_normal"))
        self.last = None

    def _split(self, inputs):
        if len(inputs) != self.num_layers + 2:
            raise ValueError(
                f"{self.name} takes [x] plus the {self.num_layers + 1} features of the lower "
                f"sub-network's block; got {len(inputs)} inputs."
            )
        return inputs[0], list(inputs[1:])

    def _layer_shapes(self, input_shape):
        """Input shape of each layer, and the block's dense output shape."""
        x, _ = self._split(input_shape)
        n, h, w, c = x
        shapes = []
        for conv in self.own_convs:
            shapes.append((n, h, w, c))
            h, w = conv.conv.output_size(h), conv.conv.output_size(w)
            c += self.growth_rate
        return shapes, (n, h, w, c)

    def _last_channels(self, channels):
        return _positive(math.floor(channels * self.compress_factor),
                         "The fused share at the end of a fusion block")

    def build(self, input_shape):
        _, low = self._split(input_shape)
        shapes, (n, h, w, c) = self._layer_shapes(input_shape)
        for shape, low_shape, up_conv, own_conv in zip(shapes, low, self.up_convs, self.own_convs):
            up_conv.build(tuple(low_shape))
            own_conv.build(shape)
        self.last = ConvBNAct(self._last_channels(c), 1, name="last")
        self.last.build(tuple(low[-1]))
        fused = c + self._last_channels(c)
        self._build_transition(fused)
        if self.trans is not None:
            self.trans.build((n, h, w, fused))

    def call(self, inputs, training=None):
        x, low = self._split(inputs)
        features = [x]
        n, growth = self.num_layers, self.growth_rate
        dense = x.shape[-1] + n * growth
        fused = dense + self._last_channels(dense)
        layers = zip(low, self.up_convs, self.own_convs)
        for i, (low_x, up_conv, own_conv) in enumerate(layers):
            new = own_conv(x, training=training)
            size = (new.shape[1], new.shape[2])
            up = resize_bilinear_aligned(up_conv(low_x, training=training), size)
            # What later concatenations add onto this result before it is
            # resized (the last layer of a `down` block resizes its input):
            # reserved, for PyTorch inference to fill in place.
            if self.down and i < n - 1:
                reserve = (n - 2 - i) * growth
            else:
                reserve = fused - (x.shape[-1] + growth)
            x = fast_path.concatenate_channels([resize_bilinear_aligned(x, size), up, new],
                                               reserve=reserve)
            features.append(x)
        size = (x.shape[1], x.shape[2])
        extra = resize_bilinear_aligned(self.last(low[-1], training=training), size)
        x = fast_path.concatenate_channels([x, extra])
        if self.trans is not None:
            x = self.trans(x, training=training)
        return [x] + features

    def compute_output_shape(self, input_shape):
        shapes, last = self._layer_shapes(input_shape)
        features = [tuple(s) for s in shapes] + [last]
        n, h, w, c = last
        out = (n, h, w, self._transition_channels(c + self._last_channels(c)))
        return [out] + features

    def flops(self, input_shape):
        """Multiply-adds for one image (resizing is free)."""
        _, low = self._split(input_shape)
        shapes, (_, h, w, c) = self._layer_shapes(input_shape)
        total = 0
        for shape, low_shape, up_conv, own_conv in zip(shapes, low, self.up_convs, self.own_convs):
            total += up_conv.flops(low_shape) + own_conv.flops(shape)
        lh, lw, lc = _shape_hwc(low[-1])
        extra = self._last_channels(c)
        total += cost.conv_flops(lc, extra, 1, lh, lw) + cost.relu_flops(lh, lw, extra)
        return total + self._transition_flops(h, w, c + extra)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers, growth_rate=self.growth_rate, bn_factor=self.bn_factor,
            low_bn_factor=self.low_bn_factor, compress_factor=self.compress_factor,
            down=self.down, transition=self.transition, reduction=self.reduction,
        )
        return config


__all__ = [
    "MSDConv",
    "MSDLayer",
    "MSDStem",
    "MSDTransition",
    "MultiScaleDenseExit",
    "RANetBlock",
    "RANetFusionBlock",
    "RANetStem",
    "aligned_interpolation_matrix",
    "batch_norm",
    "resize_bilinear_aligned",
]
