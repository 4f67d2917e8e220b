"""CNMM: the grid, its cost, pruning to a budget (only live edges run),
training, saving, segmentation, and bad input."""

import keras
import numpy as np
import pytest
from keras import ops

import adaptive_zoo
from adaptive_zoo import data
from adaptive_zoo.layers import MixtureEdge


def _images(n=6, shape=(8, 8, 1), seed=0):
    return np.random.RandomState(seed).rand(n, *shape).astype("float32")


def _with_keep_logits(model, seed=0):
    """Distinct keep probabilities, as training would leave them."""
    rng = np.random.RandomState(seed)
    for edge in model.edges:
        edge.keep_logit.assign(rng.normal(0.0, 1.5))
    return model


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return _with_keep_logits(adaptive_zoo.CNMMTiny())


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = data.load_digits(image_size=8)
    model = adaptive_zoo.CNMMTiny()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)
    return model, history, (x_test, y_test)


def test_flops_are_the_sum_of_the_edges_counted_by_hand():
    # depth 2, scales 8x8 (4 channels) and 4x4 (8): the stem (two convolutions),
    # the two edges into the coarse output node, global pooling and classifier;
    # the fine node of the last column feeds nothing and is not built.
    model = adaptive_zoo.CNMM(depth=2, widths=(4, 8), num_classes=10, input_shape=(8, 8, 1))
    stem = (9 * 1 * 4 * 64 + 4 * 64) + (9 * 4 * 8 * 16 + 8 * 16)
    edges = (9 * 4 * 8 * 16 + 8 * 16) + (9 * 8 * 8 * 16 + 8 * 16)
    head = 8 * 16 + 8 * 10 + 10
    assert adaptive_zoo.profile(model).flops == stem + edges + head
    assert [e.direction for e in model.edges] == ["down", "same"]
    assert adaptive_zoo.profile(model).exit_flops is None


def test_the_whole_mixture_is_budget_one(tiny):
    x = _images()
    full, cost = tiny(x, budget=1.0, return_cost=True)
    np.testing.assert_allclose(ops.convert_to_numpy(full), ops.convert_to_numpy(tiny(x)), rtol=1e-6)
    np.testing.assert_array_equal(ops.convert_to_numpy(cost), adaptive_zoo.profile(tiny).flops)


@pytest.mark.parametrize("budget", [0.9, 0.7, 0.5])
def test_a_budget_runs_a_pruned_graph_within_it(tiny, budget):
    plan = tiny.plan(budget)
    full = adaptive_zoo.profile(tiny).flops
    assert plan.flops <= budget * full
    logits, cost = tiny(_images(), budget=budget, return_cost=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(cost), plan.flops)
    assert len(tiny.plan(0.5).edges) < len(tiny.plan(0.9).edges) < len(tiny.graph)


def test_the_cifar_preset_spends_nearly_its_budget():
    model = _with_keep_logits(adaptive_zoo.CNMMCIFAR())
    full = adaptive_zoo.profile(model).flops
    # 7 columns of 10 edges, less those into nodes that cannot reach the
    # coarsest scale by the last column (2 + 5 + 8 in columns 5, 6, 7).
    assert len(model.edges) == 55 and model.cheapest_budget() < 0.2
    for budget in np.linspace(0.2, 1.0, 9):
        assert 0.85 * budget * full <= model.plan(budget).flops <= budget * full


def test_pruned_edges_are_not_computed(tiny, monkeypatch):
    calls = []
    original = MixtureEdge.call

    def counting(self, inputs, training=None):
        calls.append(self.name)
        return original(self, inputs, training=training)

    monkeypatch.setattr(MixtureEdge, "call", counting)
    tiny(_images(), budget=0.5)
    expected = [tiny.graph[i].layer.name for i in tiny.plan(0.5).edges if tiny.graph[i].prunable]
    assert sorted(calls) == sorted(expected) and len(calls) < len(tiny.edges)


def test_pruning_follows_the_learned_probabilities():
    model = adaptive_zoo.CNMMTiny()
    for edge in model.edges:
        edge.keep_logit.assign(3.0)
    # The least likely edge goes first: the budget just below full drops it alone.
    weakest = model.edges[5]
    weakest.keep_logit.assign(-3.0)
    graph_index = next(i for i, e in enumerate(model.graph) if e.layer is weakest)
    full = adaptive_zoo.profile(model).flops
    just_below = (full - 1) / full
    assert set(range(len(model.graph))) - set(model.plan(just_below).edges) == {graph_index}
    # The plan follows the weights as they change.
    weakest.keep_logit.assign(3.0)
    model.edges[2].keep_logit.assign(-3.0)
    assert graph_index in model.plan(just_below).edges


def test_cost_aware_pruning_drops_the_expensive_edge_first():
    model = adaptive_zoo.CNMMTiny(pruning="cost")
    flops = model.edge_flops()
    prunable = [i for i, e in enumerate(model.graph) if e.prunable]
    # Equal probabilities: the most expensive edge (first in graph order among equals) goes.
    costliest = max(prunable, key=lambda i: (flops[i], -i))
    full = adaptive_zoo.profile(model).flops
    assert costliest not in model.plan((full - 1) / full).edges


@pytest.mark.parametrize("budget", [0.9, 0.5])
def test_predict_runs_the_same_pruned_graph_compiled(tiny, budget):
    x = _images(40)
    eager, cost = tiny(x, budget=budget, return_cost=True)
    logits, costs = tiny.predict(x, budget=budget, batch_size=16, return_cost=True, verbose=0)
    np.testing.assert_allclose(logits, ops.convert_to_numpy(eager), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(costs, ops.convert_to_numpy(cost))
    np.testing.assert_allclose(tiny.predict(x, verbose=0), ops.convert_to_numpy(tiny(x)),
                               rtol=1e-4, atol=1e-5)


def test_budget_below_the_cheapest_graph_names_it(tiny):
    cheapest = tiny.cheapest_budget()
    assert 0 < cheapest < 1
    tiny.plan(cheapest)
    with pytest.raises(ValueError, match=f"{cheapest:.4f} of the full model"):
        tiny.plan(cheapest * 0.9)


def test_fit_learns_the_digits_and_a_pruned_graph_still_classifies(trained):
    model, history, (x_test, y_test) = trained
    losses = history.history["loss"]
    assert losses[-1] < losses[0] * 0.5
    accuracy = {}
    for b in (None, 0.6):
        logits = model.predict(x_test, budget=b, verbose=0)
        accuracy[b] = float((np.argmax(logits, -1) == y_test).mean())
    assert accuracy[None] >= 0.9
    assert accuracy[0.6] >= 0.5  # a pruned graph still classifies, without re-training
    # Training moved the keep probabilities apart.
    assert np.ptp(model.keep_probabilities()) > 0.01


def test_saving_keeps_weights_probabilities_and_plans(trained, tmp_path):
    model, _, (x_test, _) = trained
    path = str(tmp_path / "cnmm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.plan(0.6) == model.plan(0.6)
    np.testing.assert_allclose(loaded.predict(x_test[:16], budget=0.6, verbose=0),
                               model.predict(x_test[:16], budget=0.6, verbose=0), rtol=1e-5, atol=1e-6)
    weights = str(tmp_path / "cnmm.weights.h5")
    model.save_weights(weights)
    again = adaptive_zoo.CNMMTiny(weights=weights)
    np.testing.assert_allclose(again.keep_probabilities(), model.keep_probabilities(), rtol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        adaptive_zoo.CNMMTiny(widths=(8, 16, 24), weights=weights)


def test_segmentation_predicts_every_pixel_of_odd_sized_images():
    model = _with_keep_logits(adaptive_zoo.CNMM(depth=3, widths=(4, 8, 8), task="segmentation",
                                                num_classes=3, input_shape=(7, 9, 3)))
    x = _images(2, (7, 9, 3))
    assert tuple(model(x).shape) == (2, 7, 9, 3)
    logits, cost = model.predict(x, budget=0.7, return_cost=True, verbose=0)
    assert logits.shape == (2, 7, 9, 3) and cost[0] <= 0.7 * adaptive_zoo.profile(model).flops
    # Per-pixel training through fit.
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.zeros((2, 7, 9), "int32"), epochs=1, verbose=0)


def test_segmentation_trains_on_a_tfds_pipeline_with_keras_mean_iou():
    # The README's segmentation path on tfds' mock Oxford-IIIT Pet (its masks
    # are random bytes: taken modulo 3 here to be labels).
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        train = data.load_tfds_segmentation("oxford_iiit_pet", "train", batch_size=4, image_size=16,
                                            training=True, seed=0)
        train = train.map(lambda x, y: (x, y % 3))
        model = adaptive_zoo.CNMM(depth=3, widths=(4, 8), task="segmentation", num_classes=3,
                                  input_shape=(16, 16, 3))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False)])
        history = model.fit(train, epochs=1, verbose=0)
        assert 0.0 <= history.history["mean_io_u"][-1] <= 1.0
        masks = model.predict(train, budget=0.6, verbose=0).argmax(-1)
    assert masks.shape == (8, 16, 16) and set(np.unique(masks)) <= {0, 1, 2}


def test_calibrating_a_mixture_says_it_needs_none(tiny):
    with pytest.raises(TypeError, match="needs no calibration"):
        adaptive_zoo.calibrate(tiny, (_images(), np.zeros(6, "int32")))


def test_no_published_checkpoint_says_how_to_make_one():
    with pytest.raises(ValueError, match="neither code nor checkpoints"):
        adaptive_zoo.CNMMCIFAR(weights="imagenet")


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 2}, "depth must be at least 3"),
    ({"depth": 0}, "depth must be a positive integer"),
    ({"widths": ()}, "widths"),
    ({"widths": (8, -1)}, "widths"),
    ({"task": "detection"}, "task"),
    ({"pruning": "random"}, "pruning"),
    ({"num_classes": 0}, "num_classes"),
])
def test_bad_configurations_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adaptive_zoo.CNMMTiny(**kwargs)


def test_bad_inputs_and_budgets(tiny):
    with pytest.raises(ValueError, match="rank 3"):
        tiny(np.zeros((8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="1 channels"):
        tiny(np.zeros((2, 8, 8, 3), "float32"))
    for b in (0.0, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            tiny(_images(), budget=b)
    with pytest.raises(ValueError, match="inference, not to training"):
        tiny(_images(), budget=0.5, training=True)
