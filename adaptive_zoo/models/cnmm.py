"""CNMM: Convolutional Neural Mixture Models (Ruiz and Verbeek, ICCV 2019).

One network embeds many CNNs: a grid of feature maps, `depth` columns by
`len(widths)` scales (each scale half the resolution of the one before),
where every edge is a `MixtureEdge` (a convolution block with a learned keep
probability). Column 0 is a fixed stem (a 3x3 convolution at full
resolution, then one stride-2 convolution per coarser scale). Node
`(d, s)` of every later column mixes up to three edges from column `d - 1`:
from the same scale, from the finer one (stride 2) and from the coarser one
(upsampled 2x).

- Training samples a relaxed Bernoulli mask per edge and image.
- `model(x)` is the unpruned mixture, computed in one expectation pass.
- `model(x, budget=b)` runs the graph pruned for `b` (`budget.prune_mixture`):
  edges with the lowest keep probability are dropped until what still
  reaches the output costs at most `b` times the full model; dropped edges,
  and nodes left without inputs or outputs, are not computed. The pruned
  graph is the same for every image.

The paper's exact grids and widths are not public (PAPERS.md); the presets
here are ours, and no CNMM parity or published accuracy is claimed.
"""

import collections

import keras
import numpy as np
from keras import ops

from adaptive_zoo import budget as budget_lib
from adaptive_zoo import cost, fast_path
from adaptive_zoo import weights as weights_lib
from adaptive_zoo.layers.conv_bn import AuthorsInit, ConvBNAct
from adaptive_zoo.layers.mixture_edge import MixtureEdge, mix_node
from adaptive_zoo.models.base import ZooModel
from adaptive_zoo.checks import positive_integer
from adaptive_zoo.models.inputs import checked_batches, positive_batch_size

__all__ = ["CNMM", "CNMMCIFAR", "CNMMTiny", "Plan"]

TASKS = ("classification", "segmentation")
IMAGE = "image"  # the root node of the graph

Plan = collections.namedtuple("Plan", ["edges", "flops"])
Plan.__doc__ = """A pruned graph: the live edge indices and the FLOPs of one image through it."""

# One edge of the graph: its ends, its layer, and whether pruning may drop it.
_Edge = collections.namedtuple("_Edge", ["source", "target", "layer", "prunable"])


@keras.saving.register_keras_serializable(package="adaptive_zoo")
class CNMM(ZooModel):
    """A Convolutional Neural Mixture Model, pruned to a budget at inference.

    Args:
        depth: columns of the grid, stem included (at least 2, and for
            classification at least `len(widths)`, so that the coarsest scale
            is reached).
        widths: channels of each scale, finest first; scale `s` has the input
            resolution divided by `2**s`.
        task: `"classification"` (global pooling and a classifier on the
            coarsest node of the last column: logits `(batch, num_classes)`)
            or `"segmentation"` (a 1x1 convolution on the finest node of the
            last column: logits `(batch, H, W, num_classes)`).
        num_classes: number of classes.
        input_shape: `(H, W, C)`.
        keep_logit: initial keep logit of every edge (`MixtureEdge`).
        temperature: relaxed Bernoulli temperature in training.
        pruning: `"probability"` (the paper's: drop the least likely edges
            first) or `"cost"` (probability per unit of cost).
        seed: seed of the edges' noise (edge `i` uses `seed + i`).
        weights: `None`, a registered name, or a `.weights.h5` path.
        **kwargs: `keras.Model` arguments (`name`).

    Example:
    ```python
    model = adaptive_zoo.CNMM(depth=4, widths=(8, 16, 32), num_classes=10,
                              input_shape=(8, 8, 1))
    logits = model(images)                                   # the whole mixture
    logits, flops = model(images, budget=0.5, return_cost=True)  # pruned graph
    model.plan(0.5).flops / adaptive_zoo.profile(model).flops   # <= 0.5
    ```
    """

    def __init__(self, depth=8, widths=(16, 32, 64, 128), task="classification", num_classes=10,
                 input_shape=(32, 32, 3), keep_logit=2.0, temperature=2.0 / 3.0,
                 pruning="probability", seed=None, weights=None, **kwargs):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.depth = positive_integer(depth, "depth")
        if isinstance(widths, (int, np.integer)) or not len(widths):
            raise ValueError(f"widths must be a non-empty list of channel counts, got {widths!r}.")
        self.widths = [positive_integer(w, "each of widths") for w in widths]
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        if pruning not in budget_lib.PRUNING_RULES:
            raise ValueError(f"pruning must be one of {budget_lib.PRUNING_RULES}, got {pruning!r}.")
        scales = len(self.widths)
        if self.depth < 2 or (task == "classification" and self.depth < scales):
            need = max(2, scales if task == "classification" else 2)
            raise ValueError(
                f"depth must be at least {need} for {task} with {scales} scales (a stem column "
                f"and enough columns to reach the output), got {depth!r}.")
        self.task = task
        self.keep_logit = float(keep_logit)
        self.temperature = float(temperature)
        self.pruning = pruning
        self.seed = seed
        self.sizes = self._scale_sizes()
        self.output_node = (self.depth - 1, scales - 1 if task == "classification" else 0)
        self.graph = self._make_graph()
        # The graph is fixed at construction: its costs are computed once.
        self._edge_flops = tuple(
            int(e.layer.flops(self.node_shape(e.source))) for e in self.graph)
        self.edges = [e.layer for e in self.graph if e.prunable]
        self.stem = [e.layer for e in self.graph if not e.prunable]
        if task == "classification":
            self.classifier = keras.layers.Dense(
                self.num_classes, kernel_initializer=AuthorsInit("dense"), name="classifier")
        else:
            self.classifier = keras.layers.Conv2D(
                self.num_classes, 1, kernel_initializer=AuthorsInit("conv"), name="classifier")
        self._plans = {}
        self.build()
        weights_lib.load_weights(self, weights, family="cnmm")

    # ------------------------------------------------------------------ #
    # The graph.
    # ------------------------------------------------------------------ #
    def _scale_sizes(self):
        """`(H, W)` of every scale: each a stride-2 convolution of the last."""
        h, w = self.image_shape[:2]
        sizes = [(h, w)]
        for _ in self.widths[1:]:
            h, w = (cost.conv_output_size(d, 3, 2, 1) for d in (h, w))
            sizes.append((h, w))
        return sizes

    def _make_graph(self):
        """Every edge that can reach the output, in topological order."""
        scales = len(self.widths)
        ends = [(IMAGE, (0, 0))] + [((0, s - 1), (0, s)) for s in range(1, scales)]
        for d in range(1, self.depth):
            for s in range(scales):
                for source in (s - 1, s, s + 1):
                    if 0 <= source < scales:
                        ends.append(((d - 1, source), (d, s)))
        # Only the edges the output can use are built.
        usable = budget_lib.live_edges(ends, range(len(ends)), IMAGE, self.output_node)
        graph, seed = [], self.seed
        for i in usable:
            source, target = ends[i]
            d, s = target
            if source == IMAGE or d == 0:
                layer = ConvBNAct(self.widths[s], 3, strides=1 if s == 0 else 2,
                                  name=f"stem_s{s}")
                graph.append(_Edge(source, target, layer, False))
                continue
            direction = {0: "same", 1: "down", -1: "up"}[s - source[1]]
            layer = MixtureEdge(
                self.widths[s], direction=direction, keep_logit=self.keep_logit,
                temperature=self.temperature,
                seed=None if seed is None else seed + len(graph),
                name=f"edge_d{d}_s{source[1]}_to_s{s}")
            graph.append(_Edge(source, target, layer, True))
        return graph

    def node_shape(self, node):
        """`(H, W, C)` of one image's feature map at `node` of `graph`: the
        input image at the root (`IMAGE`), else `(column, scale)`'s."""
        if node == IMAGE:
            return self.image_shape
        s = node[1]
        return self.sizes[s] + (self.widths[s],)

    def build(self, input_shape=None):
        for edge in self.graph:
            edge.layer.build((None,) + self.node_shape(edge.source))
        out = self.node_shape(self.output_node)
        self.classifier.build((None, out[-1]) if self.task == "classification" else (None,) + out)
        self.built = True

    # ------------------------------------------------------------------ #
    # Cost and pruning: the budget logic is budget.prune_mixture.
    # ------------------------------------------------------------------ #
    def edge_flops(self):
        """FLOPs of every edge of `graph` for one image."""
        return list(self._edge_flops)

    def head_flops(self):
        h, w, c = self.node_shape(self.output_node)
        if self.task == "classification":
            # Global average pooling: one operation per element (PAPERS.md's
            # C * H_out * W_out * k * k, the window being the whole map).
            return c * h * w + cost.dense_flops(c, self.num_classes)
        return cost.conv_flops(c, self.num_classes, 1, h, w)

    def full_flops(self):
        return sum(self._edge_flops) + self.head_flops()

    def cost_profile(self):
        return self.full_flops(), None

    def keep_probabilities(self):
        """The learned keep probability of every prunable edge, NumPy `(E,)`."""
        logits = ops.convert_to_numpy(ops.stack([edge.keep_logit.value for edge in self.edges]))
        logits = logits.astype("float64")
        return 1.0 / (1.0 + np.exp(-logits))

    def plan(self, budget=None):
        """The graph pruned for `budget` (`None` or 1: nothing pruned).

        Returns:
            A `Plan`: the live edge indices into `graph`, and the FLOPs of one
            image through them (head included), at most `budget` times
            `profile(model).flops`.

        Raises:
            ValueError: for a budget outside (0, 1], or below the cheapest
                graph the pruning rule reaches (the message gives it).
        """
        b = 1.0 if budget is None else budget_lib.validate_budget(budget)
        scores = self._scores()
        key = (b, scores.tobytes())
        if key not in self._plans:
            full, head = self.full_flops(), self.head_flops()
            live, spent = self._prune(scores, limit=b * full * (1 + 1e-9) - head)
            if spent + head > b * full * (1 + 1e-9):
                raise ValueError(
                    f"budget {budget} is below what {self.name} can spend: pruning by "
                    f"{self.pruning} reaches {(spent + head) / full:.4f} of the full model at the "
                    "least (the stem and one path to the output).")
            self._plans = {k: v for k, v in self._plans.items() if k[1] == key[1]}
            self._plans[key] = Plan(live, int(spent + head))
        return self._plans[key]

    def cheapest_budget(self):
        """The smallest budget the pruning rule reaches."""
        _, spent = self._prune(self._scores(), limit=0)
        return (spent + self.head_flops()) / self.full_flops()

    def _prune(self, scores, limit):
        return budget_lib.prune_mixture(
            [(e.source, e.target) for e in self.graph], self._edge_flops,
            [e.prunable for e in self.graph], scores, IMAGE, self.output_node, limit)

    def _scores(self):
        """`budget.pruning_scores` of every edge of `graph` (0 for the stem)."""
        scores = np.zeros(len(self.graph))
        prunable = [i for i, e in enumerate(self.graph) if e.prunable]
        scores[prunable] = budget_lib.pruning_scores(
            self.keep_probabilities(), [self._edge_flops[i] for i in prunable], self.pruning)
        return scores

    # ------------------------------------------------------------------ #
    # The forward pass.
    # ------------------------------------------------------------------ #
    def _forward(self, inputs, live, training=None):
        """Compute the nodes that the `live` edges feed, then the head."""
        nodes = {IMAGE: inputs}
        incoming = {}  # target -> its live edges; `graph` is in topological order
        for i in live:
            incoming.setdefault(self.graph[i].target, []).append(self.graph[i])
        for target, edges in incoming.items():
            if not edges[0].prunable:  # a stem node: one fixed edge
                nodes[target] = edges[0].layer(nodes[edges[0].source], training=training)
                continue
            results = [e.layer(nodes[e.source], training=training) for e in edges]
            nodes[target] = mix_node(results, size=self.sizes[target[1]])
        return self._head(nodes[self.output_node], training=training)

    def _label_shape(self):
        """One class id per image, or per pixel for segmentation."""
        return () if self.task == "classification" else self.image_shape[:2]

    def _head(self, x, training=None):
        if self.task == "classification":
            return self.classifier(ops.mean(x, axis=(1, 2)))
        if x.shape[0] == 0:  # TensorFlow's CPU convolution mis-shapes an empty batch
            return ops.zeros(tuple(x.shape[:3]) + (self.num_classes,), x.dtype)
        return self.classifier(x)

    def call(self, inputs, budget=None, return_cost=False, training=None):
        """Run the model.

        Args:
            inputs: images `(batch, H, W, C)`.
            budget: `None` (the whole mixture) or a number in (0, 1]: run the
                graph pruned for it.
            return_cost: also return the FLOPs each image used, `(batch,)`.
            training: training mode: every edge, relaxed Bernoulli masks.

        Returns:
            Logits (`(batch, num_classes)`, or `(batch, H, W, num_classes)` for
            segmentation), and the per-image cost if `return_cost`.
        """
        inputs = self._checked_images(inputs)
        if training and budget is not None:
            raise ValueError("budget applies to inference, not to training.")
        if budget is not None and fast_path.is_traced(inputs):
            raise ValueError(
                "A budget picks a pruned graph from the edges' learned probabilities, which a "
                "traced function (jax.jit, tf.function) cannot read. Call the model eagerly, or "
                "use model.predict(x, budget=...), which compiles each pruned graph.")
        plan = self._full_plan() if budget is None else self.plan(budget)
        logits = self._forward(inputs, plan.edges, training=training)
        if not return_cost:
            return logits
        return logits, ops.full((ops.shape(inputs)[0],), float(plan.flops))

    def _serving_fn(self, budget, mode):
        """`export`'s function: the whole mixture, or the graph pruned for `budget`."""
        if mode != "auto":
            raise ValueError(f"A CNMM has one pruning rule per model (pruning=...); mode must be "
                             f"'auto', got {mode!r}.")
        plan = self._full_plan() if budget is None else self.plan(budget)
        return lambda images: self._forward(images, plan.edges, training=False)

    def _full_plan(self):
        return Plan(tuple(range(len(self.graph))), self.full_flops())

    def predict(self, x, batch_size=None, verbose="auto", budget=None, return_cost=False,
                **kwargs):
        """Keras' `predict`, plus the budget contract.

        With a budget, the pruned graph is compiled for the backend (once per
        distinct graph) and only its edges run.

        Args:
            x: images `(N, H, W, C)` (NumPy or tensor), or an iterable of
                batches (or of `(images, labels)` pairs).
            batch_size: batch size for arrays (default 32).
            budget: `None` (the whole mixture) or a number in (0, 1].
            return_cost: also return the per-image FLOPs.
            verbose: Keras' progress bar: `"auto"` or 1, a bar; 2, one line
                at the end; 0, silent.
            **kwargs: Keras' `predict` arguments: `steps` (read only the
                first `steps` batches); `callbacks` only without a budget
                and without `return_cost` (Keras' own `predict`).

        Returns:
            NumPy logits (and costs `(N,)`).
        """
        if budget is None and not return_cost:
            return super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
        steps = self._own_loop_steps(kwargs)
        plan = self._full_plan() if budget is None else self.plan(budget)
        key = ("plan", plan.edges)
        if key not in self._compiled_fns:
            self._compiled_fns[key] = fast_path.compile_inference(
                lambda images: self._forward(images, plan.edges, training=False), self.variables,
                rowwise=True)
        fn = self._compiled_fns[key]
        outputs = [ops.convert_to_numpy(fn(batch)) for batch in
                   checked_batches(x, positive_batch_size(batch_size, 32), self._check_inputs, steps,
                                   verbose)]
        logits = np.concatenate(outputs, axis=0)
        if not return_cost:
            return logits
        return logits, np.full((len(logits),), float(plan.flops), dtype="float32")

    def classifier_layers(self):
        return [self.classifier]

    def _family_config(self):
        return dict(depth=self.depth, widths=list(self.widths), task=self.task,
                    keep_logit=self.keep_logit, temperature=self.temperature,
                    pruning=self.pruning, seed=self.seed)


def CNMMCIFAR(num_classes=10, input_shape=(32, 32, 3), depth=8, widths=(16, 32, 64, 128),
              task="classification", weights=None, **kwargs):
    """A CNMM for 32x32 images: 8 columns, 4 scales (32 to 4 pixels), widths
    16 to 128 (our preset; the paper's grid is not public).

    Args:
        num_classes: number of classes (default 10).
        input_shape: `(H, W, C)`, default `(32, 32, 3)`.
        depth: columns of the grid, stem included (default 8; see `CNMM`).
        widths: channels of each scale, finest first (default
            `(16, 32, 64, 128)`: 4 scales).
        task: `"classification"` (default) or `"segmentation"` (see `CNMM`).
        weights: `None` (default: random initialization), a registered name
            (`adaptive_zoo.weights`), or a path to a `.weights.h5` file.
        **kwargs: the other arguments of `CNMM` (`keep_logit`,
            `temperature`, `pruning`, `seed`) and `keras.Model` arguments
            (`name`).

    Returns:
        A `CNMM`.

    Example:
    ```python
    model = adaptive_zoo.CNMMCIFAR(num_classes=10)
    logits = model(images, budget=0.5)
    logits, flops = model(images, budget=0.5, return_cost=True)  # FLOPs per image
    model.cheapest_budget()         # the smallest budget the pruning reaches
    ```
    """
    return CNMM(depth=depth, widths=widths, task=task, num_classes=num_classes,
                input_shape=input_shape, weights=weights, **kwargs)


def CNMMTiny(num_classes=10, input_shape=(8, 8, 1), depth=4, widths=(8, 16, 32),
             task="classification", weights=None, **kwargs):
    """A small CNMM for the bundled digits (8x8): 4 columns, 3 scales.

    Args:
        num_classes, input_shape, depth, widths, task, weights, **kwargs: as
            in `CNMMCIFAR`; here 10 classes (the digits), `(8, 8, 1)` images,
            4 columns and widths `(8, 16, 32)` (3 scales) by default.

    Returns:
        A `CNMM`.

    Example:
    ```python
    model = adaptive_zoo.CNMMTiny()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x_train, y_train), (x_test, y_test) = adaptive_zoo.data.load_digits(image_size=8)
    model.fit(x_train, y_train, epochs=10)
    logits = model(x_test, budget=0.5)
    ```
    """
    return CNMM(depth=depth, widths=widths, task=task, num_classes=num_classes,
                input_shape=input_shape, weights=weights, **kwargs)
