"""RANet: Resolution Adaptive Networks (Yang et al., CVPR 2020).

Sub-networks, one per resolution, run from the lowest resolution up; each
later sub-network fuses the features of the one before it and adds exits of
its own. The structure follows the authors' code (yangle15/RANet-pytorch)
flag for flag, so their checkpoints convert exactly (`adaptive_zoo.convert`).

Real early exit: the network is cut into one stage per exit in the authors'
execution order, and the state between stages holds everything later stages
read (the current features, the per-layer features of the sub-network that
the next one fuses, and the base features of the sub-networks not yet
started). Samples that leave are dropped from that state, so the
higher-resolution sub-networks never start for them. Of a block's per-layer
features of one resolution the state keeps only the last: every layer appends
channels, so the others are its first channels (`RANet._plan_kept_state`).
"""

import math

import keras

from adaptive_zoo import weights as weights_lib
from adaptive_zoo.checks import integer, positive_integer
from adaptive_zoo.layers.multi_scale_dense import (
    MultiScaleDenseExit,
    RANetBlock,
    RANetFusionBlock,
    RANetStem,
)
from adaptive_zoo.models.multi_exit import MultiExitModel

__all__ = [
    "RANet",
    "RANetCIFARAnytime",
    "RANetCIFARBudgeted",
    "RANetImageNet",
    "ranet_block_plan",
]

_IMAGE = ("image",)


def _transition_flag(block, n_blocks, scale):
    """The authors' rule: a transition ends block `block` (1-based) of a
    sub-network with `n_blocks` blocks at scale `scale` when it is one of
    the `scale - 1` evenly spaced positions `floor(i * n_blocks / scale)`."""
    return any(block == math.floor(i * n_blocks / scale) for i in range(1, scale))


def ranet_block_plan(n_blocks, block_step, step_mode, step, scale_list):
    """The authors' block plan of RANet.

    Args:
        n_blocks: blocks of the lowest-resolution sub-network.
        block_step: each further sub-network has `block_step` more blocks.
        step_mode: `"even"` (`step` layers per block) or `"lg"` (block `b`,
            1-based, has `step * b` layers).
        step: layers per block (see `step_mode`).
        scale_list: scale index per sub-network, lowest resolution first.

    Returns:
        One list per sub-network of dicts with keys `layers`, `fusion`,
        `down`, `transition`, `exit` (whether an exit follows the block).
    """
    if step_mode not in ("even", "lg"):
        raise ValueError(f"step_mode must be 'even' or 'lg', got {step_mode!r}.")
    if n_blocks < 1 or block_step < 0 or step < 1:
        raise ValueError(
            f"Need n_blocks >= 1, block_step >= 0, step >= 1; got {n_blocks}, {block_step}, {step}."
        )
    if any(s < 1 for s in scale_list):
        raise ValueError(f"Scale indices start at 1; got scale_list {list(scale_list)}.")
    counts = [0] + [n_blocks + block_step * i for i in range(len(scale_list))]
    # As in the authors' code, one list of layer counts indexed by block
    # position is shared by all sub-networks; it grows when a non-fusion
    # block is added.
    steps = [step]
    plan = []
    for ii, scale in enumerate(scale_list):
        blocks = []
        # Fusion blocks whose position is among the last `scale - 1` block
        # counts of the earlier sub-networks end with a stride-2 layer (the
        # authors' list slice, reproduced with Python's slicing rules).
        down_at = counts[: ii + 1][-(scale - 1):]
        for b in range(1, counts[ii + 1] + 1):
            fusion = b <= counts[ii]
            layers = steps[b - 1]
            if not fusion:
                steps.append(step if step_mode == "even" else steps[-1] + step)
            blocks.append(dict(
                layers=layers,
                fusion=fusion,
                down=fusion and b in down_at,
                transition=_transition_flag(b, counts[ii + 1], scale),
                exit=not fusion,
            ))
        plan.append(blocks)
    return plan


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class RANet(MultiExitModel):
    """Resolution Adaptive Network: sub-networks from low to high resolution.

    Arguments mirror the authors' flags (`--nBlocks` is `n_blocks`,
    `--scale-list` is `scale_list`, ...). Sub-network `i` (lowest resolution
    first) starts from base features of `n_channels * gr_factor[i]`
    channels, grows by `growth_rate * gr_factor[i]` per layer and has
    `n_blocks + block_step * i` blocks; its blocks beyond the previous
    sub-network's count carry an exit.

    Args:
        n_blocks: blocks of the lowest-resolution sub-network.
        block_step: extra blocks per further sub-network.
        step_mode: `"even"` or `"lg"` (see `ranet_block_plan`).
        step: layers per block.
        scale_list: scale index per sub-network, lowest resolution first
            (equal indices share a resolution).
        n_channels: base channel count.
        growth_rate: base growth rate.
        gr_factor: per-sub-network channel factors.
        bn_factor: per-sub-network bottleneck factors.
        compress_factor: share of a fusion layer's channels taken from the
            lower-resolution sub-network.
        reduction: transition compression.
        bottleneck: the authors' flag (`--bnAfter`); their RANet always uses
            the post-activation bottleneck ConvBN, whatever its value, and so
            does this model. Only `True` is accepted.
        imagenet_stem: 7x7/2 conv + max-pool first layer (ImageNet) instead
            of 3x3.
        head_width: exit conv width; `None` keeps the channel count
            (ImageNet), CIFAR uses 128.
        num_classes: logits per exit.
        input_shape: `(H, W, C)`.
        weights: `None`, a registered name (`adaptive_zoo.weights`), or a
            path to a `.weights.h5` file or an authors' `.pth`/`.pth.tar`.
        **kwargs: `MultiExitModel` arguments (`exit_weights`, `calibration`,
            `name`).

    Example:
    ```python
    model = RANet(n_blocks=1, block_step=1, step=1, scale_list=(1, 2),
                  n_channels=4, growth_rate=4, gr_factor=(2, 1), bn_factor=(2, 1),
                  imagenet_stem=False, head_width=16, num_classes=10,
                  input_shape=(16, 16, 3))
    logits = model(images)                            # last exit
    logits, flops = model(images, budget=0.5, return_cost=True)
    ```
    """

    def __init__(
        self,
        n_blocks=2,
        block_step=2,
        step_mode="even",
        step=8,
        scale_list=(1, 2, 3, 4),
        n_channels=64,
        growth_rate=16,
        gr_factor=(4, 2, 2, 1),
        bn_factor=(4, 2, 2, 1),
        compress_factor=0.25,
        reduction=0.5,
        bottleneck=True,
        imagenet_stem=True,
        head_width=None,
        num_classes=1000,
        input_shape=(224, 224, 3),
        weights=None,
        **kwargs,
    ):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        n_blocks, block_step = integer(n_blocks, "n_blocks"), integer(block_step, "block_step")
        step = integer(step, "step")
        n_channels = positive_integer(n_channels, "n_channels")
        growth_rate = positive_integer(growth_rate, "growth_rate")
        scale_list = [integer(s, "each of scale_list") for s in scale_list]
        gr_factor = [positive_integer(g, "each of gr_factor") for g in gr_factor]
        bn_factor = [positive_integer(b, "each of bn_factor") for b in bn_factor]
        if not len(scale_list) == len(gr_factor) == len(bn_factor):
            raise ValueError(
                "scale_list, gr_factor and bn_factor need one entry per sub-network; got "
                f"{scale_list}, {gr_factor} and {bn_factor}."
            )
        if not bottleneck:
            raise ValueError(
                "The authors' RANet always uses the bottleneck ConvBN (their --bnAfter flag has "
                "no other working setting); bottleneck=False is not supported."
            )
        if not 0.0 < float(reduction) <= 1.0 or not 0.0 < float(compress_factor) < 1.0:
            raise ValueError(
                f"Need 0 < reduction <= 1 and 0 < compress_factor < 1; got {reduction} and "
                f"{compress_factor}."
            )
        self.arch = dict(
            n_blocks=n_blocks, block_step=block_step, step_mode=step_mode,
            step=step, scale_list=scale_list, n_channels=n_channels,
            growth_rate=growth_rate, gr_factor=gr_factor, bn_factor=bn_factor,
            compress_factor=float(compress_factor), reduction=float(reduction),
            bottleneck=True, imagenet_stem=bool(imagenet_stem), head_width=head_width,
        )
        plan = ranet_block_plan(n_blocks, block_step, step_mode, step, scale_list)
        self.stem = RANetStem([n_channels * g for g in gr_factor], scale_list, imagenet_stem,
                              name="stem")
        self.flows, self.heads, self._exit_blocks = [], [], []
        for ii, blocks in enumerate(plan):
            flow = []
            growth = growth_rate * gr_factor[ii]
            for b, spec in enumerate(blocks):
                name = f"flow{ii}_block{b}"
                if spec["fusion"]:
                    block = RANetFusionBlock(
                        spec["layers"], growth, bn_factor[ii], bn_factor[ii - 1],
                        compress_factor, down=spec["down"], transition=spec["transition"],
                        reduction=reduction, name=name,
                    )
                else:
                    block = RANetBlock(spec["layers"], growth, bn_factor[ii],
                                       transition=spec["transition"], reduction=reduction,
                                       name=name)
                flow.append(block)
                if spec["exit"]:
                    self._exit_blocks.append((ii, b))
                    self.heads.append(MultiScaleDenseExit(
                        num_classes, width=head_width, name=f"exit{len(self.heads)}"))
            self.flows.append(flow)
        self._exit_blocks = tuple(self._exit_blocks)
        self._plan_stages()
        self._build_all()
        weights_lib.load_weights(self, weights, family="ranet")

    # ------------------------------------------------------------------ #
    # The execution plan: ops in the authors' order, cut at the exits.
    # ------------------------------------------------------------------ #
    @staticmethod
    def _block_reads(ii, b, fusion, n_layers):
        """State keys block `b` of sub-network `ii` reads."""
        reads = [("base", ii) if b == 0 else ("x", ii)]
        if fusion:
            reads += [("low", ii - 1, b, j) for j in range(n_layers + 1)]
        return reads

    @staticmethod
    def _block_writes(ii, b, n_layers):
        return [("x", ii)] + [("low", ii, b, j) for j in range(n_layers + 1)]

    def _plan_stages(self):
        """Split the ops into stages and find the state kept between them."""
        n_flows = len(self.flows)
        stem_op = dict(kind="stem", reads=[_IMAGE], writes=[("base", i) for i in range(n_flows)])
        ops_in_order, stages, current = [stem_op], [], [stem_op]
        for ii, flow in enumerate(self.flows):
            for b, block in enumerate(flow):
                fusion = isinstance(block, RANetFusionBlock)
                op = dict(kind="block", flow=ii, block=b,
                          reads=self._block_reads(ii, b, fusion, block.num_layers),
                          writes=self._block_writes(ii, b, block.num_layers))
                current.append(op)
                ops_in_order.append(op)
                if (ii, b) in self._exit_blocks:
                    stages.append(current)
                    current = []
        # Blocks after the last exit (only when block_step is 0) feed no exit:
        # they are built (their weights exist in the authors' model) but
        # never run, as in the authors' cost count.
        self._stages = tuple(tuple(stage) for stage in stages)
        exit_reads = [[("x", ii)] for ii, _ in self._exit_blocks]
        live_keys = []
        for k in range(len(stages)):
            # Everything exit k reads, and everything a later op or exit reads
            # before a later op writes it.
            needed, written = list(exit_reads[k]), set()
            for j in range(k + 1, len(stages)):
                for op in stages[j]:
                    needed += [key for key in op["reads"] if key not in written]
                    written.update(op["writes"])
                needed += [key for key in exit_reads[j] if key not in written]
            live = []
            for key in needed:
                if key not in live:
                    live.append(key)
            live_keys.append(tuple(live))
        self._live = tuple(live_keys)

    def _plan_kept_state(self, shapes):
        """What the state between stages holds: `_live`, with each block's
        per-layer features of one resolution kept as the last of them.

        Every layer of a RANet block appends channels to its input (a fusion
        layer resizes that input only when it changes resolution), so a
        feature is the first channels of the next one of the same spatial
        size. Keeping only the widest cuts the state that gathers and the
        pooled stream copy at each exit (RANet CIFAR anytime's largest, at
        batch 64: 163 -> 53 MiB). Sets `_prefix_of` (feature key -> (key of
        the tensor kept, channels)) and `_kept` (the keys kept after each
        stage), from `shapes` (of every key, `_shape_pass`).
        """
        prefix_of = {}
        for ii, flow in enumerate(self.flows):
            for b, block in enumerate(flow):
                keys = self._block_writes(ii, b, block.num_layers)[1:]
                for j in reversed(range(len(keys))):
                    size = tuple(shapes[keys[j]][1:3])
                    wider = j + 1 < len(keys) and size == tuple(shapes[keys[j + 1]][1:3])
                    holder = prefix_of[keys[j + 1]][0] if wider else keys[j]
                    prefix_of[keys[j]] = (holder, int(shapes[keys[j]][3]))
        self._prefix_of = prefix_of
        self._kept = tuple(
            tuple(dict.fromkeys(prefix_of.get(key, (key,))[0] for key in live))
            for live in self._live
        )

    def _read(self, values, key):
        """Tensor `key` of `values`, or the first channels of the one kept
        in its place (`_plan_kept_state`)."""
        if key in values:
            return values[key]
        holder, channels = self._prefix_of[key]
        return values[holder][..., :channels]

    def _op_layer(self, op):
        return self.stem if op["kind"] == "stem" else self.flows[op["flow"]][op["block"]]

    def _run_op(self, op, values, training):
        if op["kind"] == "stem":
            for i, feature in enumerate(self.stem(values[_IMAGE], training=training)):
                values[("base", i)] = feature
            return
        outputs = self._op_layer(op)([self._read(values, key) for key in op["reads"]],
                                     training=training)
        for key, value in zip(op["writes"], outputs):
            values[key] = value

    # ------------------------------------------------------------------ #
    # MultiExitModel's contract.
    # ------------------------------------------------------------------ #
    @property
    def num_exits(self):
        return len(self.heads)

    def _unpack(self, k, state):
        keys = [_IMAGE] if k < 0 else self._kept[k]
        if not isinstance(state, (list, tuple)):
            state = [state]
        if len(state) != len(keys):
            raise ValueError(f"Stage state of {len(state)} tensors, expected {len(keys)}.")
        return dict(zip(keys, state))

    def _stage(self, k, state, training=None):
        values = self._unpack(k - 1, state)
        for op in self._stages[k]:
            self._run_op(op, values, training)
        return [values[key] for key in self._kept[k]]

    def _exit(self, k, state, training=None):
        values = self._unpack(k, state)
        return self.heads[k](values[("x", self._exit_blocks[k][0])], training=training)

    def _stage_layers(self, k):
        return [self._op_layer(op) for op in self._stages[k]] + [self.heads[k]]

    # ------------------------------------------------------------------ #
    # Shapes, building and cost.
    # ------------------------------------------------------------------ #
    def _shape_pass(self):
        """Input shape of every op and of every head, in execution order, and
        the shape of every state key."""
        shapes = {_IMAGE: (None,) + self.image_shape}
        op_inputs, head_inputs = {}, []
        shapes.update(zip([("base", i) for i in range(len(self.flows))],
                          self.stem.compute_output_shape(shapes[_IMAGE])))
        for ii, flow in enumerate(self.flows):
            for b, block in enumerate(flow):
                fusion = isinstance(block, RANetFusionBlock)
                reads = self._block_reads(ii, b, fusion, block.num_layers)
                missing = [key for key in reads if key not in shapes]
                if missing:
                    raise ValueError(
                        f"Fusion block {b} of sub-network {ii} needs {block.num_layers + 1} "
                        f"features of block {b} of sub-network {ii - 1}, which has fewer; "
                        "this configuration is not a valid RANet."
                    )
                op_inputs[(ii, b)] = [shapes[key] for key in reads]
                outputs = block.compute_output_shape(op_inputs[(ii, b)])
                shapes.update(zip(self._block_writes(ii, b, block.num_layers), outputs))
                if (ii, b) in self._exit_blocks:
                    head_inputs.append(shapes[("x", ii)])
        return op_inputs, head_inputs, shapes

    def _build_all(self):
        op_inputs, head_inputs, shapes = self._shape_pass()
        self._plan_kept_state(shapes)
        self.stem.build((None,) + self.image_shape)
        for ii, flow in enumerate(self.flows):
            for b, block in enumerate(flow):
                block.build(op_inputs[(ii, b)])
        for head, shape in zip(self.heads, head_inputs):
            head.build([shape])  # a list of scales: the head reads the last
        self.built = True

    def build(self, input_shape=None):
        if not self.built:
            self._build_all()

    def _stage_flops(self):
        op_inputs, _, _ = self._shape_pass()
        result = []
        for stage in self._stages:
            total = 0
            for op in stage:
                if op["kind"] == "stem":
                    total += self.stem.flops((None,) + self.image_shape)
                else:
                    key = (op["flow"], op["block"])
                    total += self.flows[key[0]][key[1]].flops(op_inputs[key])
            result.append(total)
        return result

    def _exit_own_flops(self):
        _, head_inputs, _ = self._shape_pass()
        return [head.flops([shape]) for head, shape in zip(self.heads, head_inputs)]

    def _family_config(self):
        return dict(self.arch)


def RANetCIFARAnytime(num_classes=100, input_shape=(32, 32, 3), weights=None, **kwargs):
    """RANet for CIFAR, the paper's anytime model (the authors' train_cifar.sh).

    `step 4 stepmode even scale-list 1-2-3-3 grFactor 4-2-1-1 bnFactor
    4-2-1-1 nChannels 16 growthRate 6` (8 exits).

    Args:
        num_classes: 10 or 100 for CIFAR, or any other.
        input_shape: `(32, 32, 3)`.
        weights: `None`, a registered name, or a path.
        **kwargs: further `RANet` / `MultiExitModel` arguments.

    Returns:
        A `RANet` (CIFAR-100: 3,354,710 parameters, 15.83 to 95.00 MFLOPs).

    Example:
    ```python
    model = adaptive_zoo.RANetCIFARAnytime(num_classes=100)
    logits = model(images)                         # the last exit
    logits, flops = model(images, budget=0.5, return_cost=True)  # anytime exit
    adaptive_zoo.profile(model).exit_flops         # cumulative FLOPs of each exit
    ```
    """
    return RANet(
        n_blocks=2, block_step=2, step_mode="even", step=4, scale_list=(1, 2, 3, 3),
        n_channels=16, growth_rate=6, gr_factor=(4, 2, 1, 1), bn_factor=(4, 2, 1, 1),
        imagenet_stem=False, head_width=128, num_classes=num_classes, input_shape=input_shape,
        weights=weights, **kwargs,
    )


def RANetCIFARBudgeted(num_classes=100, input_shape=(32, 32, 3), weights=None, **kwargs):
    """RANet for CIFAR with the other configuration of the authors' README.

    `step 2 nChannels 16 stepmode lg scale-list 1-2-3 grFactor 4-2-1 bnFactor
    4-2-1` (growthRate 6): three sub-networks, 6 exits, growing blocks.

    Args:
        num_classes: 10 or 100 for CIFAR, or any other.
        input_shape: `(32, 32, 3)`.
        weights: `None`, a registered name, or a path.
        **kwargs: further `RANet` / `MultiExitModel` arguments.

    Returns:
        A `RANet`.

    Example:
    ```python
    model = adaptive_zoo.RANetCIFARBudgeted(num_classes=100)
    model.calibrate((x_held, y_held), budgets=[0.5, 1.0])  # exit thresholds
    logits = model.predict(x_test, budget=0.5)             # calibrated early exit
    ```
    """
    return RANet(
        n_blocks=2, block_step=2, step_mode="lg", step=2, scale_list=(1, 2, 3),
        n_channels=16, growth_rate=6, gr_factor=(4, 2, 1), bn_factor=(4, 2, 1),
        imagenet_stem=False, head_width=128, num_classes=num_classes, input_shape=input_shape,
        weights=weights, **kwargs,
    )


def RANetImageNet(n_channels=64, num_classes=1000, input_shape=(224, 224, 3), weights=None,
                  **kwargs):
    """RANet for ImageNet (`growthRate 16 step 8 stepmode even scale-list
    1-2-3-4 grFactor 4-2-2-1 bnFactor 4-2-2-1`).

    Args:
        n_channels: 64 (the paper's anytime model: 149.14 M parameters, 434.97
            to 3333.49 MFLOPs) or 32 (the authors' README command).
        num_classes: logits per exit.
        input_shape: `(224, 224, 3)`.
        weights: `None`, a registered name, or a path.
        **kwargs: further `RANet` / `MultiExitModel` arguments.

    Returns:
        A `RANet` with 8 exits.

    Example:
    ```python
    model = adaptive_zoo.RANetImageNet(n_channels=64, weights="/path/model.pth.tar")
    logits = model(images, budget=0.5)
    print(adaptive_zoo.profile(model))
    ```
    """
    if n_channels not in (32, 64):
        raise ValueError(f"The published ImageNet RANets have n_channels 32 or 64; got {n_channels}.")
    return RANet(
        n_blocks=2, block_step=2, step_mode="even", step=8, scale_list=(1, 2, 3, 4),
        n_channels=n_channels, growth_rate=16, gr_factor=(4, 2, 2, 1), bn_factor=(4, 2, 2, 1),
        imagenet_stem=True, head_width=None, num_classes=num_classes, input_shape=input_shape,
        weights=weights, **kwargs,
    )
