"""SubBlockBranch: the `N` parallel sub-blocks of a DMNN residual block.

`output = act(x + sum_i g_i * f_i(x))` with per-image gates `g_i in {0, 1}`.

- Training (`call`): the dense, differentiable path; every sub-block runs on
  the whole batch and is multiplied by its (straight-through) gate.
- Inference (`skip`): per sub-block, gather the images for which it is on, run
  it on them only, and scatter-add the result back onto the identity
  (`fast_path.scatter_add_rows`). Images
  for which a sub-block is off cost nothing in it.

Sub-blocks: ResNet bottlenecks (`1x1 -> 3x3 -> 1x1`, BN after each) or
MobileNetV2 inverted residuals (`1x1 expand -> 3x3 depthwise -> 1x1 project`,
ReLU6), both with PyTorch's padding and BatchNorm constants.
"""

import keras
import numpy as np
from keras import ops

from adaptive_zoo import cost
from adaptive_zoo import fast_path
from adaptive_zoo.checks import positive_integer
from adaptive_zoo.layers.base import Layer
from adaptive_zoo.layers.conv_bn import ACTIVATIONS, ConvBNAct, activate

__all__ = ["BottleneckSubBlock", "InvertedResidualSubBlock", "SubBlockBranch"]

class _Sequence(Layer):
    """A chain of `ConvBNAct` layers with a summed cost."""

    def _chain(self):
        raise NotImplementedError

    def build(self, input_shape):
        shape = input_shape
        for layer in self._chain():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._chain():
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self._chain():
            shape = layer.compute_output_shape(shape)
        return shape

    def flops(self, input_shape):
        """Multiply-adds for one image `(H, W, C)`."""
        shape, total = (None,) + tuple(input_shape), 0
        for layer in self._chain():
            total += layer.flops(shape[1:])
            shape = layer.compute_output_shape(shape)
        return total


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class BottleneckSubBlock(_Sequence):
    """ResNet bottleneck residual function: `1x1 (width) -> 3x3 -> 1x1 (filters)`.

    No shortcut and no final ReLU (the branch adds the identity and applies
    the activation). The last BatchNorm is this sub-block's own.

    Args:
        width: inner width.
        filters: output channels.
        strides: stride of the 3x3 convolution.
        **kwargs: base layer arguments.

    Returns:
        `(batch, H_out, W_out, filters)`.

    Example:
    ```python
    f = BottleneckSubBlock(width=8, filters=32)
    y = f(keras.ops.ones((2, 8, 8, 32)))  # (2, 8, 8, 32)
    ```
    """

    def __init__(self, width, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.width, self.filters, self.strides = int(width), int(filters), int(strides)
        self.conv1 = ConvBNAct(self.width, 1, name="conv1")
        self.conv2 = ConvBNAct(self.width, 3, strides=self.strides, name="conv2")
        self.conv3 = ConvBNAct(self.filters, 1, activation=None, name="conv3")

    def _chain(self):
        return (self.conv1, self.conv2, self.conv3)

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, filters=self.filters, strides=self.strides)
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class InvertedResidualSubBlock(_Sequence):
    """MobileNetV2 inverted residual function: `1x1 expand -> 3x3 dw -> 1x1 project`.

    Args:
        width: expanded (hidden) width.
        filters: output channels.
        strides: stride of the depthwise convolution.
        expand: whether there is an expansion convolution (False for
            MobileNetV2's first block, whose expansion ratio is 1).
        **kwargs: base layer arguments.

    Returns:
        `(batch, H_out, W_out, filters)`, no activation after the projection.

    Example:
    ```python
    f = InvertedResidualSubBlock(width=48, filters=8)
    y = f(keras.ops.ones((2, 8, 8, 8)))  # (2, 8, 8, 8)
    ```
    """

    def __init__(self, width, filters, strides=1, expand=True, **kwargs):
        super().__init__(**kwargs)
        self.width, self.filters, self.strides = int(width), int(filters), int(strides)
        self.expand = bool(expand)
        self.expand_conv = ConvBNAct(self.width, 1, activation="relu6", name="expand") if expand else None
        self.depthwise_conv = ConvBNAct(self.width, 3, strides=self.strides, depthwise=True,
                                        activation="relu6", name="depthwise")
        self.project_conv = ConvBNAct(self.filters, 1, activation=None, name="project")

    def _chain(self):
        chain = (self.depthwise_conv, self.project_conv)
        return ((self.expand_conv,) + chain) if self.expand else chain

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, filters=self.filters, strides=self.strides,
                      expand=self.expand)
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class SubBlockBranch(Layer):
    """`N` parallel sub-blocks summed onto the identity where each is on.

    Args:
        kind: `"bottleneck"` (ResNet) or `"inverted_residual"` (MobileNetV2).
        widths: inner width of each sub-block (its length is `N`).
        filters: channels of the block (input = output, the identity is kept).
        activation: `"relu"` after the sum (ResNet) or `None` (MobileNetV2).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(batch, H, W, filters)`.
        gates: `(batch, N)` floats; `None` runs every sub-block.
        training: training mode.

    Returns:
        `act(inputs + sum_i gates[:, i] * f_i(inputs))`, same shape as inputs.

    Example:
    ```python
    branch = SubBlockBranch("bottleneck", widths=(4, 4), filters=16)
    x = keras.ops.ones((3, 8, 8, 16))
    gates = keras.ops.convert_to_tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # (batch, N)
    dense = branch(x, gates)                 # training / reference path
    sparse = branch.skip(x, gates > 0.5)     # real skipping: same values
    ```
    """

    def __init__(self, kind, widths, filters, activation="relu", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("bottleneck", "inverted_residual"):
            raise ValueError(f"kind must be 'bottleneck' or 'inverted_residual', got {kind!r}.")
        widths = [positive_integer(w, "each of widths") for w in widths]
        if not widths:
            raise ValueError(f"widths needs at least one positive width, got {widths}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        self.kind, self.widths = kind, widths
        self.filters = positive_integer(filters, "filters")
        self.activation = activation
        make = BottleneckSubBlock if kind == "bottleneck" else InvertedResidualSubBlock
        self.sub_blocks = [make(w, self.filters, name=f"sub_block{i}") for i, w in enumerate(widths)]
        self.input_spec = keras.InputSpec(ndim=4)  # (batch, H, W, filters)

    @property
    def num_sub_blocks(self):
        return len(self.sub_blocks)

    def build(self, inputs_shape, gates_shape=None):
        if inputs_shape[-1] != self.filters:
            raise ValueError(
                f"{self.name} keeps the identity: it takes {self.filters} channels, got "
                f"input shape {inputs_shape}."
            )
        for block in self.sub_blocks:
            block.build(inputs_shape)

    def _check_per_image(self, inputs, values, what):
        """A `ValueError` unless `values` is `(batch, N)`, one column per
        sub-block and one row per image of `inputs`."""
        shape, batch = tuple(values.shape), inputs.shape[0]
        if (len(shape) != 2 or shape[1] not in (None, self.num_sub_blocks)
                or None not in (shape[0], batch) and shape[0] != batch):
            raise ValueError(
                f"{self.name} has {self.num_sub_blocks} sub-blocks: {what} must have shape "
                f"(batch, {self.num_sub_blocks}) for an input of shape {tuple(inputs.shape)}; "
                f"got shape {shape}."
            )

    def call(self, inputs, gates=None, training=None):
        if gates is not None:
            self._check_per_image(inputs, gates, "gates")
        out = inputs
        for i, block in enumerate(self.sub_blocks):
            y = block(inputs, training=training)
            if gates is not None:
                y = y * ops.cast(ops.reshape(gates[:, i], (-1, 1, 1, 1)), y.dtype)
            out = out + y
        return activate(out, self.activation)

    def skip(self, inputs, decisions, accumulate_fns=None, consume_inputs=False):
        """Inference with real skipping.

        Args:
            inputs: `(batch, H, W, C)`.
            decisions: `(batch, N)` booleans, which sub-blocks run per image.
            accumulate_fns: optional compiled replacements, one per
                sub-block, for `fast_path.accumulating(sub-block call,
                then=the activation)` (see `fast_path.compile_accumulating`).
            consume_inputs: whether `inputs` may be overwritten (the caller
                no longer needs it): with JAX's compiled `accumulate_fns`,
                the sub-blocks' results are then added onto the inputs'
                buffer in place instead of onto a copy of it.

        Returns:
            The same values as `call(inputs, gates)` in inference mode, with
            each sub-block computed only on the images for which it is on.
        """
        self._check_per_image(inputs, decisions, "decisions")
        accs = accumulate_fns or self.accumulate_fns()
        if fast_path.is_traced(decisions):
            return self._skip_traced(inputs, decisions, accs)
        on = ops.convert_to_numpy(decisions).astype(bool)
        counts = on.sum(axis=0)
        running = [i for i in range(len(accs)) if counts[i] > 0]
        if (running and consume_inputs and all(counts[i] < on.shape[0] for i in running)
                and all(hasattr(accs[i], "add_rows") for i in running)):
            return self._skip_in_place(inputs, on, running, accs)
        out = inputs
        for i in running:
            last = i == running[-1]
            if counts[i] == on.shape[0]:  # on for every image: no gather
                out = accs[i](out, inputs, last=last)
            else:
                index = ops.convert_to_tensor(np.flatnonzero(on[:, i]).astype("int32"))
                out = accs[i](out, inputs, index, last=last)
        return out if running else activate(out, self.activation)

    @staticmethod
    def _skip_in_place(inputs, on, running, accs):
        """`skip` onto the inputs' own buffer, where every running sub-block
        runs on some images only (JAX, `consume_inputs`): each one's results
        first, from the untouched inputs, then each added in place (the
        buffer is donated; the last call also activates). Saves the copy of
        the whole input that the first scatter-add otherwise makes. (Where a
        sub-block runs on every image, its sum with the inputs is that fresh
        buffer anyway.)"""
        parts = []
        for i in running:
            index = np.flatnonzero(on[:, i]).astype("int32")
            parts.append((i, index, accs[i].rows(inputs, index)))
        out = inputs
        for i, index, results in parts:
            out = accs[i].add_rows(out, results, index, last=i == running[-1])
        return out

    def accumulate_fns(self):
        """`fast_path.accumulating` of each sub-block's inference call, with
        the block's activation as `then`."""
        return [
            fast_path.accumulating(lambda x, b=b: b(x, training=False), self._activate)
            for b in self.sub_blocks
        ]

    def _activate(self, x):
        return activate(x, self.activation)

    def _skip_traced(self, inputs, decisions, accs):
        """`skip` inside a TensorFlow graph (`fast_path.compile_dynamic`),
        where the counts are known at run time only. As in `skip`, a
        sub-block on for every image runs without gather or scatter, and one
        on for none is skipped (oneDNN's convolution also returns a wrongly
        shaped result on an empty batch)."""
        out = inputs
        batch = ops.shape(inputs)[0]
        for i, acc in enumerate(accs):
            index = ops.nonzero(decisions[:, i])[0]
            count = ops.size(index)

            def run(out=out, acc=acc, index=index, count=count):
                return ops.cond(count == batch,
                                lambda: acc(out, inputs),
                                lambda: acc(out, inputs, index))

            out = ops.cond(count > 0, run, lambda out=out: out)
        return activate(out, self.activation)

    def compute_output_shape(self, inputs_shape, gates_shape=None):
        return inputs_shape

    def sub_block_flops(self, input_shape):
        """Multiply-adds of each sub-block for one image `(H, W, C)`, a list."""
        return [block.flops(input_shape) for block in self.sub_blocks]

    def fixed_flops(self, input_shape):
        """Cost that does not depend on the gates (the final activation)."""
        h, w, c = input_shape
        return cost.relu_flops(h, w, c) if self.activation else 0

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, widths=list(self.widths), filters=self.filters,
                      activation=self.activation)
        return config
