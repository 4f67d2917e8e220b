"""Multi-scale dense building blocks (MSDNet, Huang et al. 2018) and their exit.

Features live on several scales at once, finest first: a list of tensors
`[(B, H, W, C0), (B, H/2, W/2, C1), ...]`. The public layer is
`MultiScaleDenseExit`, the classifier attached to the coarsest scale; the stem,
the dense layer and the transition are the building blocks beside it.
"""

import keras
from keras import ops

from adaptive_zoo import cost
from adaptive_zoo.layers.conv_bn import AuthorsInit, ConvBNReLU, batch_norm


def _shape_hwc(shape):
    return tuple(int(d) for d in shape[-3:])


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDStem(keras.layers.Layer):
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
                conv = ConvBNReLU(c, kernel_size=7, strides=2, use_bias=True, name="conv_0")
            else:
                conv = ConvBNReLU(c, 3, strides=1 if i == 0 else 2, name=f"conv_{i}")
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
                # Inputs are >= 0 after the ReLU, so zero padding equals
                # PyTorch's -inf padding for the max.
                x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
                x = ops.max_pool(x, 3, strides=2, padding="valid")
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
class MSDConv(keras.layers.Layer):
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
        self.conv = ConvBNReLU(filters, 3, strides=strides, name="conv")

    def build(self, input_shape):
        shape = input_shape
        if self.bottleneck_width is not None:
            inner = min(int(input_shape[-1]), self.bottleneck_width * self.filters)
            self.bottleneck = ConvBNReLU(inner, 1, name="bottleneck")
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
class MSDLayer(keras.layers.Layer):
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

    def call(self, inputs, training=None):
        outputs = []
        for (finer, same), down, normal in zip(self._pairs(inputs), self.down, self.normal):
            parts = [same]
            if down is not None:
                parts.append(down(finer, training=training))
            parts.append(normal(same, training=training))
            outputs.append(ops.concatenate(parts, axis=-1))
        return outputs

    def compute_output_shape(self, input_shape):
        shapes = []
        for (finer, same), down, normal in zip(self._pairs(input_shape), self.down, self.normal):
            c = same[-1]
            if down is not None:
                c += down.filters
            c += normal.filters
            shapes.append(tuple(same[:-1]) + (c,))
        return shapes

    def flops(self, input_shapes):
        total = 0
        for (finer, same), down, normal in zip(self._pairs(input_shapes), self.down, self.normal):
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
class MSDTransition(keras.layers.Layer):
    """1x1 conv-BN-ReLU on each scale, reducing channels.

    Args:
        channels: output channels per scale (finest kept scale first).
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = list(channels)
        self.convs = [ConvBNReLU(c, 1, name=f"conv_{i}") for i, c in enumerate(self.channels)]

    def build(self, input_shape):
        for conv, shape in zip(self.convs, input_shape):
            conv.build(shape)

    def call(self, inputs, training=None):
        return [conv(x, training=training) for conv, x in zip(self.convs, inputs)]

    def compute_output_shape(self, input_shape):
        return [conv.compute_output_shape(s) for conv, s in zip(self.convs, input_shape)]

    def flops(self, input_shapes):
        return sum(conv.flops(_shape_hwc(s)) for conv, s in zip(self.convs, input_shapes))

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MultiScaleDenseExit(keras.layers.Layer):
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
        self.num_classes = num_classes
        self.width = width
        self.conv1 = None
        self.conv2 = None
        self.dense = keras.layers.Dense(num_classes, kernel_initializer=AuthorsInit("dense"), name="dense")

    @staticmethod
    def _coarsest(x):
        return x[-1] if isinstance(x, (list, tuple)) else x

    def build(self, input_shape):
        shape = self._coarsest(input_shape)
        width = self.width or int(shape[-1])
        self.conv1 = ConvBNReLU(width, 3, strides=2, name="conv1")
        self.conv2 = ConvBNReLU(width, 3, strides=2, name="conv2")
        self.conv1.build(shape)
        shape = self.conv1.compute_output_shape(shape)
        self.conv2.build(shape)
        self.dense.build((None, width))

    def call(self, inputs, training=None):
        x = self._coarsest(inputs)
        x = self.conv1(x, training=training)
        x = self.conv2(x, training=training)
        x = ops.mean(x, axis=(1, 2))
        return self.dense(x)

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


__all__ = [
    "MSDConv",
    "MSDLayer",
    "MSDStem",
    "MSDTransition",
    "MultiScaleDenseExit",
    "batch_norm",
]
