"""The base of multi-exit networks (MSDNet, RANet): the budget contract and
real early exit.

A subclass describes its network as `num_exits` stages, each followed by an
exit: `_stage(k, state)` maps the state after stage `k - 1` (the input image
for `k = 0`) to the state after stage `k`, `_exit(k, state)` gives exit `k`'s
logits, and `_stage_flops()` / `_exit_own_flops()` give their costs per image. A
subclass may also split a stage in two (`_stage_for_exit`, `_stage_rest`):
the part that its exit reads, and the rest, which only the samples that go
on need. Everything else is here:

- `model(x)`: the last exit.
- `model(x, exits="all")`: every exit (the dense path; also what training
  mode returns, so that `fit` trains all exits).
- `model(x, budget=b)`: each sample leaves at an exit chosen for `b`; the
  samples that left are not computed further (gather the survivors, run the
  next stage on them, put the results back in order).
- `model.calibrate(...)`, `model.predict(x, budget=b)`.
"""

import itertools

import keras
import numpy as np
from keras import ops

from adaptive_zoo import budget as budget_lib
from adaptive_zoo import fast_path
from adaptive_zoo.models.base import ZooModel
from adaptive_zoo.models.inputs import checked_batches, held_out_batches, positive_batch_size

__all__ = ["MultiExitModel"]

_MODES = ("auto", "anytime", "budgeted")


class MultiExitModel(ZooModel):
    """A network with several exit classifiers and a per-image compute budget.

    Args:
        input_shape: `(H, W, C)` of the images the model takes.
        num_classes: number of logits of each exit.
        exit_weights: weights of each exit's loss in training (`None`: the
            unweighted sum, as the authors train).
        calibration: a `budget.Calibration` (or its config dict) for budgeted
            batch classification; set by `calibrate`.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:
    ```python
    model = adaptive_zoo.MSDNetTiny(num_classes=10)   # an `MSDNet`, a `MultiExitModel`
    logits = model(images)                            # the last exit
    every_exit = model(images, exits="all")           # a list, one per exit
    logits, flops = model(images, budget=0.5, return_cost=True)  # anytime exit
    model.calibrate((x_held, y_held), budgets=[0.5, 1.0])
    logits = model.predict(x_test, budget=0.5)        # calibrated early exit
    ```
    """

    def __init__(
        self,
        input_shape,
        num_classes,
        exit_weights=None,
        calibration=None,
        **kwargs,
    ):
        super().__init__(input_shape, num_classes, **kwargs)
        self.exit_weights = None if exit_weights is None else [float(w) for w in exit_weights]
        if isinstance(calibration, dict):
            calibration = budget_lib.Calibration.from_config(calibration)
        self.calibration = calibration

    # ------------------------------------------------------------------ #
    # What subclasses provide.
    # ------------------------------------------------------------------ #
    @property
    def num_exits(self):
        raise NotImplementedError

    def _stage(self, k, state, training=None):
        raise NotImplementedError

    def _exit(self, k, state, training=None):
        raise NotImplementedError

    def _stage_for_exit(self, k, state, training=None):
        """Stage `k` as far as exit `k` reads it, for inference.

        Returns `(exit_input, carried)`: what `_exit(k, ...)` takes, and a
        list of tensors from which `_stage_rest(k, carried)` completes the
        state after stage `k`. The default runs the whole stage (nothing is
        left for `_stage_rest`); a subclass whose exit reads only part of
        its stage's output computes only that part here, so that the samples
        that leave at exit `k` are not computed further than their exit.
        """
        state = self._stage(k, state, training=training)
        return state, state

    def _stage_rest(self, k, carried, training=None):
        """The state after stage `k` from `_stage_for_exit`'s `carried`."""
        return carried

    def classifier_layers(self):
        return [head.dense for head in self.heads]

    def _stage_flops(self):
        """Cost per image of each stage (stage 0 includes the stem)."""
        raise NotImplementedError

    def _stage_for_exit_flops(self):
        """Cost per image of each stage's `_stage_for_exit` part (default:
        the whole stage)."""
        return self._stage_flops()

    def _stage_layers(self, k):
        """The layers that stage `k` and its exit call, or `None` (default)
        for "any of the model's"."""
        return None

    def _stage_variables(self, k):
        """Every variable that stage `k` and its exit read (those of
        `_stage_layers(k)`, else all of the model's); the compiled stage takes
        only these (on JAX, as arguments of each call: passing all of the
        model's costs time per call)."""
        layers = self._stage_layers(k)
        if layers is None:
            return self.variables
        return [v for layer in layers for v in layer.variables]

    def _exit_own_flops(self):
        """Cost per image of each exit head alone."""
        raise NotImplementedError

    # ------------------------------------------------------------------ #
    # Cost.
    # ------------------------------------------------------------------ #
    def exit_flops(self):
        """Cumulative cost of each exit, earlier heads included (authors')."""
        stages, heads = self._stage_flops(), self._exit_own_flops()
        total, result = 0, []
        for s, h in zip(stages, heads):
            total += s + h
            result.append(total)
        return result

    def computed_exit_flops(self):
        """What early exit computes for a sample that leaves at each exit:
        the stages before it, of its own stage the part that its exit reads
        (`_stage_for_exit`), and every head up to it. At most `exit_flops()`
        (the authors' cost, which counts the exit's whole stage, and which
        `return_cost`, the calibration and the anytime rule use)."""
        return [flops - whole + part for flops, whole, part in
                zip(self.exit_flops(), self._stage_flops(), self._stage_for_exit_flops())]

    def path_flops(self, k):
        """Cost of reaching exit `k` without evaluating earlier heads."""
        return sum(self._stage_flops()[: k + 1]) + self._exit_own_flops()[k]

    def cost_profile(self):
        exits = self.exit_flops()
        return exits[-1], exits

    # ------------------------------------------------------------------ #
    # Building and input checks.
    # ------------------------------------------------------------------ #
    def build(self, input_shape=None):
        x = keras.KerasTensor((None,) + self.image_shape)
        state = x
        for k in range(self.num_exits):
            state = self._stage(k, state)
            self._exit(k, state)
        self.built = True

    # ------------------------------------------------------------------ #
    # The forward passes.
    # ------------------------------------------------------------------ #
    def call(
        self,
        inputs,
        budget=None,
        exits=None,
        return_cost=False,
        mode="auto",
        training=None,
    ):
        """Run the model.

        Args:
            inputs: images `(batch, H, W, C)`.
            budget: `None` for the full model, or a number in (0, 1]: spend
                about that fraction of the full model's FLOPs per image.
            exits: `None`, or `"all"` for the list of every exit's logits.
            return_cost: also return the FLOPs each sample used, `(batch,)`.
            mode: `"auto"` (calibrated thresholds if the model has them,
                else anytime), `"anytime"` or `"budgeted"`.
            training: training mode; training returns every exit.

        Returns:
            Logits `(batch, num_classes)` (a list of them with
            `exits="all"` or in training), and the per-sample cost if
            `return_cost`.
        """
        if exits not in (None, "all"):
            raise ValueError(f'exits must be None or "all", got {exits!r}.')
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        inputs = self._checked_images(inputs)
        if exits == "all" or training:
            if budget is not None:
                raise ValueError(
                    "budget applies to inference, not to training (which runs every exit)."
                    if training else
                    "budget applies to inference; it cannot be combined with exits='all'.")
            outputs = self._all_exits(inputs, training=training)
            if return_cost:
                batch = ops.shape(inputs)[0]
                costs = [ops.full((batch,), float(f)) for f in self.exit_flops()]
                return outputs, costs
            return outputs
        if budget is None:
            k = self.num_exits - 1
            logits = self._anytime(inputs, k, training=training)
            return self._with_cost(logits, self.path_flops(k), inputs, return_cost)
        thresholds = self._thresholds(budget, mode)
        if thresholds is None:
            k = budget_lib.anytime_exit(self.exit_flops(), budget)
            logits = self._anytime(inputs, k)
            return self._with_cost(logits, self.path_flops(k), inputs, return_cost)
        if fast_path.is_traced(inputs):
            if not fast_path.graphs_hold_dynamic_shapes():
                raise ValueError(
                    "Early exit has data-dependent shapes, which jax.jit cannot hold. Call the "
                    "model eagerly, or use model.predict(x, budget=...), which compiles each "
                    "stage separately.")
            # In a tf.function: the whole early exit in the graph (what `export` writes).
            logits, cost = self._graph_early_exit(inputs, thresholds)
            return (logits, cost) if return_cost else logits
        logits, cost = self._early_exit(inputs, thresholds, self._stage_fns())
        logits = ops.convert_to_tensor(logits)
        return (logits, ops.convert_to_tensor(cost)) if return_cost else logits

    def _with_cost(self, logits, flops, inputs, return_cost):
        if not return_cost:
            return logits
        return logits, ops.full((ops.shape(inputs)[0],), float(flops))

    def _all_exits(self, inputs, training=None):
        outputs, state = [], inputs
        for k in range(self.num_exits):
            state = self._stage(k, state, training=training)
            outputs.append(self._exit(k, state, training=training))
        return outputs

    def _anytime(self, inputs, k, training=None):
        """Exit `k` (inference): the stages before it, and of stage `k` what
        the exit reads."""
        state = inputs
        for j in range(k):
            state = self._stage(j, state, training=training)
        state, _ = self._stage_for_exit(k, state, training=training)
        return self._exit(k, state, training=training)

    def _serving_fn(self, budget, mode):
        """`export`'s function: the last exit, or the anytime exit for `budget`."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        k = self.num_exits - 1
        if budget is not None:
            thresholds = self._thresholds(budget, mode)
            if thresholds is not None:
                if not fast_path.graphs_hold_dynamic_shapes():
                    raise ValueError(
                        "An exported budgeted batch classification runs each stage only on the "
                        "samples still running, which needs data-dependent shapes in the graph: "
                        "export it with KERAS_BACKEND=tensorflow (save_weights here, load_weights "
                        "there), export the anytime exit (mode='anytime'), or serve with "
                        "model.predict(x, budget=...).")
                return lambda images: self._graph_early_exit(images, thresholds)[0]
            k = budget_lib.anytime_exit(self.exit_flops(), budget)
        return lambda images: self._anytime(images, k, training=False)

    def _graph_early_exit(self, images, thresholds):
        """Budgeted batch classification inside one TensorFlow graph (what
        `export` writes): the decisions of `_early_exit`, each stage run on
        the samples still running, and a stage that none reaches not run at
        all (`ops.cond`; oneDNN's convolution also mis-shapes an empty
        batch). Returns `(logits, cost)` in the input order."""
        exit_flops = [float(f) for f in self.exit_flops()]
        last = self.num_exits - 1
        batch = ops.shape(images)[0]

        def run(k, state, positions, logits, cost):
            state, out, confidence = self._stage_and_exit_fn(k)(*state)
            if logits is None:  # the first stage runs on every sample
                logits, cost = ops.zeros_like(out), ops.zeros((batch,), "float32")
            if k == last:
                leave = ops.ones_like(positions, dtype="bool")
            else:
                leave = confidence >= thresholds[k]
            gone = ops.nonzero(leave)[0]
            where = ops.expand_dims(ops.take(positions, gone), -1)
            logits = ops.scatter_update(logits, where, ops.take(out, gone, axis=0))
            cost = ops.scatter_update(cost, where, ops.full(ops.shape(gone), exit_flops[k]))
            if k == last:
                return logits, cost
            stay = ops.nonzero(ops.logical_not(leave))[0]
            state = list(state) if isinstance(state, (list, tuple)) else [state]
            rows = [ops.take(s, stay, axis=0) for s in state]
            return ops.cond(
                ops.size(stay) > 0,
                lambda: run(k + 1, rows, ops.take(positions, stay), logits, cost),
                lambda: (logits, cost))

        return run(0, [images], ops.arange(batch), None, None)

    def _thresholds(self, budget, mode):
        """Per-exit thresholds for `budget`, or None for the anytime rule."""
        budget = budget_lib.validate_budget(budget)
        if mode == "anytime" or (mode == "auto" and self.calibration is None):
            return None
        if self.calibration is None:
            raise ValueError(
                "mode='budgeted' needs calibrated thresholds: call "
                "model.calibrate(held_out_data) first."
            )
        return [float(t) for t in self.calibration.thresholds_for(budget)]

    def _stage_and_exit_fn(self, k):
        """Stage `k` and its exit, as early exit runs them:
        `(*carried) -> (carried, logits, confidence)`. `carried` is what
        stage `k - 1` hands on (`_stage_for_exit`; the images for `k = 0`):
        the rest of stage `k - 1` runs here first, so only on the samples
        that did not leave at exit `k - 1`. The last stage hands on nothing."""

        def run(*carried):
            # Stage 0 takes the image; later stages a list of feature maps
            # (possibly of length one).
            if k == 0:
                state = carried[0]
            else:
                state = self._stage_rest(k - 1, list(carried), training=False)
            exit_input, carried = self._stage_for_exit(k, state, training=False)
            logits = self._exit(k, exit_input, training=False)
            if k == self.num_exits - 1:
                carried = []
            return carried, logits, ops.max(ops.softmax(logits, axis=-1), axis=-1)

        return run

    def _stage_fns(self, compiled=False):
        """The stages as `_early_exit` runs them: stage `k` takes
        `(rows, *state)` (stage 0: `(rows, images)`) and runs on those rows
        only."""
        if not compiled:
            return [fast_path.gathering(self._stage_and_exit_fn(k)) for k in range(self.num_exits)]
        return [
            self._compiled(
                ("stage", k),
                lambda k=k: self._stage_and_exit_fn(k),
                gather=True,
                variables=lambda k=k: self._stage_variables(k),
            )
            for k in range(self.num_exits)
        ]

    def _early_exit(self, inputs, thresholds, stages):
        """Real early exit of one batch: only the samples still running are
        computed.

        Args:
            inputs: images.
            thresholds: per-exit confidence thresholds (last ignored).
            stages: from `_stage_fns`.

        Returns:
            `(logits, cost)` NumPy arrays in the input order.
        """
        run = _ExitPipeline(stages, thresholds, self.exit_flops())
        run.push(inputs)
        return run.finish()

    # ------------------------------------------------------------------ #
    # Batched inference, compiled.
    # ------------------------------------------------------------------ #
    def _compiled(self, key, make_fn, gather=False, variables=None):
        """The function `make_fn()` compiled once per `key`; `variables` is
        None (all of the model's) or a function that lists the ones it reads,
        called only when it is compiled (listing them costs 1.6 ms per
        `predict` for MSDNet CIFAR's stages, 4.4 ms for RANet's)."""
        if key not in self._compiled_fns:
            self._compiled_fns[key] = fast_path.compile_inference(
                make_fn(), self.variables if variables is None else variables(), gather=gather,
                rowwise=True,  # every sample's own network
            )
        return self._compiled_fns[key]

    def predict(self, x, batch_size=None, verbose="auto", budget=None, mode="auto",
                return_cost=False, **kwargs):
        """Keras' `predict`, plus the budget contract.

        With `budget=None` this is `keras.Model.predict` (the last exit).
        With a budget, the batches run the early-exit path compiled for the
        backend, and exited samples are not computed further. Every stage
        is compiled (`fast_path.compile_inference`), and the samples still
        running after an exit wait there until a batch's worth of them has
        gathered from consecutive batches (or the data ends), and then run
        the next stage together, a batch's worth per call: late stages do
        not run on one or two samples at a time, and each stage sees one
        batch size (plus the remainders when the data ends), so JAX compiles
        few programs. Each sample's result is the same as in its batch
        alone. On TensorFlow, data of one batch runs the whole early exit as
        one graph instead (`_graph_early_exit`; nothing to pool, and no trip
        to the host between stages).

        Args:
            x: images, a NumPy array or tensor `(N, H, W, C)`, or an
                iterable of batches (or of `(images, labels)` pairs).
            batch_size: batch size for arrays (default 32).
            budget: as in `call`.
            mode: as in `call`.
            return_cost: also return the per-sample FLOPs.
            verbose: Keras' progress bar: `"auto"` or 1, a bar; 2, one line
                at the end; 0, silent.
            **kwargs: Keras' `predict` arguments: `steps` (read only the
                first `steps` batches); `callbacks` only without a budget.

        Returns:
            NumPy logits `(N, num_classes)` (and costs `(N,)`).
        """
        if budget is None:
            logits = super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
            if not return_cost:
                return logits
            # As `call`, and DMNN's and CNMM's `predict`: the last exit's cost.
            cost_ = np.full((len(logits),), float(self.path_flops(self.num_exits - 1)), "float32")
            return logits, cost_
        steps = self._own_loop_steps(kwargs)
        thresholds = self._thresholds(budget, mode)
        if thresholds is None:
            logits, cost = self._predict_anytime(x, batch_size, budget, steps, verbose)
            return (logits, cost) if return_cost else logits
        batches = self._checked_batches(x, batch_size, 32, steps, verbose)
        first = next(batches)
        second = next(batches, None)
        whole = self._whole_early_exit(thresholds) if second is None else None
        if whole is not None:
            # One batch on TensorFlow: nothing to pool; the one graph saves
            # the trips to the host between stages.
            logits, cost = (ops.convert_to_numpy(t) for t in whole(first))
        else:
            run = _ExitPipeline(self._stage_fns(compiled=True), thresholds, self.exit_flops(),
                                pool=int(first.shape[0]))
            for batch in itertools.chain([first] if second is None else [first, second], batches):
                run.push(batch)
            logits, cost = run.finish()
        return (logits, cost) if return_cost else logits

    def _whole_early_exit(self, thresholds):
        """`_graph_early_exit` for `thresholds` compiled as one function where
        the backend holds data-dependent shapes (TensorFlow); else `None`."""
        key = ("early_exit", tuple(thresholds))
        if key not in self._compiled_fns:
            self._compiled_fns[key] = fast_path.compile_dynamic(
                lambda x: self._graph_early_exit(x, thresholds), self.variables)
        return self._compiled_fns[key]

    def _predict_anytime(self, x, batch_size, budget, steps=None, verbose=0):
        """Every sample to the one exit the anytime rule picks for `budget`."""
        k = budget_lib.anytime_exit(self.exit_flops(), budget)
        fn = self._compiled(("anytime", k), lambda: (lambda x: self._anytime(x, k, training=False)))
        outputs = [ops.convert_to_numpy(fn(b))
                   for b in self._checked_batches(x, batch_size, 32, steps, verbose)]
        logits = np.concatenate(outputs, axis=0)
        return logits, np.full((len(logits),), float(self.path_flops(k)), dtype="float32")

    def _checked_batches(self, x, batch_size, default, steps=None, verbose=0):
        """The image batches of `x` (the first `steps`) as checked tensors,
        with `predict`'s progress bar; an error if there are none or
        `batch_size` is not a positive integer."""
        return checked_batches(x, positive_batch_size(batch_size, default), self._check_inputs, steps,
                               verbose)

    def predict_all_exits(self, x, batch_size=None, verbose="auto"):
        """Every exit's logits for every sample.

        Args:
            x: images `(N, H, W, C)`, or an iterable of batches (or of
                `(images, labels)` pairs).
            batch_size: batch size for arrays (default 64).
            verbose: Keras' progress bar, as in `predict`: `"auto"` or 1, a
                bar; 2, one line at the end; 0, silent.

        Returns:
            A NumPy array `(K, N, num_classes)`, exit by exit.
        """
        fn = self._compiled(("all",), lambda: (lambda x: self._all_exits(x, training=False)))
        outputs = []
        for batch in self._checked_batches(x, batch_size, 64, verbose=verbose):
            outputs.append(np.stack([ops.convert_to_numpy(o) for o in fn(batch)]))
        return np.concatenate(outputs, axis=1)

    # ------------------------------------------------------------------ #
    # Calibration for budgeted batch classification.
    # ------------------------------------------------------------------ #
    def calibrate(self, data, budgets=None, batch_size=None, verbose="auto"):
        """Calibrate exit thresholds on held-out data (the authors' procedure).

        Args:
            data: `(images, labels)` arrays, or an iterable of
                `(images, labels)` batches (e.g. a `tf.data.Dataset`), read
                once, one batch at a time (a held-out set as large as
                ImageNet's need not fit in memory). Every image counts
                alike: sample weights are refused.
            budgets: budgets to calibrate, each in (0, 1]. Default: 20 points
                from the cheapest reachable cost to 1.
            batch_size: batch size for arrays.
            verbose: Keras' progress bar over the batches, as in `predict`:
                `"auto"` or 1, a bar; 2, one line at the end; 0, silent.

        Returns:
            The `budget.Calibration`: budgets, thresholds, mean FLOPs and
            accuracy on `data`, ready to plot. It is stored in the model
            (and its config), so it survives saving and loading.
        """
        if budgets is not None:
            budgets = budget_lib.validate_budgets(budgets)  # before reading the data
        # One batch at a time: only each sample's confidence and correctness
        # at every exit are kept.
        confidences, correct = [], []
        for images, labels in held_out_batches(data, batch_size=positive_batch_size(batch_size, 64),
                                               verbose=verbose, check_labels=self._check_labels):
            logits = self.predict_all_exits(images, batch_size=len(images), verbose=0)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            probs = np.exp(shifted)
            confidences.append(probs.max(axis=-1) / probs.sum(axis=-1))
            correct.append(logits.argmax(axis=-1) == labels[None, :])
        confidences, correct = np.concatenate(confidences, axis=1), np.concatenate(correct, axis=1)
        if confidences.shape[1] < self.num_exits:
            raise ValueError(
                f"The calibration set has {confidences.shape[1]} samples, fewer than the model's "
                f"{self.num_exits} exits."
            )
        exit_flops = self.exit_flops()
        if budgets is None:
            budgets = budget_lib.default_budgets(confidences, exit_flops)
        self.calibration = budget_lib.calibrate_exits(confidences, correct, exit_flops, budgets)
        return self.calibration

    # ------------------------------------------------------------------ #
    # Training: every exit.
    # ------------------------------------------------------------------ #
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, (list, tuple)):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if self._compile_loss is None:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        weights = self.exit_weights or [1.0] * len(y_pred)
        if len(weights) != len(y_pred):
            raise ValueError(f"exit_weights has {len(weights)} entries for {len(y_pred)} exits.")
        total = 0.0
        for weight, logits in zip(weights, y_pred):
            total = total + weight * self._compile_loss(y, logits, sample_weight)
        for loss in self.losses:
            total = total + self._aggregate_additional_loss(loss)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, (list, tuple)):
            y_pred = y_pred[-1]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    # ------------------------------------------------------------------ #
    # Serialization.
    # ------------------------------------------------------------------ #
    def get_config(self):
        config = super().get_config()
        config.update(
            exit_weights=self.exit_weights,
            calibration=None if self.calibration is None else self.calibration.to_config(),
        )
        return config


class _Waiting:
    """Samples waiting for one stage, and the state they carry.

    Held as `(state, rows)` parts, one per stage call that queued samples:
    the rows of `state` (a list of tensors) that wait. A part keeps its whole
    state until its rows are taken, unless fewer than half of the state's
    rows wait: then those are gathered out at once (so that the state of
    samples that left is not kept alive for a few that stay). `take` copies
    only the rows it hands out: rows of one part are passed with their
    state (the compiled stage gathers them, or skips the gather if they are
    all of it); rows of several parts are gathered into one new state
    (`fast_path.concatenated_rows`).
    """

    def __init__(self):
        self.parts = []
        self.positions = []

    def __len__(self):
        return sum(len(p) for p in self.positions)

    def add(self, state, rows, positions):
        """Queue the `rows` of `state` (`None`: all rows), whose outputs go
        to `positions`."""
        state = list(state)
        size = int(state[0].shape[0])
        rows = np.arange(size) if rows is None else np.asarray(rows)
        if 2 * len(rows) < size:
            state = [fast_path.take_rows(t, rows.astype("int32")) for t in state]
            rows = np.arange(len(rows))
        self.parts.append((state, rows))
        self.positions.append(np.asarray(positions))

    def take(self, limit=None):
        """`(state, rows, positions)` for one stage call on the first `limit`
        waiting samples (`None`: all): `rows` index `state`, `positions` are
        the output slots. The rest keep waiting."""
        wanted = len(self) if limit is None else min(int(limit), len(self))
        taken, positions = [], []
        while wanted:
            (state, rows), where = self.parts[0], self.positions[0]
            n = min(wanted, len(rows))
            taken.append((state, rows[:n]))
            positions.append(where[:n])
            if n == len(rows):
                self.parts.pop(0)
                self.positions.pop(0)
            else:
                self.parts[0], self.positions[0] = (state, rows[n:]), where[n:]
            wanted -= n
        positions = np.concatenate(positions)
        if len(taken) == 1:
            state, rows = taken[0]
            return state, rows, positions
        state = [
            fast_path.concatenated_rows([(state[i], rows) for state, rows in taken])
            for i in range(len(taken[0][0]))
        ]
        return state, np.arange(len(positions)), positions


class _ExitPipeline:
    """Real early exit over a stream of batches.

    Each stage runs on the samples that have not left yet, and no others.
    Who leaves and who stays is decided in NumPy between the stages; the
    compiled stages gather the rows they run on. With a `pool`, a stage runs
    on exactly `pool` samples whenever that many wait for it (the rest wait
    on), and at `finish` on what is left: the few survivors of several
    batches share one call of a late stage, and every call of a stage but
    its last has the same batch size (one compiled program on JAX).

    Args:
        stages: from `MultiExitModel._stage_fns`.
        thresholds: per-exit confidence thresholds (the last is ignored).
        exit_flops: cumulative cost of each exit.
        pool: how many samples a stage runs on at a time (`None`: all that
            wait, at `finish`).
    """

    def __init__(self, stages, thresholds, exit_flops, pool=None):
        self.stages, self.thresholds = stages, thresholds
        self.exit_flops = np.asarray(exit_flops, dtype="float32")
        self.pool = None if pool is None else max(int(pool), 1)
        self.waiting = [_Waiting() for _ in stages]
        self.done = []  # (positions, logits, exit index) of samples that left
        self.count = 0

    def push(self, images):
        """Add a batch of images and run every stage that has enough samples."""
        n = int(images.shape[0])
        self.waiting[0].add([images], None, np.arange(self.count, self.count + n))
        self.count += n
        self._run(finishing=False)

    def finish(self):
        """Run what still waits; `(logits, cost)` NumPy arrays in push order."""
        self._run(finishing=True)
        positions = np.concatenate([p for p, _, _ in self.done])
        logits = np.concatenate([out for _, out, _ in self.done])
        exits = np.concatenate([np.full((len(p),), k) for p, _, k in self.done])
        order = np.argsort(positions, kind="stable")
        return logits[order], self.exit_flops[exits[order]]

    def _run(self, finishing):
        """Run each stage in order: on `pool` waiting samples at a time while
        that many wait, then, if `finishing`, on all that is left."""
        for k in range(len(self.stages)):
            waiting = self.waiting[k]
            while self.pool and len(waiting) >= self.pool:
                self._call(k, *waiting.take(self.pool))
            if finishing and len(waiting):
                self._call(k, *waiting.take())

    def _call(self, k, state, rows, positions):
        """Stage `k` on the `rows` of `state`: record the samples that leave
        at exit `k`, queue the others for stage `k + 1`."""
        # NumPy rows: on JAX, converting them to a tensor compiles once per
        # row count.
        state, logits, confidence = self.stages[k](rows.astype("int32"), *state)
        state = list(state) if isinstance(state, (list, tuple)) else [state]
        logits = ops.convert_to_numpy(logits)
        if k == len(self.stages) - 1:
            leave = np.ones((len(positions),), dtype=bool)
        else:
            leave = ops.convert_to_numpy(confidence) >= self.thresholds[k]
        self.done.append((positions[leave], logits[leave], k))
        staying = np.flatnonzero(~leave)
        if staying.size:
            self.waiting[k + 1].add(state, staying, positions[staying])
