"""What a budget means, and how budgets become decisions.

A budget `b` in (0, 1] asks a model to spend about `b` times its full
model's FLOPs per image (the count of `cost.profile`). For multi-exit models:

- anytime (uncalibrated): every sample takes the deepest exit whose
  cumulative cost fits `b * full`;
- budgeted batch classification (calibrated): each sample leaves at the first
  exit whose confidence (max softmax) reaches that exit's threshold; the
  thresholds for `b` come from held-out data by the authors' procedure
  (`exit_thresholds`), searched so the mean cost meets `b` (`calibrate_exits`).

DMNN's budgets (top-k sub-blocks per image, or a calibrated threshold on the
gates) are applied by the model itself (`models/dmnn.py`); the threshold for
a budget is searched here (`search_gate_threshold`), and its calibration is a
`Calibration` too, with one gate threshold per budget.

Mixtures (CNMM): a budget is a pruned graph, the same for every image
(`prune_mixture`): edges are dropped by learned keep probability (or, with
`pruning_scores(..., rule="cost")`, probability per unit of cost) until the
edges that still reach the output cost at most `b * full`.
"""

import dataclasses
import math

import numpy as np

__all__ = [
    "Calibration",
    "anytime_exit",
    "calibrate",
    "calibrate_exits",
    "default_budgets",
    "exit_thresholds",
    "live_edges",
    "prune_mixture",
    "pruning_scores",
    "search_gate_threshold",
    "simulate_exits",
    "validate_budget",
    "validate_budgets",
]


def validate_budget(budget):
    """Return `budget` as a float, or raise a clear `ValueError`.

    A number (Python, NumPy, or a one-element tensor) in (0, 1]. Strings and
    booleans are refused rather than converted: `budget=True` would
    otherwise mean the full model, and `"0.5"` hides a caller's bug.
    """
    if isinstance(budget, (str, bytes, bool, np.bool_)):
        raise ValueError(f"budget must be a number in (0, 1], got {budget!r}.")
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget must be a number in (0, 1], got {budget!r}.") from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"budget must be a finite number in (0, 1], got {budget!r}.")
    return value


def validate_budgets(budgets):
    """Return the budgets of a calibration grid as sorted, distinct floats,
    or raise a clear `ValueError`.

    An iterable of at least one budget, each as `validate_budget` takes it.
    One number where the grid is expected is refused (pass `[0.5]`), as is
    an empty grid, which would leave a model no threshold to use.
    """
    hint = "budgets must be a list of numbers in (0, 1], e.g. [0.5, 0.75, 1.0]"
    if isinstance(budgets, (str, bytes)) or getattr(budgets, "ndim", None) == 0:
        raise ValueError(f"{hint}; got {budgets!r}.")
    try:
        budgets = list(budgets)
    except TypeError:
        raise ValueError(f"{hint}; got {budgets!r}.") from None
    if not budgets:
        raise ValueError(f"{hint}; got none. Pass budgets=None for the default grid.")
    return sorted({validate_budget(b) for b in budgets})


def anytime_exit(exit_flops, budget):
    """Index of the deepest exit whose cumulative cost fits `budget * full`.

    If even the first exit costs more than the budget, the first exit is the
    cheapest answer the model can give, and it is used.
    """
    budget = validate_budget(budget)
    limit = budget * exit_flops[-1] * (1 + 1e-9)
    fitting = [k for k, f in enumerate(exit_flops) if f <= limit]
    return fitting[-1] if fitting else 0


def exit_thresholds(confidences, proportions):
    """The authors' threshold procedure for budgeted batch classification.

    Walk each exit's samples by descending confidence among those that have
    not exited yet; the first `floor(N * proportions[k])` of them leave at exit
    `k`. The authors set the threshold to the confidence of the last one that
    leaves; we set it midway to the next one, which selects the same samples
    and is robust to float rounding. The last exit takes every sample left.

    Args:
        confidences: array `(K, N)`, max softmax of each exit for each sample.
        proportions: target fraction of samples leaving at each exit (`K`).

    Returns:
        `(K,)` float64 thresholds; the last is `-inf`. An exit whose quota is
        zero gets `+inf` (nobody leaves there).
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    n_exits, n = confidences.shape
    thresholds = np.full(n_exits, np.inf)
    exited = np.zeros(n, dtype=bool)
    for k in range(n_exits - 1):
        quota = int(math.floor(n * proportions[k]))
        if quota > 0:
            order = np.argsort(-confidences[k], kind="stable")
            candidates = order[~exited[order]]
            if len(candidates) > quota:
                # Midway between the last sample that leaves and the next one:
                # the same samples leave as with the authors' threshold (the
                # quota-th confidence itself), but a sample is not flipped by
                # rounding differences between batched and early-exit runs.
                last_in = confidences[k][candidates[quota - 1]]
                first_out = confidences[k][candidates[quota]]
                thresholds[k] = 0.5 * (last_in + first_out) if first_out < last_in else last_in
            elif len(candidates):
                thresholds[k] = confidences[k][candidates[-1]]
        exited |= confidences[k] >= thresholds[k]
    thresholds[-1] = -np.inf
    return thresholds


def simulate_exits(confidences, thresholds):
    """Exit index of every sample for given thresholds: `(N,)` ints."""
    confidences = np.asarray(confidences)
    passed = confidences >= np.asarray(thresholds)[:, None]
    passed[-1] = True
    return np.argmax(passed, axis=0)


@dataclasses.dataclass
class Calibration:
    """Thresholds of a multi-exit model for a grid of budgets.

    Attributes:
        budgets: calibrated budgets, ascending.
        thresholds: one list of per-exit thresholds per budget.
        mean_flops: mean FLOPs per image spent on the calibration data.
        accuracy: accuracy on the calibration data.
    """

    budgets: list
    thresholds: list
    mean_flops: list
    accuracy: list

    @property
    def budget_range(self):
        return (self.budgets[0], self.budgets[-1])

    def thresholds_for(self, budget):
        """Per-exit thresholds for `budget`, interpolated between grid points.

        Raises:
            ValueError: if `budget` lies outside the calibrated range.
        """
        budget = validate_budget(budget)
        low, high = self.budget_range
        tolerance = 1e-6
        if budget < low - tolerance or budget > high + tolerance:
            raise ValueError(
                f"budget {budget} is outside the calibrated range [{low:.4f}, {high:.4f}]. "
                "Calibrate for it (model.calibrate(data, budgets=...)), or pass "
                "mode='anytime' to use the uncalibrated anytime exits."
            )
        grid = np.asarray(self.budgets)
        table = np.asarray(self.thresholds, dtype=np.float64)
        i = int(np.clip(np.searchsorted(grid, budget), 1, max(len(grid) - 1, 1)))
        if len(grid) == 1:
            return table[0]
        lo, hi = grid[i - 1], grid[i]
        t = 0.0 if hi == lo else float(np.clip((budget - lo) / (hi - lo), 0.0, 1.0))
        if t <= 0.0 or t >= 1.0:
            return table[i - 1] if t <= 0.0 else table[i]
        # Interpolate where both are finite; infinities (no exit / all exit) are
        # taken from the nearer grid point.
        near = table[i - 1] if t < 0.5 else table[i]
        mixed = (1 - t) * table[i - 1] + t * table[i]
        return np.where(np.isfinite(table[i - 1]) & np.isfinite(table[i]), mixed, near)

    def to_config(self):
        def clean(values):
            return [None if not np.isfinite(v) else float(v) for v in values]

        return {
            "budgets": [float(b) for b in self.budgets],
            "thresholds": [
                [("inf" if v > 0 else "-inf") if not np.isfinite(v) else float(v) for v in row]
                for row in self.thresholds
            ],
            "mean_flops": clean(self.mean_flops),
            "accuracy": clean(self.accuracy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            budgets=list(config["budgets"]),
            thresholds=[[float(v) for v in row] for row in config["thresholds"]],
            mean_flops=[_number(v) for v in config["mean_flops"]],
            accuracy=[_number(v) for v in config["accuracy"]],
        )


def _number(value):
    """A config's number as a float; None (how `to_config` writes NaN) as NaN."""
    return float("nan") if value is None else float(value)


def _proportions(q, n_exits):
    """Target exit distribution P_k proportional to q^k (the authors')."""
    p = np.power(q, np.arange(1, n_exits + 1, dtype=np.float64))
    return p / p.sum()


# The q values scanned for the mean costs reachable on a calibration set.
_Q_GRID = np.geomspace(1e-4, 1e4, 161)


def _evaluate_q(confidences, exit_flops, q):
    """(thresholds, exit of each sample, mean cost) for the distribution q^k."""
    thresholds = exit_thresholds(confidences, _proportions(q, len(exit_flops)))
    exits = simulate_exits(confidences, thresholds)
    return thresholds, exits, float(np.asarray(exit_flops)[exits].mean())


def _search_q(confidences, exit_flops, target, tolerance):
    """(thresholds, exits, mean cost) of the q whose mean cost is nearest
    `target` among those tried: a bisection on `log q`, then, if it missed
    by more than `tolerance` (relative), a scan of `_Q_GRID` (on a small set
    the cost is a step function of q, not always monotone, and the
    bisection can step over the nearest step)."""
    lo, hi = math.log(_Q_GRID[0]), math.log(_Q_GRID[-1])
    best = None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        candidate = _evaluate_q(confidences, exit_flops, math.exp(mid))
        if best is None or abs(candidate[2] - target) < abs(best[2] - target):
            best = candidate
        if abs(candidate[2] - target) <= tolerance * target:
            return best
        if candidate[2] < target:
            lo = mid
        else:
            hi = mid
    for q in _Q_GRID:
        candidate = _evaluate_q(confidences, exit_flops, q)
        if abs(candidate[2] - target) < abs(best[2] - target):
            best = candidate
    return best


def default_budgets(confidences, exit_flops, n=20):
    """`n` budgets from the cheapest reachable on this data (nearly every sample
    at the first exit) to 1, each one that `calibrate_exits` can meet.

    On a small set the authors' procedure reaches only a few mean costs: a
    budget that the search misses by more than 4% is moved to the nearest
    mean cost of `_Q_GRID`, and repeats are dropped (so fewer than `n` may
    come back).
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    exit_flops = np.asarray(exit_flops, dtype=np.float64)
    full = float(exit_flops[-1])
    cheapest = _evaluate_q(confidences, exit_flops, _Q_GRID[0])[2] / full
    grid_costs = None
    budgets = []
    for b in np.linspace(min(cheapest * 1.02, 1.0), 1.0, n)[:-1]:
        b = float(b)
        spent = _search_q(confidences, exit_flops, b * full, 0.01)[2] / full
        if abs(spent - b) > 0.04 * b:
            if grid_costs is None:
                grid_costs = np.asarray([_evaluate_q(confidences, exit_flops, q)[2] / full for q in _Q_GRID])
            b = float(grid_costs[np.argmin(np.abs(grid_costs - b))])
        if not budgets or b > budgets[-1]:
            budgets.append(b)
    return [b for b in budgets if b < 1.0] + [1.0]


def _exit_arrays(confidences, exit_flops):
    """`confidences` `(K, N)` and the K exits' cumulative costs as float64
    arrays; a `ValueError` naming what does not fit (a wrong shape gave an
    `IndexError`, NaN confidences a budget said to be out of reach)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    exit_flops = np.asarray(exit_flops, dtype=np.float64)
    if confidences.ndim != 2 or exit_flops.shape != confidences.shape[:1]:
        raise ValueError(
            "confidences must be (K, N), one row per exit, and exit_flops the K exits' cumulative "
            f"costs; got shapes {confidences.shape} and {exit_flops.shape}."
        )
    if not np.all(np.isfinite(confidences)):
        raise ValueError("confidences hold NaN or infinite values: are the model's outputs finite?")
    if not (exit_flops[0] > 0 and np.all(np.diff(exit_flops) >= 0)):
        raise ValueError(
            f"exit_flops must be cumulative costs, positive and non-decreasing; got {exit_flops.tolist()}."
        )
    return confidences, exit_flops


def calibrate_exits(confidences, correct, exit_flops, budgets, tolerance=0.01):
    """Thresholds for each budget, by the authors' procedure on held-out data.

    The authors sweep `q` (exit distribution proportional to `q^k`) and read
    off each `q`'s cost; here `q` is searched (bisection on `log q`) until the
    mean cost on the calibration data meets each requested budget.

    Args:
        confidences: `(K, N)` max softmax of each exit on the held-out data.
        correct: `(K, N)` booleans, whether each exit's prediction is right
            (`None` to skip accuracy).
        exit_flops: cumulative cost of each exit.
        budgets: budgets to calibrate for, each in (0, 1].
        tolerance: relative cost tolerance of the search.

    Returns:
        A `Calibration`, budgets ascending.

    Raises:
        ValueError: if a budget is below the cheapest achievable cost (every
            sample at the first exit).
    """
    confidences, exit_flops = _exit_arrays(confidences, exit_flops)
    n_exits, n = confidences.shape
    if n < n_exits:
        raise ValueError(
            f"The calibration set has {n} samples, fewer than the model's {n_exits} exits."
        )
    if correct is not None and np.shape(correct) != confidences.shape:
        raise ValueError(
            f"correct must have the shape of confidences, {confidences.shape}; got {np.shape(correct)}."
        )
    if not 0.0 <= float(tolerance) < 1.0:  # NaN too
        raise ValueError(f"tolerance is a relative cost in [0, 1), got {tolerance!r}.")
    full = exit_flops[-1]

    result = Calibration([], [], [], [])
    for budget in validate_budgets(budgets):
        target = budget * full
        best = _search_q(confidences, exit_flops, target, tolerance)
        thresholds, exits, spent = best
        # Extremes the q-search cannot reach exactly: all at the last exit.
        if spent < target and budget >= 1.0 - 1e-9:
            thresholds = np.full(n_exits, np.inf)
            thresholds[-1] = -np.inf
            exits = np.full(n, n_exits - 1)
            spent = float(exit_flops[-1])
        if abs(spent - target) > 0.05 * target:
            cheapest = exit_flops[0] / full
            raise ValueError(
                f"Cannot calibrate budget {budget}: the closest mean cost reachable on "
                f"this data is {spent / full:.4f} of the full model (the cheapest is "
                f"{cheapest:.4f}, every sample at the first exit)."
            )
        acc = None
        if correct is not None:
            acc = float(np.asarray(correct)[exits, np.arange(n)].mean())
        result.budgets.append(budget)
        result.thresholds.append([float(t) for t in thresholds])
        result.mean_flops.append(spent)
        result.accuracy.append(acc if acc is not None else float("nan"))
    return result


def search_gate_threshold(reading, target, tolerance=0.01, steps=30):
    """The gate threshold whose mean cost on held-out data is nearest `target`.

    DMNN's calibrated rule: a sub-block runs for an image where its "on"
    probability reaches one threshold `tau` in [0, 1], so the mean cost falls
    as `tau` rises. The search reads `tau = 0` (every sub-block on) first;
    if that already fits `target` within `tolerance`, it is the answer, else
    a bisection on `tau` until a reading is within `tolerance` of `target` or
    `steps` readings have been made.

    Args:
        reading: a function `tau -> (mean cost, accuracy)` on the held-out
            data (accuracy NaN without labels). Each reading is a pass over
            the data: memoize it to share the first steps between budgets.
        target: the mean cost sought, FLOPs per image.
        tolerance: relative cost tolerance.
        steps: the most bisection steps.

    Returns:
        `(tau, mean cost, accuracy)`: the reading nearest `target`. The caller
        decides whether it is near enough.

    Example:
    ```python
    tau, spent, accuracy = search_gate_threshold(lambda t: (100.0 * (1 - t), 0.9), 50.0)
    ```
    """
    best = (0.0, *reading(0.0))
    if best[1] <= target * (1 + tolerance):
        return best
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        spent, accuracy = reading(mid)
        if abs(spent - target) < abs(best[1] - target):
            best = (mid, spent, accuracy)
        if abs(spent - target) <= tolerance * target:
            break
        if spent > target:
            lo = mid
        else:
            hi = mid
    return best


def calibrate(model, data, budgets=None, batch_size=None, verbose="auto"):
    """Calibrate a model of this package for its budgets on held-out data.

    The same as `model.calibrate(...)`, for every family. Multi-exit models
    (MSDNet, RANet): every exit runs on `data`, and the authors' threshold
    procedure gives each budget's exit thresholds (budgeted batch
    classification). DMNN: each budget gets the threshold on the gates' "on"
    probabilities whose mean cost on `data` meets it. Either way the result
    is stored in the model (its config, so it survives saving).

    Args:
        model: an MSDNet, RANet or DMNN.
        data: `(images, labels)` arrays or an iterable of such batches
            (DMNN also takes images alone; then no accuracy is measured).
            Every image counts alike: sample weights are refused.
        budgets: budgets in (0, 1]; default: a grid from the cheapest
            reachable budget to 1.
        batch_size: batch size for arrays.
        verbose: Keras' progress bar over the batches of each pass over
            `data`, as in `predict`: `"auto"` or 1, 2, or 0 for none.

    Returns:
        The `Calibration`, whose `budgets`, `mean_flops` and `accuracy`
        (on `data`) are the curve to plot.

    Example:
    ```python
    curve = adaptive_zoo.calibrate(model, (x_held, y_held))
    plt.plot(curve.mean_flops, curve.accuracy)
    logits = model.predict(x_test, budget=0.5)
    ```
    """
    if callable(getattr(model, "plan", None)) and not hasattr(model, "calibration"):
        raise TypeError(
            f"{type(model).__name__} needs no calibration: a budget picks a pruned graph, the "
            "same for every image, from the learned keep probabilities (model.plan(budget) shows "
            "it). Measure its accuracy per budget with model.predict(x, budget=b)."
        )
    if not callable(getattr(model, "calibrate", None)) or not hasattr(model, "calibration"):
        raise TypeError(
            f"calibrate() takes a model of this package (MSDNet, RANet, DMNN); got "
            f"{type(model).__name__}."
        )
    return model.calibrate(data, budgets=budgets, batch_size=batch_size, verbose=verbose)


# ---------------------------------------------------------------------- #
# Mixtures: a budget is a pruned graph.
# ---------------------------------------------------------------------- #
PRUNING_RULES = ("probability", "cost")


def pruning_scores(probabilities, flops, rule="probability"):
    """The order in which `prune_mixture` drops edges: lowest score first.

    Args:
        probabilities: each edge's learned keep probability.
        flops: each edge's cost.
        rule: `"probability"` (the paper's: the least likely edges go
            first) or `"cost"` (probability divided by the edge's cost
            relative to the mean edge: an expensive edge goes before a cheap
            one that is as likely).

    Returns:
        A float64 array of scores.
    """
    if rule not in PRUNING_RULES:
        raise ValueError(f"pruning must be one of {PRUNING_RULES}, got {rule!r}.")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if rule == "probability":
        return probabilities
    flops = np.asarray(flops, dtype=np.float64)
    return probabilities / np.maximum(flops / max(flops.mean(), 1.0), 1e-12)


def live_edges(edges, kept, root, output):
    """The kept edges that compute something the output needs.

    An edge is live if its source is reachable from `root` through kept
    edges and its target reaches `output` through kept edges: nodes left
    without inputs, and everything that only feeds them or only leads to
    dead ends, are dropped.

    Args:
        edges: a sequence of `(source, target)` node ids, in an order where
            every edge comes after the edges into its source.
        kept: indices of the edges still in the graph.
        root: the node every path starts from (the image).
        output: the node the prediction is read from.

    Returns:
        The sorted tuple of live edge indices, or `None` if `output` is not
        reachable.
    """
    kept = sorted(kept)
    reached = {root}
    for i in kept:
        if edges[i][0] in reached:
            reached.add(edges[i][1])
    if output not in reached:
        return None
    useful = {output}
    live = []
    for i in reversed(kept):
        source, target = edges[i]
        if source in reached and target in useful:
            useful.add(source)
            live.append(i)
    return tuple(sorted(live))


def prune_mixture(edges, flops, prunable, scores, root, output, limit):
    """Prune a mixture graph until it costs at most `limit`.

    Greedy, as the decision in PAPERS.md: walk the prunable edges from the
    lowest score up, drop each one whose removal leaves the output
    reachable, and stop as soon as the live edges (`live_edges`) cost at
    most `limit`. A drop that leaves a node without inputs removes that
    node's other edges too and can undershoot the budget by far; the edges
    dropped are then offered back, most likely first, and each one that
    still fits is restored.

    Args:
        edges: `(source, target)` per edge, in topological order.
        flops: cost of each edge (the parts outside the edges, such as a
            classifier, are the caller's to add to `limit`'s other side).
        prunable: whether each edge may be dropped (a stem may not).
        scores: `pruning_scores` of each edge (ignored where not prunable).
        root, output: see `live_edges`.
        limit: the most the live edges may cost.

    Returns:
        `(live, cost)`: the live edge indices and their cost. `cost` exceeds
        `limit` when dropping every droppable edge is not enough; the caller
        decides whether that is an error.
    """
    kept = set(range(len(edges)))
    live = live_edges(edges, kept, root, output)
    if live is None:
        raise ValueError("The output of this mixture is not reachable from its input.")

    def cost_of(edge_indices):
        return sum(flops[j] for j in edge_indices)

    cost = cost_of(live)
    order = sorted((i for i in range(len(edges)) if prunable[i]), key=lambda i: (scores[i], i))
    dropped = []
    for i in order:
        if cost <= limit:
            break
        kept.discard(i)
        if i not in live:
            continue  # already computes nothing
        trial = live_edges(edges, kept, root, output)
        if trial is None:
            kept.add(i)  # the output's last path: keep it
            continue
        dropped.append(i)
        live, cost = trial, cost_of(trial)
    # Dropping an edge can leave a node without inputs and take its other
    # edges with it, overshooting the budget: put back the most likely
    # dropped edges that still fit.
    for i in reversed(dropped):
        trial = live_edges(edges, kept | {i}, root, output)
        if cost_of(trial) <= limit:
            kept.add(i)
            live, cost = trial, cost_of(trial)
    return live, cost
