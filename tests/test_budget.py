"""The budget module: validation, the authors' threshold procedure, calibration."""

import math

import numpy as np
import pytest

from adaptive_zoo import budget


@pytest.mark.parametrize("value", [0, -1, 1.0001, math.nan, math.inf, None, "x", "0.5", True,
                                   np.bool_(True)])
def test_invalid_budgets_are_refused(value):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        budget.validate_budget(value)


@pytest.mark.parametrize("grid", [[], (), 0.5, np.float32(0.5), np.array(0.5), "0.5, 1.0", None])
def test_a_calibration_grid_of_no_budgets_or_one_number_is_refused(grid):
    # An empty grid left a model no thresholds, and every later budgeted
    # call failed with "list index out of range".
    with pytest.raises(ValueError, match=r"budgets must be a list of numbers in \(0, 1\]"):
        budget.validate_budgets(grid)


def test_a_calibration_grid_is_sorted_without_repeats():
    assert budget.validate_budgets([1.0, np.float32(0.5), 0.5, np.array(0.75)]) == [0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="got 0"):
        budget.validate_budgets([0.5, 0])


def test_numbers_of_every_kind_are_budgets():
    for value in (0.5, 1, np.float32(0.5), np.array(0.25), np.int64(1)):
        assert budget.validate_budget(value) == float(value)


def test_anytime_exit_is_the_deepest_that_fits():
    flops = [10, 20, 40, 100]
    assert budget.anytime_exit(flops, 1.0) == 3
    assert budget.anytime_exit(flops, 0.4) == 2
    assert budget.anytime_exit(flops, 0.39) == 1
    assert budget.anytime_exit(flops, 0.05) == 0  # nothing fits: the cheapest exit


def test_thresholds_follow_the_authors_walk():
    # 3 exits, 4 samples; quota floor(4 * 0.5) = 2 at exit 0, floor(4 * 0.25) = 1 at exit 1.
    conf = np.array([[0.9, 0.8, 0.7, 0.1], [0.95, 0.2, 0.6, 0.5], [0, 0, 0, 0]])
    t = budget.exit_thresholds(conf, [0.5, 0.25, 0.25])
    # The 2 most confident at exit 0 (0.9, 0.8) leave: midway to the next (0.7).
    assert t[0] == pytest.approx(0.75)
    # Samples 0 and 1 left; among the rest (2, 3) the most confident at exit 1 (0.6) leaves.
    assert t[1] == pytest.approx(0.55) and t[2] == -np.inf
    np.testing.assert_array_equal(budget.simulate_exits(conf, t), [0, 0, 1, 2])


def test_calibration_meets_each_budget_within_5_percent():
    rng = np.random.default_rng(0)
    conf = np.sort(rng.random((5, 500)), axis=0)  # later exits more confident
    correct = rng.random((5, 500)) < np.linspace(0.5, 0.9, 5)[:, None]
    flops = [10.0, 20.0, 30.0, 40.0, 50.0]
    cal = budget.calibrate_exits(conf, correct, flops, [0.4, 0.6, 0.8, 1.0])
    for b, spent in zip(cal.budgets, cal.mean_flops):
        assert abs(spent / 50.0 - b) <= 0.05 * b
    assert cal.budget_range == (0.4, 1.0)


def test_gate_threshold_search_meets_the_target_and_reads_each_threshold_once():
    read = []

    def reading(tau):  # the cost falls as the threshold rises, as DMNN's does
        read.append(tau)
        return 100.0 * (1.0 - tau) ** 2 + 20.0, 0.9 - 0.1 * tau

    tau, spent, accuracy = budget.search_gate_threshold(reading, 50.0, tolerance=0.01)
    assert abs(spent - 50.0) <= 0.5 and spent == reading(tau)[0]
    assert accuracy == pytest.approx(0.9 - 0.1 * tau)
    assert read[0] == 0.0 and len(set(read)) == len(read) - 1  # the last: the check above
    # Every sub-block on already fits: threshold 0, nothing else read.
    read.clear()
    assert budget.search_gate_threshold(reading, 125.0) == (0.0, 120.0, 0.9)
    assert read == [0.0]


def test_gate_threshold_search_returns_the_nearest_reading_of_a_step_function():
    def reading(tau):  # few images: the cost moves in steps
        return (100.0 if tau < 0.3 else 60.0 if tau < 0.7 else 30.0), float("nan")

    tau, spent, _ = budget.search_gate_threshold(reading, 50.0, steps=12)
    assert spent == 60.0 and 0.3 <= tau < 0.7


def test_calibration_refuses_unreachable_budgets_and_tiny_sets():
    conf = np.random.default_rng(0).random((3, 50))
    with pytest.raises(ValueError, match="cheapest"):
        budget.calibrate_exits(conf, None, [50.0, 80.0, 100.0], [0.2])
    with pytest.raises(ValueError, match="fewer than"):
        budget.calibrate_exits(conf[:, :2], None, [50.0, 80.0, 100.0], [0.8])


@pytest.mark.parametrize("change, message", [
    ({"exit_flops": [1.0, 2.0]}, r"one row per exit.*got shapes \(3, 40\) and \(2,\)"),  # IndexError before
    ({"exit_flops": [4.0, 2.0, 1.0]}, "positive and non-decreasing"),
    ({"confidences": np.full((3, 40), np.nan)}, "NaN or infinite"),  # "Cannot calibrate budget" before
    ({"correct": np.ones((3, 10), bool)}, r"correct must have the shape of confidences, \(3, 40\)"),
    ({"tolerance": -0.1}, r"tolerance is a relative cost in \[0, 1\)"),
])
def test_calibration_arrays_that_do_not_fit_are_named(change, message):
    rng = np.random.default_rng(0)
    arguments = {"confidences": rng.random((3, 40)), "correct": rng.random((3, 40)) > 0.5,
                 "exit_flops": [1.0, 2.0, 4.0], "budgets": [0.5], **change}
    with pytest.raises(ValueError, match=message):
        budget.calibrate_exits(**arguments)


def test_thresholds_outside_the_calibrated_range_state_the_range():
    cal = budget.Calibration([0.5, 1.0], [[0.9, -np.inf], [np.inf, -np.inf]], [5, 10], [0.8, 0.9])
    with pytest.raises(ValueError, match=r"\[0.5000, 1.0000\]"):
        cal.thresholds_for(0.3)
    assert cal.thresholds_for(0.5)[0] == 0.9
    restored = budget.Calibration.from_config(cal.to_config())
    assert restored.thresholds_for(1.0)[0] == np.inf


def test_default_budgets_are_all_reachable():
    rng = np.random.default_rng(1)
    conf = np.sort(rng.random((4, 300)), axis=0)
    flops = [53.0, 70.0, 90.0, 100.0]  # a first exit at 53% of the full cost
    grid = budget.default_budgets(conf, flops)
    assert len(grid) == 20 and grid[-1] == 1.0 and grid[0] >= 0.53
    cal = budget.calibrate_exits(conf, None, flops, grid)
    assert len(cal.budgets) == 20


@pytest.mark.parametrize("n_samples", [7, 10, 15])
def test_default_budgets_of_a_small_set_can_all_be_calibrated(n_samples):
    # Few samples reach few mean costs: the defaults must still all be met.
    rng = np.random.default_rng(n_samples)
    conf = rng.random((7, n_samples)) * 0.5 + np.linspace(0.3, 0.5, 7)[:, None]
    flops = [15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94]
    grid = budget.default_budgets(conf, flops)
    assert 2 <= len(grid) <= 20 and grid[-1] == 1.0 and np.all(np.diff(grid) > 0)
    cal = budget.calibrate_exits(conf, None, flops, grid)
    for b, spent in zip(cal.budgets, cal.mean_flops):
        assert abs(spent / flops[-1] - b) <= 0.05 * b


def test_calibrate_names_what_it_takes():
    with pytest.raises(TypeError, match="MSDNet, RANet, DMNN.*got list"):
        budget.calibrate([1, 2], data=None)


# ---------------------------------------------------------------------- #
# Mixtures: pruning a graph to a cost.
# ---------------------------------------------------------------------- #
# A diamond with a tail: image -> a -> {b, c} -> out, and b -> dead (a dead end).
_EDGES = [("image", "a"), ("a", "b"), ("a", "c"), ("b", "out"), ("c", "out"), ("b", "dead")]
_FLOPS = [10, 4, 6, 2, 3, 50]
_PRUNABLE = [False, True, True, True, True, True]


def test_live_edges_drop_dead_ends_and_orphans():
    everything = range(len(_EDGES))
    assert budget.live_edges(_EDGES, everything, "image", "out") == (0, 1, 2, 3, 4)
    # Without a -> b, b has no input: b -> out goes too.
    assert budget.live_edges(_EDGES, {0, 2, 3, 4, 5}, "image", "out") == (0, 2, 4)
    assert budget.live_edges(_EDGES, {0, 1, 2}, "image", "out") is None


def test_pruning_drops_the_least_likely_edges_until_the_cost_fits():
    scores = [0, 0.9, 0.2, 0.8, 0.3, 0.1]
    full = sum(_FLOPS[:5])
    assert budget.prune_mixture(_EDGES, _FLOPS, _PRUNABLE, scores, "image", "out", full) == (
        (0, 1, 2, 3, 4), full)
    # The dead end and then a -> c (the least likely live edge): c is left without an input.
    live, cost = budget.prune_mixture(_EDGES, _FLOPS, _PRUNABLE, scores, "image", "out", 20)
    assert live == (0, 1, 3) and cost == 16
    # Asked for less than one path costs, it keeps the output's last path.
    live, cost = budget.prune_mixture(_EDGES, _FLOPS, _PRUNABLE, scores, "image", "out", 0)
    assert live == (0, 1, 3) and cost == 16


def test_the_stem_is_never_pruned():
    live, _ = budget.prune_mixture(_EDGES, _FLOPS, [False] * 6, [0] * 6, "image", "out", 0)
    assert live == (0, 1, 2, 3, 4)


def test_cost_aware_scores_put_expensive_edges_first():
    scores = budget.pruning_scores([0.5, 0.5, 0.6], [1.0, 4.0, 1.0], rule="cost")
    assert list(np.argsort(scores)) == [1, 0, 2]
    np.testing.assert_array_equal(budget.pruning_scores([0.5, 0.2], [1, 9]), [0.5, 0.2])
    with pytest.raises(ValueError, match="pruning must be one of"):
        budget.pruning_scores([0.5], [1], rule="random")


def test_edges_dropped_before_an_overshooting_drop_are_put_back():
    edges = [("image", "a"), ("a", "b"), ("b", "out"), ("a", "c"), ("c", "out"), ("a", "out")]
    flops = [0, 1, 3, 1, 10, 1]
    scores = [0, 0.1, 0.7, 0.2, 0.8, 0.9]
    # Dropping a -> b leaves 12 > 10; dropping a -> c then takes c -> out along
    # (cost 1); a -> b fits again and comes back.
    live, cost = budget.prune_mixture(edges, flops, [False] + [True] * 5, scores, "image", "out", 10)
    assert live == (0, 1, 2, 5) and cost == 5
