"""DMNN: Dynamic Multi-path Neural Network (Su et al., arXiv 1902.10949).

Every residual block (ResNet bottleneck, MobileNetV2 inverted residual) that
keeps its shape is split into `N` parallel sub-blocks; a light controller
(`GumbelGate`) decides per image which of them run (`SubBlockBranch`). The
downsampling block, and the first block of each stage, always run.

The budget contract (DESIGN.md):

- `model(x)`: the gates as trained (a sub-block runs where its "on"
  probability reaches 0.5).
- `model(x, budget=b)`: spend about `b` times the full model's FLOPs per
  image: a global threshold on the "on" probabilities calibrated on held-out
  data (`model.calibrate`), or, uncalibrated, each image's top-`k_l`
  sub-blocks in block `l`, with `k_l` planned so the cost meets `b`.
- `return_cost=True`: the FLOPs each image actually used.
- Inference skips work: per sub-block, only the images for which it is on are
  gathered, computed, and scatter-added back. Training runs the dense,
  differentiable path (hard straight-through Gumbel samples).
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from adaptive_zoo import budget as budget_lib
from adaptive_zoo import cost
from adaptive_zoo import fast_path
from adaptive_zoo.checks import is_whole_number, positive_integer
from adaptive_zoo.models.base import ZooModel
from adaptive_zoo.models.inputs import (
    checked_batches,
    held_out_passes,
    positive_batch_size,
)
from adaptive_zoo import losses as losses_lib
from adaptive_zoo import weights as weights_lib
from adaptive_zoo.layers.base import Layer
from adaptive_zoo.layers.conv_bn import AuthorsInit, ConvBNAct
from adaptive_zoo.layers.gumbel_gate import GumbelGate
from adaptive_zoo.layers.sub_block_branch import (
    BottleneckSubBlock,
    InvertedResidualSubBlock,
    SubBlockBranch,
)

__all__ = [
    "DMNN",
    "DMNN50",
    "DMNN50CIFAR",
    "DMNN101",
    "DMNN101CIFAR",
    "DMNNMobileNetV2",
    "DMNNMobileNetV2CIFAR",
    "DMNNResNet",
    "ResNetBlock",
]

_MODES = ("auto", "topk", "calibrated")

# Sub-block width = width_factor * (original width) / N, rounded; chosen so the
# parameter totals match the paper's (PAPERS.md: DMNN-50 N=2 24.67M, N=4 25.81M).
_RESNET_WIDTH_FACTORS = {1: 1.0, 2: 1.2, 4: 1.5}


def _is_tracer(x):
    if isinstance(x, keras.KerasTensor):
        return True
    if keras.backend.backend() != "jax":
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


def _round_width(value):
    """Widths of 16 and more round to a multiple of 8, smaller ones to an int."""
    if value >= 16:
        return max(8, int(round(value / 8.0)) * 8)
    return max(1, int(round(value)))


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class ResNetBlock(Layer):
    """A plain (always-run) ResNet bottleneck block with a projection shortcut.

    Args:
        width: bottleneck width.
        filters: output channels (4 x width in ResNet-50).
        strides: stride of the 3x3 convolution (torchvision v1.5 places it there).
        **kwargs: base layer arguments.

    Returns:
        `relu(f(x) + shortcut(x))`, `(batch, H_out, W_out, filters)`.

    Example:
    ```python
    y = ResNetBlock(8, 32, strides=2)(keras.ops.ones((1, 8, 8, 16)))  # (1, 4, 4, 32)
    ```
    """

    def __init__(self, width, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.width, self.filters, self.strides = int(width), int(filters), int(strides)
        self.residual = BottleneckSubBlock(self.width, self.filters, self.strides, name="residual")
        self.shortcut = None

    def _projects(self, input_shape):
        return self.strides != 1 or input_shape[-1] != self.filters

    def build(self, input_shape):
        self.residual.build(input_shape)
        if self._projects(input_shape):
            self.shortcut = ConvBNAct(self.filters, 1, strides=self.strides, activation=None,
                                      name="shortcut")
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        y = self.residual(inputs, training=training)
        identity = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return ops.relu(y + identity)

    def compute_output_shape(self, input_shape):
        return self.residual.compute_output_shape(input_shape)

    def flops(self, input_shape):
        """Multiply-adds for one image `(H, W, C)`."""
        _, h, w, c = self.compute_output_shape((None,) + tuple(input_shape))
        total = self.residual.flops(input_shape) + cost.relu_flops(h, w, c)
        if self._projects(input_shape):
            total += cost.conv_flops(input_shape[-1], self.filters, 1, h, w)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, filters=self.filters, strides=self.strides)
        return config


class DMNN(ZooModel):
    """Base of the DMNN models: gated sub-block networks with a compute budget.

    A subclass builds `self.stem` (a list of layers), `self.blocks` (a list
    of layers, each a fixed block or a `SubBlockBranch`), `self.gates` (one
    `GumbelGate` per gated branch, in order), `self.head` (a list of layers on
    the pooled features, ending in the classifier), and `self.block_stage`
    (the stage index of each block).

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        sub_blocks: `N`, sub-blocks per gated block (1: the static network,
            no controllers, every block always runs).
        target_rate: the execution rate `t` in (0, 1] the resource loss aims at.
        category_map: `None`, a named mapping (`"cifar100"`, `"fashion_mnist"`:
            `losses.CATEGORY_MAPS`), or one category per class: adds
            a category head on every controller state (dropped after
            training, not counted in `profile(model).params`).
        category_weights: loss weight of the category heads per stage
            (the last `S` entries are used for a network of `S` stages).
        resource_weight: weight of the resource terms (rate + FLOPs losses);
            ConvNet-AIG uses 2 on CIFAR and 1 on ImageNet.
        calibration: a `budget.Calibration` (or its config dict), set by
            `calibrate`: one threshold on the "on" probabilities per budget.
        seed: seed of the Gumbel noise.
        **kwargs: `keras.Model` arguments (`name`).

    Example:
    ```python
    model = adaptive_zoo.DMNN50(sub_blocks=2, target_rate=0.5)   # a `DMNNResNet`
    logits = model(images)                                  # the gates as trained
    logits, flops = model(images, budget=0.7, return_cost=True)  # top-k sub-blocks
    model.calibrate((x_held, y_held), budgets=[0.5, 0.7, 0.9])   # one threshold per budget
    ```
    """

    def __init__(self, input_shape, num_classes, sub_blocks, target_rate, category_map=None,
                 category_weights=losses_lib.CATEGORY_STAGE_WEIGHTS, resource_weight=1.0,
                 calibration=None, seed=None, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        if isinstance(sub_blocks, bool) or int(sub_blocks) != sub_blocks or sub_blocks < 1:
            raise ValueError(f"sub_blocks must be an integer >= 1, got {sub_blocks!r}.")
        try:
            rate = float(target_rate)
        except (TypeError, ValueError):
            rate = float("nan")
        if not math.isfinite(rate) or not 0.0 < rate <= 1.0:
            raise ValueError(f"target_rate must be a number in (0, 1], got {target_rate!r}.")
        self.sub_blocks = int(sub_blocks)
        self.target_rate = rate
        self.category_weights = [float(w) for w in category_weights]
        self.resource_weight = float(resource_weight)
        self.seed = seed
        self.category_map_config = category_map
        if category_map is not None:
            self.category_map, self.num_categories = losses_lib.validate_category_map(
                category_map, self.num_classes)
        else:
            self.category_map, self.num_categories = None, 0
        self.calibration = _as_calibration(calibration)
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.rate_loss_tracker = keras.metrics.Mean(name="rate_loss")
        self.flops_loss_tracker = keras.metrics.Mean(name="flops_loss")
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.execution_rate_tracker = keras.metrics.Mean(name="execution_rate")

    # ------------------------------------------------------------------ #
    # Construction helpers for subclasses.
    # ------------------------------------------------------------------ #
    def _finish(self, weights, family):
        """Create the category heads, build, and load weights."""
        self.gate_of_block = []
        g = 0
        for block in self.blocks:
            if isinstance(block, SubBlockBranch) and not self.static:
                self.gate_of_block.append(g)
                g += 1
            else:
                self.gate_of_block.append(-1)
        if g != len(self.gates):
            raise RuntimeError("internal: one gate per gated branch expected.")
        if not self.static and not g:
            raise ValueError(
                f"sub_blocks={self.sub_blocks} needs a block to gate, and this configuration has none: "
                "the first block of each stage always runs. Give a stage two or more blocks, or "
                "use sub_blocks=1 (the static network)."
            )
        self.category_heads = []
        if self.num_categories and not self.static:
            self.category_heads = [
                keras.layers.Dense(self.num_categories, name=f"category_head{i}")
                for i in range(len(self.gates))
            ]
        self.build()
        weights_lib.load_weights(self, weights, family=family)

    @property
    def static(self):
        return self.sub_blocks == 1

    # Where a Keras weights file keeps `category_heads` (`weights._h5_plan`):
    # a file may hold them for a model built without, and the reverse.
    _h5_training_only_groups = ("category_heads/",)

    @property
    def training_only_layers(self):
        return list(self.category_heads)

    def classifier_layers(self):
        return [layer for layer in self.head if layer.weights] + list(self.category_heads)

    def build(self, input_shape=None):
        shape = (None,) + self.image_shape
        for layer in self.stem:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        state_shape = None
        for block, g in zip(self.blocks, self.gate_of_block):
            if g >= 0:
                self.gates[g].build(shape)
                state_shape = (None, self.gates[g].units)
                if self.category_heads:
                    self.category_heads[g].build(state_shape)
            block.build(shape)
            shape = block.compute_output_shape(shape)
        shape = (None, shape[-1])
        for layer in self.head:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    # ------------------------------------------------------------------ #
    # Cost.
    # ------------------------------------------------------------------ #
    def _cost_table(self):
        """`(fixed, sub)`: always-run FLOPs, and per gate the sub-blocks' FLOPs."""
        if getattr(self, "_cost_cache", None) is not None:
            return self._cost_cache
        shape = (None,) + self.image_shape
        fixed, sub = 0, []
        for layer in self.stem:
            fixed += layer.flops(shape[1:])
            shape = layer.compute_output_shape(shape)
        for block, g in zip(self.blocks, self.gate_of_block):
            if isinstance(block, SubBlockBranch):
                flops = block.sub_block_flops(shape[1:])
                fixed += block.fixed_flops(shape[1:])
                if g >= 0:
                    fixed += self.gates[g].flops(shape[1:])
                    sub.append(flops)
                else:
                    fixed += sum(flops)
            else:
                fixed += block.flops(shape[1:])
            shape = block.compute_output_shape(shape)
        h, w, c = shape[1:]
        fixed += h * w * c  # global average pooling
        shape = (None, c)
        for layer in self.head:
            if isinstance(layer, keras.layers.Dense):
                fixed += cost.dense_flops(shape[-1], layer.units)
            elif hasattr(layer, "flops"):
                fixed += layer.flops(shape[1:])
            shape = layer.compute_output_shape(shape)
        self._cost_cache = (int(fixed), [[int(f) for f in s] for s in sub])
        return self._cost_cache

    def full_flops(self):
        fixed, sub = self._cost_table()
        return fixed + sum(sum(s) for s in sub)

    def controller_flops(self):
        """FLOPs of all the controllers for one image."""
        shape, total = (None,) + self.image_shape, 0
        for layer in self.stem:
            shape = layer.compute_output_shape(shape)
        for block, g in zip(self.blocks, self.gate_of_block):
            if g >= 0:
                total += self.gates[g].flops(shape[1:])
            shape = block.compute_output_shape(shape)
        return total

    def cost_profile(self):
        return self.full_flops(), None

    def cheapest_budget(self):
        """The smallest reachable budget: every gated sub-block off."""
        fixed, _ = self._cost_table()
        return fixed / self.full_flops()

    # ------------------------------------------------------------------ #
    # Input checks and budget rules.
    # ------------------------------------------------------------------ #
    def topk_plan(self, budget):
        """Sub-blocks to run per gated block for `budget` (uncalibrated rule).

        The budget leaves a fraction `r = (b * full - fixed) / gated` of the
        gated FLOPs; every gated block runs `r * N` sub-blocks on average:
        each image its top-`floor(r * N)` sub-blocks by "on" probability,
        and the images of the batch that most want their next sub-block
        (highest next probability), a fraction `frac(r * N)` of the batch,
        one more. That share is a whole number of images, rounded with the
        remainder carried from block to block, so a batch meets the budget
        whatever its size: a single image runs its extra sub-block in a
        fraction `frac(r * N)` of the blocks (rounding each block on its own
        gave one 224x224 image 0.370 of the full DMNN-50 at b = 0.5, and
        1.0 at b = 0.9).

        Returns:
            A list of floats `r * N`, one per gate.
        """
        budget = budget_lib.validate_budget(budget)
        fixed, sub = self._cost_table()
        full = self.full_flops()
        gated = full - fixed
        self._check_reachable(budget)
        r = 1.0 if gated == 0 else min(1.0, max(0.0, (budget * full - fixed) / gated))
        return [r * len(flops) for flops in sub]

    def _check_reachable(self, budget):
        cheapest = self.cheapest_budget()
        if budget < cheapest * 0.95:
            raise ValueError(
                f"budget {budget} is below what {self.name} can spend: its always-run parts "
                f"(stem, downsampling and first blocks, controllers, head) cost {cheapest:.4f} "
                "of the full model."
            )

    def thresholds_for(self, budget):
        """Calibrated threshold on the "on" probability for `budget`."""
        budget = budget_lib.validate_budget(budget)
        if self.calibration is None:
            raise ValueError("This model is not calibrated: call model.calibrate(data) first.")
        if not self._calibrated_for(budget):
            low, high = self.calibration.budget_range
            raise ValueError(
                f"budget {budget} is outside the calibrated range [{low:.4f}, "
                f"{high:.4f}]; calibrate for it, or pass mode='topk'."
            )
        return float(self.calibration.thresholds_for(budget)[0])

    def _rule(self, budget, mode):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        if budget is None:
            if mode != "auto":
                raise ValueError("mode applies to a budget; pass budget=... with it.")
            return ("threshold", 0.5)
        budget = budget_lib.validate_budget(budget)
        if self.static:
            self._check_reachable(budget)
            return ("threshold", 0.0)
        if mode == "calibrated" or (mode == "auto" and self._calibrated_for(budget)):
            return ("threshold", self.thresholds_for(budget))
        return ("topk", tuple(self.topk_plan(budget)))

    def _calibrated_for(self, budget):
        if self.calibration is None:
            return False
        low, high = self.calibration.budget_range
        return low - 1e-6 <= budget <= high + 1e-6

    def _gate_rule(self, rule, g):
        """Gate `g`'s part of `rule`, as `(kind, k, value)`.

        `kind` and `k` fix the shape of the decision (compiled once per
        pair); `value` is passed at run time: the threshold on the "on"
        probability (`k` is None), or, for top-k, the pair `(before, upto)`
        of cumulative fractions of a batch that run one sub-block more than
        the `k` every image runs, over the gates before `g` and up to `g`
        (gate `g`'s share is `round(upto * batch) - round(before * batch)`
        images: the rounding carries from gate to gate).
        """
        kind, value = rule
        if kind == "threshold":
            return kind, None, value
        wants = [float(w) for w in value]
        ks = [min(self.sub_blocks, int(math.floor(w + 1e-9))) for w in wants]
        extra = [max(0.0, w - k) for w, k in zip(wants, ks)]
        before = float(sum(extra[:g]))
        return kind, ks[g], (before, before + extra[g])

    @staticmethod
    def _decide(p_on, kind, k, value):
        """Booleans `(batch, N)`: which sub-blocks run (see `_gate_rule`)."""
        if kind == "threshold":
            return p_on >= value
        if k >= ops.shape(p_on)[-1]:
            return ops.ones_like(p_on, dtype="bool")
        order = ops.argsort(-p_on, axis=-1)
        rank = ops.argsort(order, axis=-1)  # rank of each sub-block per image, 0 = most wanted
        decisions = rank < k
        before, upto = value
        if isinstance(before, float) and isinstance(upto, float) and upto - before <= 1e-9:
            return decisions
        batch = ops.cast(ops.shape(p_on)[0], "float32")
        count = ops.round(upto * batch) - ops.round(before * batch)
        next_p = ops.sum(ops.where(rank == k, p_on, ops.zeros_like(p_on)), axis=-1)
        image_rank = ops.argsort(ops.argsort(-next_p))  # 0 = wants it most
        extra = ops.cast(image_rank, "float32") < count
        return ops.logical_or(decisions, ops.logical_and(rank == k, extra[:, None]))

    def _cost_of(self, decisions):
        """Per-image FLOPs `(batch,)` of the given per-gate decisions."""
        fixed, sub = self._cost_table()
        total = None
        for d, flops in zip(decisions, sub):
            w = ops.convert_to_tensor(np.asarray(flops, dtype="float32"))
            part = ops.sum(ops.cast(d, "float32") * w, axis=-1)
            total = part if total is None else total + part
        if total is None:
            return None
        return total + float(fixed)

    # ------------------------------------------------------------------ #
    # Forward passes.
    # ------------------------------------------------------------------ #
    def _features_to_logits(self, x, training=None):
        x = ops.mean(x, axis=(1, 2))
        for layer in self.head:
            x = fast_path.call_layer(layer, x, training=training)
        return x

    def _dense(self, inputs, training=None, rule=None):
        """The dense path: every sub-block computed; gates multiply.

        In training the gates are straight-through Gumbel samples; with a
        `rule` they are the rule's hard decisions (the masked reference used
        only where shapes must be static, e.g. under `jax.jit`).
        """
        x = inputs
        for layer in self.stem:
            x = layer(x, training=training)
        state, gates, states = None, [], []
        for block, g in zip(self.blocks, self.gate_of_block):
            if g < 0:
                x = block(x, training=training)
                continue
            gate = self.gates[g]
            if training:
                on, state = gate(x, previous_state=state, training=True)
            else:
                logits, state = gate.controller(x, state, training=training)
                on = self._decide(gate.on_probability(logits), *self._gate_rule(rule, g))
                on = ops.cast(on, x.dtype)
            gates.append(on)
            states.append(state)
            x = block(x, on, training=training)
        return self._features_to_logits(x, training=training), gates, states

    def _eager_pieces(self):
        def fixed(i, x):
            return self.blocks[i](x, training=False)

        def gate(g, x, state, rule):
            return self._gate_decisions(g, x, state, *self._gate_rule(rule, g))

        def stem(x):
            for layer in self.stem:
                x = layer(x, training=False)
            return x

        subs = lambda g, i: None  # noqa: E731 (the branch's own layers)
        return stem, fixed, gate, subs, lambda x: self._features_to_logits(x, training=False)

    def _gate_decisions(self, g, x, state, kind, k, value):
        """Gate `g`'s controller and its decision: `(decisions, state)`."""
        logits, state = self.gates[g].controller(x, state, training=False)
        return self._decide(GumbelGate.on_probability(logits), kind, k, value), state

    def _compiled_pieces(self):
        if "pieces" in self._compiled_fns:
            return self._compiled_fns["pieces"]
        # The network's own layers are row-wise; a gate's top-k is not.
        compile_ = functools.partial(fast_path.compile_inference, rowwise=True)

        def stem_fn(x):
            for layer in self.stem:
                x = layer(x, training=False)
            return x

        stem_c = compile_(stem_fn, [v for layer in self.stem for v in layer.variables])
        fixed_c = {}
        gate_c = {}  # (gate, kind, k): the controller and its decision
        sub_c = {}
        for i, (block, g) in enumerate(zip(self.blocks, self.gate_of_block)):
            if g < 0:
                fixed_c[i] = compile_(lambda x, b=block: b(x, training=False), block.variables)
            else:
                sub_c[g] = [fast_path.compile_accumulating(
                                lambda x, s=s: s(x, training=False), s.variables,
                                then=block._activate, bucket=_sub_block_bucket)
                            for s in block.sub_blocks]
        head_c = compile_(lambda x: self._features_to_logits(x, training=False),
                          [v for layer in self.head for v in layer.variables])

        def gate_fn(g, x, state, rule):
            kind, k, value = self._gate_rule(rule, g)
            key = (g, kind, k)
            if key not in gate_c:
                def decide(x, state, value, g=g, kind=kind, k=k):
                    return self._gate_decisions(g, x, state, kind, k, value)

                # Not padded to a bucket: the top-k ranks the real images only.
                gate_c[key] = fast_path.compile_inference(decide, self.gates[g].variables,
                                                          bucket=lambda n: n)
            return gate_c[key](x, state, value)

        pieces = (stem_c, lambda i, x: fixed_c[i](x), gate_fn, lambda g, i: sub_c[g][i], head_c)
        self._compiled_fns["pieces"] = pieces
        return pieces

    def _skipping(self, inputs, rule, pieces):
        """Inference with real skipping. Returns `(logits, decisions)`."""
        stem, fixed, gate, subs, head = pieces
        x = stem(inputs)
        state, decisions = None, []
        for i, (block, g) in enumerate(zip(self.blocks, self.gate_of_block)):
            if g < 0:
                x = fixed(i, x)
                continue
            d, state = gate(g, x, state, rule)
            decisions.append(d)
            fns = [subs(g, j) for j in range(block.num_sub_blocks)]
            # Compiled pieces may overwrite x: nothing reads it after the block.
            x = block.skip(x, d, None if fns[0] is None else fns, consume_inputs=fns[0] is not None)
        return head(x), decisions

    def call(self, inputs, budget=None, return_cost=False, mode="auto", training=None):
        """Run the model.

        Args:
            inputs: images `(batch, H, W, C)`.
            budget: `None` (the gates as trained) or a number in (0, 1]:
                spend about that fraction of the full FLOPs per image.
            return_cost: also return the FLOPs each image used, `(batch,)`.
            mode: `"auto"` (calibrated thresholds if the model is calibrated
                for `budget`, else per-image top-k), `"topk"` or
                `"calibrated"`.
            training: training mode: the dense path with Gumbel samples;
                returns `(logits, gates, category_logits)` for the losses.

        Returns:
            Logits `(batch, num_classes)`, and the per-image cost if
            `return_cost`.
        """
        inputs = self._checked_images(inputs)
        if training:
            if budget is not None:
                raise ValueError("budget applies to inference, not to training.")
            logits, gates, states = self._dense(inputs, training=True)
            if self.static:
                return logits
            categories = [head(s) for head, s in zip(self.category_heads, states)]
            return logits, gates, categories
        rule = self._rule(budget, mode)
        if self.static:
            logits, decisions = self._dense(inputs, training=training)[0], []
        elif _is_tracer(inputs):
            if budget is not None and not isinstance(inputs, keras.KerasTensor):
                raise ValueError(
                    "A budget skips sub-blocks per image, which needs data-dependent shapes that "
                    "jax.jit cannot hold. Call the model eagerly, or use "
                    "model.predict(x, budget=...), which compiles each piece separately.")
            # Shapes must be static here (jax.jit, symbolic build): the masked
            # reference path, for the gates as trained (Keras' own fit and
            # evaluate trace this on JAX). model.predict(...) runs the
            # skipping path.
            logits, decisions, _ = self._dense(inputs, training=False, rule=rule)
        else:
            logits, decisions = self._skipping(inputs, rule, self._eager_pieces())
        if not return_cost:
            return logits
        cost_ = self._cost_of(decisions)
        if cost_ is None:
            cost_ = ops.full((ops.shape(inputs)[0],), float(self.full_flops()))
        return logits, cost_

    def predict(self, x, batch_size=None, verbose="auto", budget=None, mode="auto",
                return_cost=False, **kwargs):
        """Batched inference on the skipping path, each piece compiled.

        Args:
            x: images `(N, H, W, C)` (NumPy or tensor), or an iterable of
                batches (or `(images, labels)` pairs).
            batch_size: batch size for arrays (default 32).
            budget: `None` (gates as trained) or a number in (0, 1].
            mode: as in `call`.
            return_cost: also return the per-image FLOPs.
            verbose: Keras' progress bar: `"auto"` or 1, a bar; 2, one line
                at the end; 0, silent.
            **kwargs: Keras' `predict` arguments: `steps` (read only the
                first `steps` batches); no `callbacks` (the skipping path's
                batch loop calls none), except on a static DMNN.

        Returns:
            NumPy logits `(N, num_classes)` (and costs `(N,)`).
        """
        rule = self._rule(budget, mode)
        if self.static:
            logits = super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
            if return_cost:
                return logits, np.full((logits.shape[0],), float(self.full_flops()), "float32")
            return logits
        logits, costs = self._predict_rule(x, rule, positive_batch_size(batch_size, 32),
                                           self._own_loop_steps(kwargs), verbose)
        return (logits, costs) if return_cost else logits

    # Keras' own export would trace `call`, whose traced path is the masked
    # reference: `export` runs the skipping path instead.
    _exports_by_call = False

    def _serving_fn(self, budget, mode):
        """`export`'s function: the skipping path for the gates as trained
        (`budget=None`) or for the budget's rule (TensorFlow only)."""
        rule = self._rule(budget, mode)
        if self.static:
            return lambda images: self._dense(images, training=False)[0]
        if not fast_path.graphs_hold_dynamic_shapes():
            raise ValueError(
                "An exported DMNN runs each sub-block only on the images for which it is on, "
                "which needs data-dependent shapes in the graph: export it with "
                "KERAS_BACKEND=tensorflow (save_weights here, load_weights there), or serve "
                "with model.predict(x, budget=...).")
        return lambda images: self._skipping(images, rule, self._eager_pieces())[0]

    def _whole_skipping(self, rule):
        """The skipping path compiled as one function, where the backend
        holds data-dependent shapes (TensorFlow); else `None`."""
        key = ("skipping", rule)
        if key not in self._compiled_fns:
            self._compiled_fns[key] = fast_path.compile_dynamic(
                lambda x: self._skipping(x, rule, self._eager_pieces()), self.variables
            )
        return self._compiled_fns[key]

    def _predict_rule(self, x, rule, batch_size, steps=None, verbose=0):
        outputs, costs = [], []
        whole = self._whole_skipping(rule)
        pieces = None if whole is not None else self._compiled_pieces()
        for batch in checked_batches(x, batch_size, self._check_inputs, steps, verbose):
            if whole is not None:
                logits, decisions = whole(batch)
            else:
                logits, decisions = self._skipping(batch, rule, pieces)
            outputs.append(ops.convert_to_numpy(logits))
            costs.append(ops.convert_to_numpy(self._cost_of(decisions)))
        return np.concatenate(outputs), np.concatenate(costs)

    # ------------------------------------------------------------------ #
    # Calibration.
    # ------------------------------------------------------------------ #
    def calibrate(self, data, budgets=None, batch_size=None, tolerance=0.01, verbose="auto"):
        """Calibrate the threshold on "on" probabilities for each budget.

        For each budget, a bisection on the global threshold until the mean
        executed FLOPs on `data` (held-out images) is within `tolerance` of
        `budget * full` (`budget.search_gate_threshold`). The result is
        stored in the model's config (it survives `.keras` saving and
        loading).

        Args:
            data: images `(N, H, W, C)`, `(images, labels)`, or an iterable
                of image batches or of `(images, labels)` batches. Labels are
                optional: with them, the accuracy at each budget is measured.
                Every image counts alike: sample weights are refused.
                The search reads the data once per threshold it tries
                (the budgets' searches share their first steps), one batch
                at a time: a dataset that can be iterated again (`tf.data`, a
                `PyDataset`, a list of batches) is never held in memory
                whole; a generator is read into memory first. It must give
                the same images at each reading (no random augmentation).
            budgets: budgets in (0, 1]. Default: 8 points from just above
                the cheapest reachable budget to 1.
            batch_size: batch size for arrays.
            tolerance: relative cost tolerance of the search.
            verbose: Keras' progress bar over the batches of each reading
                of the data, as in `predict`: `"auto"` or 1, a bar per
                reading; 2, one line per reading; 0, silent.

        Returns:
            The `budget.Calibration`, as the multi-exit models' `calibrate`
            returns it: `budgets`, `thresholds` (one per budget, in a list of
            one), `mean_flops` and `accuracy` on `data` (NaN without labels),
            ready to plot.

        Example:
        ```python
        curve = model.calibrate((x_held, y_held), budgets=[0.5, 0.7, 0.9])
        plt.plot(curve.mean_flops, curve.accuracy)
        ```
        """
        if self.static:
            raise ValueError("A static DMNN (sub_blocks=1) has no gates to calibrate.")
        size = positive_batch_size(batch_size, 64)
        passes = held_out_passes(data, labels_required=False, batch_size=size, verbose=verbose,
                                 check_labels=self._check_labels)
        full = self.full_flops()
        if budgets is None:
            low = min(1.0, self.cheapest_budget() + 0.05)
            budgets = np.linspace(low, 1.0, 8)
        budgets = budget_lib.validate_budgets(budgets)
        for b in budgets:
            self._check_reachable(b)

        reading = self._threshold_reading(passes)
        result = budget_lib.Calibration([], [], [], [])
        for b in budgets:
            tau, spent, accuracy = budget_lib.search_gate_threshold(reading, b * full, tolerance)
            if abs(spent - b * full) > 0.05 * b * full:
                raise ValueError(
                    f"Cannot calibrate budget {b}: the closest mean cost reachable on this data "
                    f"is {spent / full:.4f} of the full model."
                )
            result.budgets.append(float(b))
            result.thresholds.append([float(tau)])
            result.mean_flops.append(float(spent))
            result.accuracy.append(float(accuracy))
        self.calibration = result
        return result

    def _threshold_reading(self, passes):
        """`tau -> (mean cost, accuracy)` on the held-out data, memoized.

        Each new `tau` is one pass over `passes()` (batch by batch); accuracy
        is NaN where a batch comes without labels. The search tries many
        thresholds, so it reads them through the masked path (the same
        decisions and costs as the skipping path), compiled once with the
        threshold as an input.
        """
        def cost_fn(x, tau):
            logits, gates, _ = self._dense(x, training=False, rule=("threshold", tau[:, None]))
            return self._cost_of(gates), ops.argmax(logits, axis=-1)

        run = fast_path.compile_inference(cost_fn, self.variables)

        @functools.cache
        def reading(tau):
            spent, right, count, labelled = 0.0, 0, 0, True
            for images, labels in passes():
                rows = len(images)
                taus = np.full((rows,), tau, dtype="float32")
                costs, classes = run(self._checked_images(images), ops.convert_to_tensor(taus))
                spent += float(np.sum(ops.convert_to_numpy(costs), dtype="float64"))
                count += rows
                labelled = labelled and labels is not None
                if labelled:
                    right += int(np.sum(ops.convert_to_numpy(classes) == labels))
            return spent / count, (right / count if labelled else float("nan"))

        return reading

    # ------------------------------------------------------------------ #
    # Training.
    # ------------------------------------------------------------------ #
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, (tuple, list)):
            if self.static or x is None:
                return super().compute_loss(x, y, y_pred, sample_weight, training=training)
            # Evaluation (`evaluate`, `fit`'s validation): `y_pred` are the
            # logits. The gates as they decide at inference give the other
            # terms, so that `val_execution_rate` is the real one.
            _, gates, states = self._dense(self._checked_images(x), training=False,
                                           rule=self._rule(None, "auto"))
            y_pred = (y_pred, gates, [head(s) for head, s in zip(self.category_heads, states)])
        if self._compile_loss is None:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        logits, gates, category_logits = y_pred
        task = self._compile_loss(y, logits, sample_weight)
        _, sub = self._cost_table()
        rate = losses_lib.execution_rate_loss(gates, self.target_rate)
        flops = losses_lib.flops_loss(gates, sub, self.target_rate)
        total = task + self.resource_weight * (rate + flops)
        category = ops.zeros(())
        if category_logits:
            labels = ops.convert_to_tensor(y)
            if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes:
                labels = ops.argmax(labels, axis=-1)
            labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
            table = ops.convert_to_tensor(np.asarray(self.category_map, dtype="int32"))
            categories = ops.take(table, labels, axis=0)
            category = losses_lib.category_loss(category_logits, categories,
                                                self._category_weight_per_gate())
            total = total + category
        for loss in self.losses:
            total = total + self._aggregate_additional_loss(loss)
        execution = ops.mean(ops.stack([ops.mean(g) for g in gates]))
        self.task_loss_tracker.update_state(task)
        self.rate_loss_tracker.update_state(rate)
        self.flops_loss_tracker.update_state(flops)
        self.category_loss_tracker.update_state(category)
        self.execution_rate_tracker.update_state(execution)
        return total

    def _category_weight_per_gate(self):
        stages = [s for s, g in zip(self.block_stage, self.gate_of_block) if g >= 0]
        distinct = sorted(set(stages))
        weights = self.category_weights[-len(distinct):]
        if len(weights) < len(distinct):
            weights = [weights[0]] * (len(distinct) - len(weights)) + weights
        lookup = dict(zip(distinct, weights))
        return [lookup[s] for s in stages]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, (tuple, list)):
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # ------------------------------------------------------------------ #
    # Serialization.
    # ------------------------------------------------------------------ #
    def get_config(self):
        config = super().get_config()
        config.update(
            sub_blocks=self.sub_blocks,
            target_rate=self.target_rate,
            category_map=(self.category_map_config if isinstance(self.category_map_config, str)
                          else None if self.category_map is None
                          else [int(c) for c in self.category_map]),
            category_weights=[float(w) for w in self.category_weights],
            resource_weight=self.resource_weight,
            calibration=None if self.calibration is None else self.calibration.to_config(),
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class DMNNResNet(DMNN):
    """DMNN on a ResNet with bottleneck blocks (ResNet-50/101 style, v1.5).

    Args:
        depths: blocks per stage (`(3, 4, 6, 3)`: ResNet-50).
        base_width: bottleneck width of the first stage (64); stage `s` has
            `base_width * 2**s`, and 4 times that output channels.
        sub_blocks: `N` (1: the static ResNet, no controllers).
        width_factor: sub-block width = `width_factor * width / N`
            (default: 1.2 for N=2, 1.5 for N=4, chosen to match the paper's
            parameter totals; 1 otherwise).
        cifar_stem: a 3x3 stem without max-pool (32x32 inputs) instead of
            7x7/2 + max-pool.
        stem_strides: strides of that 3x3 stem, 1 or 2 (`DMNN50CIFAR` and
            `DMNN101CIFAR` use 2: see there). Only with `cifar_stem=True`.
        target_rate, num_classes, input_shape, category_map, ...: see `DMNN`.
        weights: `None`, a registered name, or a `.weights.h5` path.

    Example:
    ```python
    model = DMNNResNet(depths=(2, 2), base_width=4, sub_blocks=2, target_rate=0.5,
                       cifar_stem=True, num_classes=10, input_shape=(8, 8, 1))
    logits, flops = model(images, budget=0.7, return_cost=True)
    ```
    """

    def __init__(self, depths=(3, 4, 6, 3), base_width=64, sub_blocks=2, target_rate=0.5,
                 width_factor=None, cifar_stem=False, stem_strides=1, num_classes=1000,
                 input_shape=(224, 224, 3), weights=None, **kwargs):
        super().__init__(input_shape=input_shape, num_classes=num_classes,
                         sub_blocks=sub_blocks, target_rate=target_rate, **kwargs)
        counts = list(depths)
        if not counts or not all(is_whole_number(d) and d >= 1 for d in counts):
            raise ValueError(f"depths must be positive block counts, got {depths!r}.")
        self.depths = [int(d) for d in counts]
        self.base_width = positive_integer(base_width, "base_width")
        self.width_factor = (float(width_factor) if width_factor is not None
                             else _RESNET_WIDTH_FACTORS.get(self.sub_blocks, 1.0))
        self.cifar_stem = bool(cifar_stem)
        if stem_strides not in (1, 2) or isinstance(stem_strides, bool):
            raise ValueError(f"stem_strides must be 1 or 2, got {stem_strides!r}.")
        if stem_strides != 1 and not self.cifar_stem:
            raise ValueError("stem_strides applies to the 3x3 stem of cifar_stem=True; the "
                             "ImageNet stem is always 7x7 with strides 2, then a max-pool.")
        self.stem_strides = int(stem_strides)
        n = self.sub_blocks
        if self.cifar_stem:
            self.stem = [ConvBNAct(self.base_width, 3, strides=self.stem_strides,
                                   name="stem_conv")]
        else:
            self.stem = [ConvBNAct(self.base_width, 7, strides=2, name="stem_conv"),
                         MaxPool3x3(name="stem_pool")]
        self.blocks, self.gates, self.block_stage = [], [], []
        seed = self.seed
        for s, depth in enumerate(self.depths):
            width = self.base_width * 2**s
            filters = 4 * width
            for b in range(depth):
                name = f"stage{s + 1}_block{b + 1}"
                if b == 0:
                    self.blocks.append(ResNetBlock(width, filters, strides=1 if s == 0 else 2,
                                                   name=name))
                else:
                    sub_width = width if n == 1 else _round_width(self.width_factor * width / n)
                    self.blocks.append(SubBlockBranch("bottleneck", [sub_width] * n, filters,
                                                      activation="relu", name=name))
                    if n > 1:
                        self.gates.append(GumbelGate(
                            n, use_previous_state=bool(self.gates),
                            seed=None if seed is None else seed + len(self.gates),
                            name=f"{name}_gate"))
                self.block_stage.append(s)
        self.head = [keras.layers.Dense(self.num_classes, kernel_initializer=AuthorsInit("dense"),
                                        name="classifier")]
        self._finish(weights, family="dmnn")

    def _family_config(self):
        return dict(depths=list(self.depths), base_width=self.base_width,
                    width_factor=self.width_factor, cifar_stem=self.cifar_stem,
                    stem_strides=self.stem_strides)


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class MaxPool3x3(keras.layers.Layer):
    """3x3 stride-2 max-pool with PyTorch's padding 1 (`fast_path.max_pool`)."""

    def call(self, inputs):
        return fast_path.max_pool(inputs, 3, strides=2, padding=1)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        out = lambda d: None if d is None else cost.conv_output_size(d, 3, 2, 1)  # noqa: E731
        return (n, out(h), out(w), c)

    def flops(self, input_shape):
        h, w, c = input_shape
        return cost.pool_flops(c, cost.conv_output_size(h, 3, 2, 1),
                               cost.conv_output_size(w, 3, 2, 1), 3)


# (expansion t, channels c, repeats n, stride s), MobileNetV2's table.
_MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class DMNNMobileNetV2(DMNN):
    """DMNN on MobileNetV2: each residual inverted block split into `N`
    sub-blocks of `expanded / N` hidden channels each.

    Args:
        sub_blocks: `N` (1: the static MobileNetV2, 3,504,872 parameters).
        target_rate: the execution rate `t`.
        cifar: stride-1 stem and stride-1 second stage (32x32 inputs).
        width_multiplier: channel multiplier (1.0 is the paper's; channels
            round to multiples of 8 as torchvision).
        dropout: dropout before the classifier (0.2).
        num_classes, input_shape, weights, ...: see `DMNN`.

    Example:
    ```python
    model = DMNNMobileNetV2(sub_blocks=2, target_rate=0.9, num_classes=1000)
    print(adaptive_zoo.profile(model))
    ```
    """

    def __init__(self, sub_blocks=2, target_rate=0.9, cifar=False, width_multiplier=1.0,
                 dropout=0.2, num_classes=1000, input_shape=(224, 224, 3), weights=None,
                 **kwargs):
        super().__init__(input_shape=input_shape, num_classes=num_classes,
                         sub_blocks=sub_blocks, target_rate=target_rate, **kwargs)
        self.cifar = bool(cifar)
        self.width_multiplier = float(width_multiplier)
        self.dropout = float(dropout)
        if not (math.isfinite(self.width_multiplier) and self.width_multiplier > 0
                and 0.0 <= self.dropout < 1.0):
            raise ValueError(
                "Need width_multiplier > 0 and 0 <= dropout < 1; got "
                f"{width_multiplier!r} and {dropout!r}."
            )
        n = self.sub_blocks

        def channels(c):
            return _make_divisible(c * self.width_multiplier, 8)

        first = channels(32)
        self.stem = [ConvBNAct(first, 3, strides=1 if self.cifar else 2, activation="relu6",
                               name="stem_conv")]
        self.blocks, self.gates, self.block_stage = [], [], []
        c_in, stage = first, 0
        for i, (t, c, reps, s) in enumerate(_MOBILENETV2_SETTINGS):
            c_out = channels(c)
            if self.cifar and i == 1:
                s = 1
            for b in range(reps):
                stride = s if b == 0 else 1
                hidden = int(round(c_in * t))
                name = f"block{i}_{b}"
                if stride == 2:
                    stage += 1
                if stride == 1 and c_in == c_out:
                    widths = [hidden // n + (1 if j < hidden % n else 0) for j in range(n)]
                    self.blocks.append(SubBlockBranch("inverted_residual", widths, c_out,
                                                      activation=None, name=name))
                    if n > 1:
                        self.gates.append(GumbelGate(
                            n, use_previous_state=bool(self.gates),
                            seed=None if self.seed is None else self.seed + len(self.gates),
                            name=f"{name}_gate"))
                else:
                    self.blocks.append(InvertedResidualSubBlock(hidden, c_out, strides=stride,
                                                                expand=t != 1, name=name))
                self.block_stage.append(stage)
                c_in = c_out
        last = max(1280, channels(1280)) if self.width_multiplier > 1 else 1280
        self.blocks.append(ConvBNAct(last, 1, activation="relu6", name="last_conv"))
        self.block_stage.append(stage)
        self.head = [keras.layers.Dropout(self.dropout, name="dropout"),
                     keras.layers.Dense(self.num_classes, kernel_initializer=AuthorsInit("dense"),
                                        name="classifier")]
        self._finish(weights, family="dmnn")

    def _family_config(self):
        return dict(cifar=self.cifar, width_multiplier=self.width_multiplier,
                    dropout=self.dropout)


def _make_divisible(value, divisor):
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def DMNN50(sub_blocks=2, target_rate=0.5, num_classes=1000, input_shape=(224, 224, 3),
           weights=None, **kwargs):
    """DMNN-50: ResNet-50 with `N` sub-blocks per gated block.

    Args:
        sub_blocks: `N` (2 or 4 in the paper; 1 is the static ResNet-50).
        target_rate: `t` (paper: 0.5 for N=2, 0.7 for N=4).
        num_classes: logits.
        input_shape: `(H, W, C)`.
        weights: `None`, a registered name, or a path.

    Returns:
        A `DMNNResNet` (N=1: 25,557,032 parameters as torchvision's ResNet-50).

    Example:
    ```python
    model = DMNN50(sub_blocks=2, target_rate=0.5)
    print(adaptive_zoo.profile(model))
    ```
    """
    return DMNNResNet(depths=(3, 4, 6, 3), sub_blocks=sub_blocks, target_rate=target_rate,
                      num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs)


def DMNN101(sub_blocks=2, target_rate=0.5, num_classes=1000, input_shape=(224, 224, 3),
            weights=None, **kwargs):
    """DMNN-101: ResNet-101 with `N` sub-blocks per gated block.

    Args:
        sub_blocks: `N`, sub-blocks per gated block (default 2; 1 is the
            static ResNet-101, no controllers).
        target_rate: `t`, the execution rate in (0, 1] the resource loss
            aims at (default 0.5).
        num_classes: logits (default 1000).
        input_shape: `(H, W, C)`, default `(224, 224, 3)`.
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file.
        **kwargs: the other arguments of `DMNNResNet` (`base_width`,
            `width_factor`, `cifar_stem`, ...) and of `DMNN`
            (`category_map`, `category_weights`, `resource_weight`,
            `calibration`, `seed`, `name`).

    Returns:
        A `DMNNResNet` (N=1: 44,549,160 parameters as torchvision's ResNet-101).

    Example:
    ```python
    model = adaptive_zoo.DMNN101(sub_blocks=2, target_rate=0.5)
    print(adaptive_zoo.profile(model))
    ```
    """
    return DMNNResNet(depths=(3, 4, 23, 3), sub_blocks=sub_blocks, target_rate=target_rate,
                      num_classes=num_classes, input_shape=input_shape, weights=weights, **kwargs)


def DMNN50CIFAR(sub_blocks=4, target_rate=0.7, num_classes=100, input_shape=(32, 32, 3),
                stem_strides=2, weights=None, **kwargs):
    """DMNN-50 for 32x32 inputs: a 3x3 stem with strides 2, no max-pool.

    The paper gives its CIFAR-100 ResNet-50 0.33 GFLOPs and no architecture;
    that count is a ResNet-50 whose first stage runs at 16x16, which the
    stem's strides 2 give (0.325 GFLOPs with 100 classes; `profile`).
    `stem_strides=1` keeps the first stage at 32x32, the common CIFAR ResNet
    (1.30 GFLOPs, about 4 times the paper's).

    Args:
        sub_blocks, target_rate: `N` and `t` (the paper's CIFAR-100 model:
            N=4, t=0.7).
        num_classes, input_shape, weights: see `DMNN`.
        stem_strides: 2 (the paper's cost) or 1.
        **kwargs: the other arguments of `DMNNResNet`.

    Returns:
        A `DMNNResNet`.

    Example:
    ```python
    model = DMNN50CIFAR(num_classes=100, category_map="cifar100")
    print(adaptive_zoo.profile(model))   # full path: about 0.33 GFLOPs
    ```
    """
    return DMNNResNet(depths=(3, 4, 6, 3), sub_blocks=sub_blocks, target_rate=target_rate,
                      cifar_stem=True, stem_strides=stem_strides, num_classes=num_classes,
                      input_shape=input_shape, weights=weights, **kwargs)


def DMNN101CIFAR(sub_blocks=2, target_rate=0.5, num_classes=100, input_shape=(32, 32, 3),
                 stem_strides=2, weights=None, **kwargs):
    """DMNN-101 for 32x32 inputs: the stem of `DMNN50CIFAR` (3x3, strides 2,
    no max-pool), with ResNet-101's blocks.

    The paper reports no CIFAR ResNet-101; this follows its CIFAR ResNet-50.

    Args:
        sub_blocks, target_rate: `N` and `t`.
        num_classes, input_shape, weights: see `DMNN`.
        stem_strides: 2, or 1 for a first stage at 32x32.
        **kwargs: the other arguments of `DMNNResNet`.

    Returns:
        A `DMNNResNet`.

    Example:
    ```python
    model = DMNN101CIFAR(sub_blocks=2, target_rate=0.5, num_classes=100)
    ```
    """
    return DMNNResNet(depths=(3, 4, 23, 3), sub_blocks=sub_blocks, target_rate=target_rate,
                      cifar_stem=True, stem_strides=stem_strides, num_classes=num_classes,
                      input_shape=input_shape, weights=weights, **kwargs)


def DMNNMobileNetV2CIFAR(sub_blocks=2, target_rate=0.9, num_classes=100,
                         input_shape=(32, 32, 3), weights=None, **kwargs):
    """DMNN-MobileNetV2 for 32x32 inputs (stride-1 stem and second stage).

    Args:
        sub_blocks: `N`, sub-blocks per gated block (default 2; 1 is the
            static MobileNetV2, no controllers).
        target_rate: `t`, the execution rate in (0, 1] the resource loss
            aims at (default 0.9).
        num_classes: logits (default 100).
        input_shape: `(H, W, C)`, default `(32, 32, 3)`.
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file.
        **kwargs: the other arguments of `DMNNMobileNetV2`
            (`width_multiplier`, `dropout`) and of `DMNN` (`category_map`,
            `category_weights`, `resource_weight`, `calibration`, `seed`,
            `name`).

    Returns:
        A `DMNNMobileNetV2`.

    Example:
    ```python
    model = adaptive_zoo.DMNNMobileNetV2CIFAR(sub_blocks=2, target_rate=0.9, num_classes=100)
    logits, flops = model(images, budget=0.7, return_cost=True)
    ```
    """
    return DMNNMobileNetV2(sub_blocks=sub_blocks, target_rate=target_rate, cifar=True,
                           num_classes=num_classes, input_shape=input_shape, weights=weights,
                           **kwargs)


def _as_calibration(calibration):
    """A `budget.Calibration` from itself, its config, or the dict that
    DMNN's `calibrate` returned and its config held before (one float
    threshold per budget, no accuracy)."""
    if calibration is None or isinstance(calibration, budget_lib.Calibration):
        return calibration
    budgets = [float(b) for b in calibration["budgets"]]
    return budget_lib.Calibration.from_config({
        "budgets": budgets,
        "thresholds": [t if isinstance(t, (list, tuple)) else [t]
                       for t in calibration["thresholds"]],
        "mean_flops": calibration["mean_flops"],
        "accuracy": calibration.get("accuracy", [None] * len(budgets)),
    })


def _sub_block_bucket(n):
    """JAX: the rows a sub-block runs on, padded so that few shapes are
    compiled: one image as it is, else `fast_path.bucket_size` with four
    sizes per doubling, and at least 8 (8, 10, 12, 14, 16, 20, 24, 28, 32,
    40, ...: each less than 25% above `n`). Multiples of 8 padded the 17 of
    64 images that a DMNN-MobileNetV2 sub-block often runs on at b = 0.5 to
    24."""
    return n if n <= 1 else max(8, fast_path.bucket_size(n, per_doubling=4))
