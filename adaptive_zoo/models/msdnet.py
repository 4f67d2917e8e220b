"""MSDNet: Multi-Scale Dense Networks (Huang et al., ICLR 2018).

The structure follows the authors' code (kalviny/MSDNet-PyTorch) flag for
flag, so their checkpoints convert exactly (`adaptive_zoo.convert`). Presets
cover the published configurations; `MSDNet(...)` takes any other.
"""

import math

import keras

from adaptive_zoo import weights as weights_lib
from adaptive_zoo.checks import integer, positive_integer
from adaptive_zoo.layers.multi_scale_dense import (
    MSDLayer,
    MSDStem,
    MSDTransition,
    MultiScaleDenseExit,
)
from adaptive_zoo.models.multi_exit import MultiExitModel

__all__ = [
    "MSDNet",
    "MSDNetCIFARAnytime",
    "MSDNetCIFARBudgeted",
    "MSDNetImageNet",
    "MSDNetTiny",
    "msdnet_exit_cone",
    "msdnet_layer_plan",
    "msdnet_reserves",
]


def msdnet_layer_plan(n_blocks, step_mode, step, base, n_scales, prune="max", reduction=0.5):
    """The authors' layer plan: per block, a list of ("layer", in, out) and
    ("transition", out_scales) entries, with the block's channel bookkeeping
    left to the caller.
    """
    if step_mode not in ("even", "lin_grow"):
        raise ValueError(f"step_mode must be 'even' or 'lin_grow', got {step_mode!r}.")
    if prune not in ("max", "min"):
        raise ValueError(f"prune must be 'max' or 'min', got {prune!r}.")
    if n_blocks < 1 or base < 1 or step < 0:
        raise ValueError(f"Need n_blocks >= 1, base >= 1, step >= 0; got {n_blocks}, {base}, {step}.")
    steps = [base] + [step if step_mode == "even" else step * i + 1 for i in range(1, n_blocks)]
    if any(s < 1 for s in steps):
        raise ValueError(f"Every block needs at least one layer; the steps are {steps}.")
    n_all = sum(steps)
    interval = math.ceil(n_all / n_scales)
    plan, current = [], 0
    for s in steps:
        block = []
        for _ in range(s):
            current += 1
            if prune == "max":
                in_scales = n_scales - math.floor(max(0, current - 2) / interval)
                out_scales = n_scales - math.floor((current - 1) / interval)
            else:
                in_scales = min(n_scales, n_all - current + 2)
                out_scales = min(n_scales, n_all - current + 1)
            block.append(("layer", in_scales, out_scales))
            if reduction > 0 and (
                (prune == "max" and in_scales > out_scales)
                or (prune == "min" and current in (math.floor(n_all / 3), math.floor(2 * n_all / 3)))
            ):
                block.append(("transition", out_scales))
        plan.append(block)
    return plan


def msdnet_reserves(blocks, input_shape):
    """What each MSD layer's output on each scale will still grow by in its
    block: the channels that the block's later MSD layers concatenate onto
    it before a transition or the block's end (`MSDLayer.call`'s `reserve`,
    so that on PyTorch they fill a buffer in place instead of copying the
    growing feature map at every layer; a block's output is then exactly as
    wide as its buffer).

    Args:
        blocks: lists of layers (`MSDStem`, `MSDLayer`, `MSDTransition`).
        input_shape: the image batch's shape, `(None, H, W, C)`.

    Returns:
        Per block, per layer: a tuple of channels per output scale of an MSD
        layer, `None` for any other layer.
    """
    shapes, result = input_shape, []
    for block in blocks:
        widths = []  # per layer: {scale: channels out} of an MSD layer, else None
        for layer in block:
            shapes = layer.compute_output_shape(shapes)
            if isinstance(layer, MSDLayer):
                widths.append({layer.offset + j: shape[-1] for j, shape in enumerate(shapes)})
            else:
                widths.append(None)
        reserves = []
        for i, own in enumerate(widths):
            if own is None:
                reserves.append(None)
                continue
            spare = []
            for scale, channels in sorted(own.items()):
                last = channels
                for later in widths[i + 1:]:
                    if later is None or scale not in later:
                        break
                    last = later[scale]
                spare.append(last - channels)
            reserves.append(tuple(spare))
        result.append(tuple(reserves))
    return tuple(result)


def msdnet_exit_cone(block, n_scales):
    """What of a block its exit reads: per layer, the positions (in the
    layer's output list) of the output scales that the block's coarsest
    output depends on, or `None` for all of them.

    The exit reads the block's coarsest scale only. An MSD layer's output
    scale reads the same scale of its input and (through its strided
    branch) the next finer one, and a transition reads the same scale: so
    going back from the block's end, each MSD layer needs one more scale,
    until a layer needs all. The finer scales of a block's last layers are
    read only by the next block: the samples that leave at this block's
    exit need not compute them.

    Args:
        block: a block's layers (`MSDStem`, `MSDLayer`, `MSDTransition`).
        n_scales: the network's number of scales.

    Returns:
        A tuple, one entry per layer: a sorted tuple of positions, or `None`.
    """
    need, cone = {n_scales - 1}, []
    for layer in reversed(block):
        if need is None or isinstance(layer, MSDStem):
            cone.append(None)
            need = None
            continue
        offset = n_scales - _output_scales(layer)
        outputs = set(range(offset, n_scales))
        inputs = set(range(n_scales - _input_scales(layer), n_scales))
        # Output scale s reads input scale s, and an MSD layer's strided
        # branch (where there is one) the finer scale s - 1; a transition's
        # 1x1 conv reads its own scale only.
        reads = set(need)
        if isinstance(layer, MSDLayer):
            reads |= {s - 1 for s in need if layer.down[s - offset] is not None}
        cone.append(None if need == outputs else tuple(sorted(s - offset for s in need)))
        need = None if reads == inputs else reads
    return tuple(reversed(cone))


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MSDNet(MultiExitModel):
    """Multi-Scale Dense Network with one exit per block.

    Arguments mirror the authors' flags (`--nBlocks` is `n_blocks`, ...).

    Args:
        n_blocks: number of blocks, one exit each.
        step_mode: `"even"` (every block after the first has `step` layers)
            or `"lin_grow"` (block `i` has `step * i + 1`).
        step: layers per block (see `step_mode`).
        base: layers in the first block.
        n_channels: stem channels on the finest scale.
        growth_rate: channels each layer adds (times `gr_factor`).
        gr_factor: per-scale factors, finest first; their number is the
            number of scales.
        bn_factor: per-scale bottleneck factors.
        bottleneck: use 1x1 bottlenecks.
        reduction: transition compression (0 for none).
        prune: `"max"` (the paper's) or `"min"`.
        imagenet_stem: 7x7/2 conv + max-pool stem (ImageNet) instead of 3x3.
        head_width: exit conv width; `None` keeps the coarsest scale's
            channels (ImageNet), CIFAR uses 128.
        num_classes: logits per exit.
        input_shape: `(H, W, C)`.
        weights: `None`, a registered name (`adaptive_zoo.weights`), or a path
            to a `.weights.h5` file or an authors' `.pth`/`.pth.tar`.
        **kwargs: `MultiExitModel` arguments (`exit_weights`,
            `calibration`, `name`).

    Example:
    ```python
    model = MSDNet(n_blocks=4, step=1, base=1, n_channels=8, growth_rate=4,
                   gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), head_width=32,
                   num_classes=10, input_shape=(16, 16, 1))
    logits = model(images)                       # last exit
    logits, flops = model(images, budget=0.5, return_cost=True)
    ```
    """

    def __init__(
        self,
        n_blocks=5,
        step_mode="even",
        step=4,
        base=4,
        n_channels=32,
        growth_rate=16,
        gr_factor=(1, 2, 4, 4),
        bn_factor=(1, 2, 4, 4),
        bottleneck=True,
        reduction=0.5,
        prune="max",
        imagenet_stem=True,
        head_width=None,
        num_classes=1000,
        input_shape=(224, 224, 3),
        weights=None,
        **kwargs,
    ):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        n_blocks, step, base = integer(n_blocks, "n_blocks"), integer(step, "step"), integer(base, "base")
        n_channels = positive_integer(n_channels, "n_channels")
        growth_rate = positive_integer(growth_rate, "growth_rate")
        gr_factor = [positive_integer(g, "each of gr_factor") for g in gr_factor]
        bn_factor = [positive_integer(b, "each of bn_factor") for b in bn_factor]
        if len(gr_factor) != len(bn_factor):
            raise ValueError(
                f"gr_factor and bn_factor need one entry per scale; got {gr_factor} and {bn_factor}."
            )
        if not 0.0 <= float(reduction) <= 1.0:
            raise ValueError(f"Need 0 <= reduction <= 1 (0: no compression); got {reduction}.")
        self.arch = dict(
            n_blocks=n_blocks, step_mode=step_mode, step=step, base=base,
            n_channels=n_channels, growth_rate=growth_rate, gr_factor=gr_factor,
            bn_factor=bn_factor, bottleneck=bool(bottleneck), reduction=float(reduction),
            prune=prune, imagenet_stem=bool(imagenet_stem), head_width=head_width,
        )
        plan = msdnet_layer_plan(n_blocks, step_mode, step, base, len(gr_factor), prune, reduction)
        self.blocks, self.heads = [], []
        n_in = n_channels
        for i, entries in enumerate(plan):
            block = []
            if i == 0:
                block.append(MSDStem([n_channels * g for g in gr_factor], imagenet_stem, name="stem"))
            for j, entry in enumerate(entries):
                if entry[0] == "layer":
                    block.append(
                        MSDLayer(growth_rate, gr_factor, bn_factor if bottleneck else None,
                                 entry[1], entry[2], name=f"block{i}_layer{j}")
                    )
                    n_in += growth_rate
                else:
                    out_scales = entry[1]
                    offset = len(gr_factor) - out_scales
                    n_out = math.floor(reduction * n_in)
                    block.append(
                        MSDTransition([n_out * gr_factor[offset + s] for s in range(out_scales)],
                                      name=f"block{i}_transition{j}")
                    )
                    n_in = n_out
            self.blocks.append(block)
            self.heads.append(MultiScaleDenseExit(num_classes, width=head_width, name=f"exit{i}"))
        self._reserves = msdnet_reserves(self.blocks, (None,) + self.image_shape)
        self._cones = tuple(msdnet_exit_cone(block, len(gr_factor)) for block in self.blocks)
        self.build()
        weights_lib.load_weights(self, weights, family="msdnet")

    @property
    def num_exits(self):
        return len(self.blocks)

    def _stage(self, k, state, training=None):
        for layer, reserve in zip(self.blocks[k], self._reserves[k]):
            state = _call(layer, state, training, reserve)
        return state

    def _exit(self, k, state, training=None):
        return self.heads[k](state, training=training)

    def _rest_start(self, k):
        """The first layer of block `k` that its exit does not need whole
        (the block's length if there is none)."""
        cone = self._cones[k]
        return next((i for i, scales in enumerate(cone) if scales is not None), len(cone))

    def _stage_for_exit(self, k, state, training=None):
        """Block `k` as far as its exit reads it (`msdnet_exit_cone`):
        `carried` is the input of the first layer computed in part, then
        the scales computed of it and of each later layer."""
        start = self._rest_start(k)
        carried = None
        for i, (layer, reserve, scales) in enumerate(zip(self.blocks[k], self._reserves[k],
                                                         self._cones[k])):
            if i == start:
                carried = list(state)
            state = _call(layer, state, training, reserve, scales)
            if scales is not None:
                carried += [state[j] for j in scales]
        return state, (state if carried is None else carried)

    def _stage_rest(self, k, carried, training=None):
        """The scales of block `k` that `_stage_for_exit` left out."""
        start = self._rest_start(k)
        if start == len(self.blocks[k]):
            return carried
        layers = self.blocks[k][start:]
        size = _input_scales(layers[0])
        state, computed = list(carried[:size]), iter(carried[size:])
        for layer, reserve, scales in zip(layers, self._reserves[k][start:], self._cones[k][start:]):
            outputs = _output_scales(layer)
            done = {j: next(computed) for j in scales}
            rest = _call(layer, state, training, reserve, tuple(j for j in range(outputs) if j not in done))
            state = [done[j] if j in done else rest[j] for j in range(outputs)]
        return state

    def _stage_layers(self, k):
        # Stage k also completes block k - 1 for the samples that go on.
        before = self.blocks[k - 1][self._rest_start(k - 1):] if k else []
        return before + self.blocks[k] + [self.heads[k]]

    def _stage_flops(self, for_exit=False):
        """Cost per image of each block (with `for_exit`, of the part its
        exit reads: `msdnet_exit_cone`)."""
        shapes = (None,) + self.image_shape
        result = []
        for block, cone in zip(self.blocks, self._cones):
            total = 0
            for layer, scales in zip(block, cone):
                partial = for_exit and scales is not None  # (the stem has no `scales`)
                total += layer.flops(shapes, scales=scales) if partial else layer.flops(shapes)
                shapes = layer.compute_output_shape(shapes)
            result.append(total)
        return result

    def _stage_for_exit_flops(self):
        return self._stage_flops(for_exit=True)

    def _exit_own_flops(self):
        shapes = (None,) + self.image_shape
        result = []
        for block, head in zip(self.blocks, self.heads):
            for layer in block:
                shapes = layer.compute_output_shape(shapes)
            result.append(head.flops(shapes))
        return result

    def _family_config(self):
        return dict(self.arch)


def _call(layer, state, training, reserve=None, scales=None):
    """`layer(state)` with `reserve` and `scales` passed only when given
    (the stem and transitions take no `reserve`, the stem no `scales`)."""
    kwargs = {}
    if reserve is not None:
        kwargs["reserve"] = reserve
    if scales is not None:
        kwargs["scales"] = scales
    return layer(state, training=training, **kwargs)


def _input_scales(layer):
    """How many scales an MSD layer or transition takes."""
    return layer.in_scales if isinstance(layer, MSDLayer) else len(layer.channels)


def _output_scales(layer):
    """How many scales an MSD layer or transition gives."""
    return layer.out_scales if isinstance(layer, MSDLayer) else len(layer.channels)


def MSDNetCIFARAnytime(num_classes=100, n_blocks=7, input_shape=(32, 32, 3), weights=None, **kwargs):
    """MSDNet for CIFAR, anytime prediction (the paper's `even`, step 2, base 4).

    Args:
        num_classes: logits per exit: 10 or 100 for CIFAR (default 100), or
            any other.
        n_blocks: number of blocks, one exit each: 7 (default) or 10 in the
            paper.
        input_shape: `(H, W, C)`, default `(32, 32, 3)`.
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file or an
            authors' `.pth`/`.pth.tar` checkpoint.
        **kwargs: the other arguments of `MSDNet` (`bottleneck`,
            `reduction`, `prune`) and of `MultiExitModel` (`exit_weights`,
            `calibration`, `name`).

    Returns:
        An `MSDNet` (7 blocks: 3,067,960 parameters, 15.14 to 75.94 MFLOPs).

    Example:
    ```python
    model = adaptive_zoo.MSDNetCIFARAnytime(num_classes=100)
    logits = model(images)                         # the last exit
    logits, flops = model(images, budget=0.5, return_cost=True)  # anytime exit
    adaptive_zoo.profile(model).exit_flops         # cumulative FLOPs of each exit
    ```
    """
    return MSDNet(
        n_blocks=n_blocks, step_mode="even", step=2, base=4, n_channels=16, growth_rate=6,
        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), imagenet_stem=False, head_width=128,
        num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs,
    )


def MSDNetCIFARBudgeted(num_classes=100, n_blocks=5, input_shape=(32, 32, 3), weights=None, **kwargs):
    """MSDNet for CIFAR, budgeted batch classification (`lin_grow`, step 1, base 1).

    Args:
        n_blocks: number of blocks, one exit each (default 5); with
            `lin_grow`, block `i` (counted from 0) has `i + 1` layers.
        num_classes, input_shape, weights, **kwargs: as in
            `MSDNetCIFARAnytime`.

    Returns:
        An `MSDNet` with `n_blocks` exits.

    Example:
    ```python
    model = adaptive_zoo.MSDNetCIFARBudgeted(num_classes=100, n_blocks=5)
    model.calibrate((x_held, y_held), budgets=[0.5, 1.0])  # exit thresholds
    logits = model.predict(x_test, budget=0.5)             # calibrated early exit
    ```
    """
    return MSDNet(
        n_blocks=n_blocks, step_mode="lin_grow", step=1, base=1, n_channels=16, growth_rate=6,
        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), imagenet_stem=False, head_width=128,
        num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs,
    )


def MSDNetImageNet(step=4, num_classes=1000, input_shape=(224, 224, 3), weights=None, **kwargs):
    """MSDNet for ImageNet (5 blocks, `even`, step = base = 4, 6 or 7).

    Args:
        step: layers per block, and in the first block: 4 (default), 6 or 7,
            the published configurations (any other value raises a
            `ValueError`).
        num_classes: logits per exit (default 1000).
        input_shape: `(H, W, C)`, default `(224, 224, 3)`.
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file or an
            authors' `.pth`/`.pth.tar` checkpoint (e.g. their
            `msdnet-step=4-block=5.pth.tar`).
        **kwargs: the other arguments of `MSDNet` (`bottleneck`,
            `reduction`, `prune`) and of `MultiExitModel` (`exit_weights`,
            `calibration`, `name`).

    Returns:
        An `MSDNet` (step 4: 23,958,440 parameters, 339.90 to 1360.53 MFLOPs).

    Example:
    ```python
    model = adaptive_zoo.MSDNetImageNet(step=4, weights="msdnet-step=4-block=5.pth.tar")
    logits = model(images, budget=0.5)
    print(adaptive_zoo.profile(model))
    ```
    """
    if step not in (4, 6, 7):
        raise ValueError(f"The published ImageNet MSDNets have step 4, 6 or 7; got {step}.")
    return MSDNet(
        n_blocks=5, step_mode="even", step=step, base=step, n_channels=32, growth_rate=16,
        gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4), imagenet_stem=True, head_width=None,
        num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs,
    )


def MSDNetTiny(num_classes=10, input_shape=(16, 16, 1), n_blocks=4, weights=None, **kwargs):
    """A small MSDNet for small images (our digits demo; not from the paper).

    Three scales (16/8/4 px at 16x16 input), 8 stem channels, growth 4, one
    layer per block after a first block of two; about 0.1 M parameters.

    Args:
        num_classes: logits per exit (default 10, the digits).
        input_shape: `(H, W, C)`, default `(16, 16, 1)`.
        n_blocks: number of blocks, one exit each (default 4).
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file or a
            `.pth`/`.pth.tar` checkpoint in the authors' format.
        **kwargs: the other arguments of `MSDNet` (`bottleneck`,
            `reduction`, `prune`) and of `MultiExitModel` (`exit_weights`,
            `calibration`, `name`).

    Returns:
        An `MSDNet` with `n_blocks` exits.

    Example:
    ```python
    (x_train, y_train), (x_test, y_test) = adaptive_zoo.data.load_digits(image_size=16)
    model = adaptive_zoo.MSDNetTiny(num_classes=10)
    model.compile(optimizer="adam")
    model.fit(x_train, y_train, epochs=10)
    logits = model(x_test, budget=0.5)
    ```
    """
    return MSDNet(
        n_blocks=n_blocks, step_mode="even", step=1, base=2, n_channels=8, growth_rate=4,
        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), imagenet_stem=False, head_width=32,
        num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs,
    )
