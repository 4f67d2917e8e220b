"""What every model of the zoo shares (`models/base.py`): its input shape,
its classes and the base of its config, on each family."""

import keras
import numpy as np
import pytest

import adaptive_zoo as az
from conftest import RANET_TINY_FLAGS

TINY_DMNN = dict(depths=(1, 2), base_width=8, sub_blocks=2, cifar_stem=True, input_shape=(8, 8, 1),
                 num_classes=5)

# Two exits are enough for what every family shares (half the graph to trace
# and compile of MSDNetTiny's default four).
FAMILIES = {
    "msdnet": lambda **kw: az.MSDNetTiny(**{"num_classes": 5, "n_blocks": 2, **kw}),
    "dmnn": lambda **kw: az.DMNNResNet(**{**TINY_DMNN, **kw}),
    "cnmm": lambda **kw: az.CNMMTiny(**{"num_classes": 5, **kw}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_input_shape_is_the_batch_shape_as_on_keras_applications(family):
    model = FAMILIES[family]()
    assert model.input_shape == (None,) + model.image_shape
    x = np.zeros((2,) + model.input_shape[1:], "float32")
    assert tuple(model(x).shape) == (2, 5)
    config = model.get_config()
    assert config["input_shape"] == list(model.image_shape) and config["num_classes"] == 5


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("num_classes", [0, -3, 2.5, 10.0, "10", True])
def test_a_bad_number_of_classes_is_named(family, num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        FAMILIES[family](num_classes=num_classes)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("input_shape", [(16, 16), (16, 0, 1), "16x16"])
def test_a_bad_input_shape_is_named(family, input_shape):
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        FAMILIES[family](input_shape=input_shape)


# ---------------------------------------------------------------------- #
# Mixed precision: float32 variables, bfloat16 computation.
# ---------------------------------------------------------------------- #
def _tiny_ranet():
    from adaptive_zoo.convert import ranet as ranet_convert

    kwargs = ranet_convert.model_kwargs(RANET_TINY_FLAGS)
    kwargs.update(input_shape=(16, 16, 1), head_width=8, num_classes=5)
    return az.RANet(**kwargs)


MIXED = {
    "msdnet": lambda: az.MSDNetTiny(num_classes=5, n_blocks=2),
    "ranet": _tiny_ranet,
    "dmnn": lambda: az.DMNNResNet(**{**TINY_DMNN, "input_shape": (16, 16, 1)}),
    "cnmm": lambda: az.CNMMTiny(num_classes=5, input_shape=(16, 16, 1)),
}


@pytest.fixture
def policy():
    """Sets the global dtype policy; float32 again afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("family", sorted(MIXED))
def test_mixed_precision_inference_follows_the_float32_model(family, policy):
    policy("float32")
    reference = MIXED[family]()
    policy("mixed_bfloat16")
    model = MIXED[family]()
    model.set_weights(reference.get_weights())
    x = np.random.default_rng(0).random((6, 16, 16, 1), dtype=np.float32)
    want = keras.ops.convert_to_numpy(reference(x))
    got = model(x)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    got = keras.ops.convert_to_numpy(keras.ops.cast(got, "float32"))
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max() + 0.05
    logits, cost = model.predict(x, budget=0.75, return_cost=True)
    assert logits.shape == (6, 5) and np.isfinite(np.asarray(logits, "float32")).all()
    assert np.all(cost > 0)


@pytest.mark.parametrize("family", ["msdnet", "dmnn", "cnmm"])
def test_mixed_precision_training_runs(family, policy):
    policy("mixed_bfloat16")
    model = MIXED[family]()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 16, 16, 1), dtype=np.float32), rng.integers(0, 5, 16)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_a_model_level_dtype_is_refused_with_the_global_policy_named(policy):
    # The layers would keep the global policy: say how to set it instead.
    with pytest.raises(ValueError, match=r"set_global_policy\('mixed_bfloat16'\)"):
        az.MSDNetTiny(dtype="mixed_bfloat16")
    policy("mixed_bfloat16")
    assert az.MSDNetTiny(dtype="mixed_bfloat16").dtype_policy.name == "mixed_bfloat16"


# ---------------------------------------------------------------------- #
# Export for serving (`ZooModel.export`).
# ---------------------------------------------------------------------- #
def _graph_convolutions(loaded, image_shape):
    """Convolutions in an exported `serve` graph (its functions included)."""
    import tensorflow as tf

    graph = loaded.serve.get_concrete_function(
        tf.TensorSpec((None,) + image_shape, tf.float32)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return sum(n.op in ("Conv2D", "DepthwiseConv2dNative") for n in nodes)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_serves_what_predict_computes_and_leaves_pruned_work_out(family, tmp_path):
    backend = keras.backend.backend()
    model = FAMILIES[family](input_shape=(16, 16, 1))
    if backend == "torch":
        with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
            model.export(str(tmp_path / "full"), verbose=False)
        return
    if family == "dmnn" and backend != "tensorflow":
        with pytest.raises(ValueError, match="export it with KERAS_BACKEND=tensorflow"):
            model.export(str(tmp_path / "full"), verbose=False)
        return
    import tensorflow as tf

    x = np.random.default_rng(0).random((6, 16, 16, 1), dtype=np.float32)
    convolutions = {}
    low = 0.85 if family == "dmnn" else 0.6  # the tiny DMNN always runs 0.75 of itself
    for budget in (None, low):
        path = str(tmp_path / f"budget_{budget}")
        model.export(path, budget=budget, verbose=False)  # no signature given: the model's own
        loaded = tf.saved_model.load(path)
        served = np.asarray(loaded.serve(tf.constant(x)))
        np.testing.assert_allclose(served, model.predict(x, budget=budget, verbose=0),
                                   rtol=1e-4, atol=1e-5)
        if backend == "tensorflow":
            convolutions[budget] = _graph_convolutions(loaded, (16, 16, 1))
    if backend == "tensorflow" and family != "dmnn":
        # The stages past the anytime exit, or the pruned edges, are not in
        # the graph. (DMNN's graph holds every sub-block: each one gathers
        # the images for which it is on.)
        assert convolutions[low] < convolutions[None], convolutions


def test_export_of_budgeted_batch_classification(tmp_path):
    # A calibrated multi-exit model: each stage in the exported graph runs on
    # the samples still running (TensorFlow); elsewhere a clear refusal.
    model = FAMILIES["msdnet"]()
    with pytest.raises(ValueError, match='a budget exports with format="tf_saved_model"'):
        model.export(str(tmp_path / "m.onnx"), format="onnx", budget=0.5)
    with pytest.raises(ValueError, match="budget must be a finite number"):
        az.CNMMTiny(num_classes=5).export(str(tmp_path / "bad"), budget=1.5, verbose=False)
    if keras.backend.backend() == "torch":
        return
    rng = np.random.default_rng(0)
    model.calibrate((rng.random((60, 16, 16, 1), dtype=np.float32), rng.integers(0, 5, 60)))
    low, high = model.calibration.budget_range
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="mode='anytime'"):
            model.export(str(tmp_path / "budgeted"), budget=low, verbose=False)
        assert not (tmp_path / "budgeted").exists()
        model.export(str(tmp_path / "anytime"), budget=low, mode="anytime", verbose=False)
        assert (tmp_path / "anytime" / "saved_model.pb").exists()
        return
    import tensorflow as tf

    x = rng.random((9, 16, 16, 1), dtype=np.float32)
    for budget in (low, 0.5 * (low + high)):
        model.export(str(tmp_path / f"{budget}"), budget=budget, verbose=False)
        loaded = tf.saved_model.load(str(tmp_path / f"{budget}"))
        want, cost = model.predict(x, budget=budget, return_cost=True)
        np.testing.assert_allclose(np.asarray(loaded.serve(x)), want, rtol=1e-4, atol=1e-5)
        # One image: the later stages get no samples and are not run.
        np.testing.assert_allclose(np.asarray(loaded.serve(x[:1])), want[:1], rtol=1e-4, atol=1e-5)
    assert len(np.unique(cost)) > 1, "the test wants samples leaving at different exits"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_budgeted_predict_reads_only_steps_batches_and_names_what_it_cannot_do(family):
    # With a budget each family runs its own batch loop; Keras' `steps` was
    # silently ignored there (every batch read), `callbacks` never called.
    model = FAMILIES[family]()
    x = np.random.default_rng(0).random((7,) + model.image_shape).astype("float32")
    budget = 0.9
    whole = model.predict(x, budget=budget, batch_size=2, verbose=0)
    first = model.predict(x, budget=budget, batch_size=2, steps=2, verbose=0)
    np.testing.assert_allclose(first, whole[:4], rtol=1e-5, atol=1e-5)
    batches = [x[:3], x[3:]]
    assert len(model.predict(batches, budget=budget, steps=1, verbose=0)) == 3
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        model.predict(x, budget=budget, steps=0)
    with pytest.raises(ValueError, match="calls no callbacks"):
        model.predict(x, budget=budget, callbacks=[keras.callbacks.Callback()])
    with pytest.raises(TypeError, match="unexpected keyword argument 'stpes'"):
        model.predict(x, budget=budget, stpes=1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("value", [0, -1, 2.5, "8"])
def test_a_bad_batch_size_or_steps_is_named_in_every_loop(family, value):
    # Keras' own loops took batch_size=0 for 32 and failed on -1 or 2.5 with
    # an UnboundLocalError or a TypeError about slices.
    model = FAMILIES[family]()
    model.compile()
    x = np.zeros((4,) + model.image_shape, "float32")
    y = np.zeros((4,), "int32")
    calls = [lambda **kw: model.fit(x, y, verbose=0, **kw),
             lambda **kw: model.evaluate(x, y, verbose=0, **kw),
             lambda **kw: model.evaluate(x, y, budget=0.9, verbose=0, **kw),
             lambda **kw: model.predict(x, verbose=0, **kw),
             lambda **kw: model.predict(x, budget=0.9, verbose=0, **kw)]
    for call in calls:
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {value!r}"):
            call(batch_size=value)
    for call in calls[1:]:
        with pytest.raises(ValueError, match=f"steps must be a positive integer, got {value!r}"):
            call(steps=value)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        model.predict(x, 0)  # positional, as Keras' signature allows
    assert not model.optimizer.built or model.optimizer.iterations.numpy() == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_budgeted_predict_shows_keras_progress_bar_unless_silenced(family, capsys):
    model = FAMILIES[family]()
    x = np.zeros((7,) + model.image_shape, "float32")
    model.predict(x, budget=0.9, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    model.predict(x, budget=0.9, batch_size=4)  # "auto", as Keras' predict: a bar
    assert "2/2" in capsys.readouterr().out
    model.predict(x, budget=0.9, batch_size=4, steps=1, verbose=2)
    assert "1/1" in capsys.readouterr().out


def test_predict_all_exits_shows_keras_progress_bar_unless_silenced(capsys):
    model = FAMILIES["msdnet"]()
    x = np.zeros((7,) + model.image_shape, "float32")
    model.predict_all_exits(x, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    assert model.predict_all_exits(x, batch_size=4).shape == (model.num_exits, 7, model.num_classes)
    assert "2/2" in capsys.readouterr().out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_evaluate_at_a_budget_scores_what_predict_returns(family):
    import tensorflow as tf

    model = FAMILIES[family]()
    x, y = _images_and_labels(model, n=12)
    model.compile(optimizer="adam", metrics=["accuracy"])
    logits, cost = model.predict(x, batch_size=5, budget=0.8, return_cost=True, verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = {"loss": float(keras.ops.convert_to_numpy(loss(y, logits))),
            "accuracy": float(np.mean(np.argmax(logits, -1) == y)), "flops": float(cost.mean())}
    got = model.evaluate(x, y, batch_size=5, budget=0.8, return_dict=True, verbose=0)
    assert got == pytest.approx(want, rel=1e-5)
    assert cost.mean() < profile_flops(model)  # the budget's cost, not the full model's
    # A dataset's batches, and Keras' list order with "flops" last.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert model.evaluate(data, budget=0.8, verbose=0) == pytest.approx(
        [want["loss"], want["accuracy"], want["flops"]], rel=1e-5)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 5\)"):
        model.evaluate(x, np.full(12, 7), budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="leave y and sample_weight out"):
        model.evaluate(data, y, budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="evaluate needs labels"):
        model.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(5), budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="calls no callbacks"):
        model.evaluate(x, y, budget=0.8, callbacks=[keras.callbacks.History()], verbose=0)
    with pytest.raises(ValueError, match="budget must be a finite number"):
        model.evaluate(x, y, budget=1.5, verbose=0)
    # Counts that do not match failed in the loss with the backend's shape
    # error (a RuntimeError on torch); arrays are checked before any image runs.
    with pytest.raises(ValueError, match="evaluate got 12 images but 5 labels: pass one per image"):
        model.evaluate(x, y[:5], budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="evaluate got 12 images but 3 sample weights"):
        model.evaluate(x, y, sample_weight=np.ones(3), budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="evaluate got 5 images but 4 labels"):
        model.evaluate([(x[:5], y[:4])], budget=0.8, verbose=0)
    with pytest.raises(ValueError, match="call model.compile"):
        FAMILIES[family]().evaluate(x, y, budget=0.8, verbose=0)


def profile_flops(model):
    return az.profile(model).flops


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_freeze_backbone_trains_the_classifiers_only(family):
    model = FAMILIES[family]()
    trainable = len(model.trainable_weights)
    model.freeze_backbone()
    heads = {id(v) for layer in model.classifier_layers() for v in layer.weights}
    assert {id(v) for v in model.trainable_weights} == heads
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    rng = np.random.default_rng(0)
    x = rng.random((16,) + model.image_shape, dtype=np.float32)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, rng.integers(0, model.num_classes, 16), epochs=1, batch_size=8, verbose=0)
    changed = {id(v) for v, old in zip(model.weights, before)
               if not np.array_equal(keras.ops.convert_to_numpy(v), old)}
    assert changed == heads  # BatchNorm statistics too stay as they were
    model.freeze_backbone(False)
    assert len(model.trainable_weights) == trainable


# ---------------------------------------------------------------------- #
# Keras' training loop: a default loss; a failed call leaves the model as it was.
# ---------------------------------------------------------------------- #
def _images_and_labels(model, n=8):
    rng = np.random.default_rng(0)
    return rng.random((n,) + model.image_shape, dtype=np.float32), rng.integers(0, 5, n)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compile_defaults_to_cross_entropy_on_the_logits(family):
    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"]
    x, y = _images_and_labels(model)
    # Whole-number floats with a trailing axis of 1 are class ids too.
    assert np.isfinite(model.fit(x, y.astype("float32")[:, None], epochs=1, verbose=0).history["loss"][-1])


@pytest.mark.parametrize("name", ["model.h5", "model.HDF5"])
def test_legacy_hdf5_model_files_are_refused_before_writing(name, tmp_path):
    # Keras wrote them, and its load_model then failed with "Unknown layer: 'MSDNet'".
    model = FAMILIES["msdnet"]()
    with pytest.raises(ValueError, match=r"legacy HDF5 format .* Save it as a \.keras file"):
        model.save(tmp_path / name)
    assert not list(tmp_path.iterdir())
    model.save_weights(tmp_path / "model.weights.h5")  # the weights alone stay Keras' own


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_saved_compiled_model_loads_compiled(family, tmp_path):
    # Keras skips `compile_from_config` for a model whose `compile` is its own.
    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    x, y = _images_and_labels(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.compiled and isinstance(loaded.loss, keras.losses.SparseCategoricalCrossentropy)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for got, want in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_failed_fit_evaluate_or_predict_leaves_the_model_as_it_was(family):
    # Keras' JAX trainer empties the variables for its first step: an error
    # there left them empty, and every later call of the model failed. On
    # TensorFlow a second `predict` traces with the channels unknown, and a
    # convolution took 2 channels for 1 as a grouped one (no error).
    import tensorflow as tf

    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    x, y = _images_and_labels(model)
    model.fit(x, y, epochs=1, verbose=0)  # the optimizer's variables hold values too
    before = model.predict(x, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    wrong = np.concatenate([x, x], axis=-1)
    with pytest.raises(ValueError, match="takes images with 1 channels"):
        model.predict(wrong, verbose=0)
    with pytest.raises(ValueError, match="takes images with 1 channels"):
        model.fit(wrong, y, verbose=0)
    with pytest.raises(ValueError, match="takes images with 1 channels"):
        model.evaluate(tf.data.Dataset.from_tensor_slices((wrong, y)).batch(4), verbose=0)
    with pytest.raises(ValueError, match="shape"):
        model.evaluate(x, np.zeros((8, 7)), verbose=0)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    # Labels the loss refuses where no check sees their shape (a dataset of
    # labels of unknown shape): Keras' own error, raised inside its loop.
    unknown = tf.data.Dataset.from_tensor_slices((x, np.zeros((8, 7)))).batch(4).map(
        lambda images, labels: (images, tf.numpy_function(lambda v: v, [labels], tf.float64)))
    with pytest.raises(Exception):  # noqa: B017 (each backend's own error type)
        model.fit(unknown, shuffle=False, verbose=0)
    assert np.isfinite(model.predict(x, verbose=0)).all()
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][-1])


EMPTY = {
    **MIXED,
    # A depthwise convolution, and logits per pixel.
    "dmnn_mobilenetv2": lambda: az.DMNNMobileNetV2(cifar=True, width_multiplier=0.25,
                                                   input_shape=(16, 16, 1), num_classes=5),
    "cnmm_segmentation": lambda: az.CNMM(depth=2, widths=(4, 8), task="segmentation",
                                         num_classes=5, input_shape=(16, 16, 1)),
}


@pytest.mark.parametrize("family", sorted(EMPTY))
def test_a_batch_of_no_images_gives_no_logits_and_the_loops_name_empty_data(family):
    # On TensorFlow the call failed inside a convolution ("Incompatible
    # shapes: [0,16,16,1] vs. [4]": its CPU convolution returns the input's
    # shape for an empty batch), and `predict` without a budget failed in
    # Keras' loop with an UnboundLocalError on every backend.
    model = EMPTY[family]()
    x = np.zeros((0,) + model.image_shape, "float32")
    want = (0,) + tuple(model(np.zeros((1,) + model.image_shape, "float32")).shape[1:])
    assert tuple(model(x).shape) == want
    logits, cost = model(x, budget=0.9, return_cost=True)
    assert tuple(logits.shape) == want and tuple(cost.shape) == (0,)
    labels = np.zeros(want[:-1], "int32")
    model.compile(optimizer="adam")
    for run in (lambda: model.predict(x, verbose=0), lambda: model.predict(x, budget=0.9, verbose=0),
                lambda: model.fit(x, labels, verbose=0), lambda: model.evaluate(x, labels, verbose=0)):
        with pytest.raises(ValueError, match="got no images"):
            run()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("labels,message", [
    (np.full(8, 5), r"labels must be class ids in \[0, 5\); got 8 label\(s\) outside, from 5 to 5"),
    (np.array([-1, 0, 1, 2, 3, 4, 0, 1]), r"got 1 label\(s\) outside, from -1 to -1"),
    (np.full(8, 2.5), "not whole numbers"),
    (np.zeros((8, 7)), r"one class id per image .* got labels of shape \(8, 7\)\.$"),
    (np.eye(5)[np.arange(8) % 5], "These look one-hot"),
])
def test_labels_the_loss_cannot_take_are_named_before_anything_changes(family, labels, message):
    # Without the check: on JAX labels past the last class trained with a
    # loss of zero; on PyTorch and TensorFlow the error came after the
    # forward pass had moved BatchNorm's statistics.
    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    x, y = _images_and_labels(model)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, validation_data=(x, labels), verbose=0)
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, labels, verbose=0)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
                                  keras.losses.sparse_categorical_crossentropy])
def test_labels_are_checked_for_sparse_cross_entropy_given_by_name(loss):
    model = FAMILIES["msdnet"]()
    model.compile(optimizer="adam", loss=loss)
    x, _ = _images_and_labels(model)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 5\)"):
        model.fit(x, np.full(8, 5), verbose=0)
    # Another loss takes other labels: one-hot ones train.
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, np.eye(5)[np.arange(8) % 5], verbose=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_labels_in_a_dataset_are_checked_as_the_loop_reads_them(family):
    import tensorflow as tf

    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    x, y = _images_and_labels(model)
    weights = [w.copy() for w in model.get_weights()]
    bad = y.copy()
    bad[1] = 9  # in the first batch: it stops the loop before any step
    data = tf.data.Dataset.from_tensor_slices((x, bad)).batch(4)
    message = (r"has 5 classes: labels must be class ids in \[0, 5\); "
               r"a batch holds labels outside, from 9 to 9\.")
    with pytest.raises(ValueError, match=message):
        model.fit(data, shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.evaluate(data, verbose=0)
    with pytest.raises(ValueError, match="These look one-hot"):  # from the element spec
        model.fit(tf.data.Dataset.from_tensor_slices((x, np.eye(5)[y])).batch(4), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="integer class ids as labels; got labels of dtype string"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y.astype(str))).batch(4), shuffle=False, verbose=0)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    good = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=message):
        model.fit(good, validation_data=data, shuffle=False, verbose=0)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 4

    def __getitem__(self, index):
        rows = slice(4 * index, 4 * index + 4)
        return self.x[rows], self.y[rows]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_labels_from_a_generator_or_a_py_dataset_are_checked_as_the_loop_reads_them(family):
    # Before: not checked; out-of-range labels trained with a loss of zero on
    # JAX.
    model = FAMILIES[family]()
    model.compile(optimizer="adam")
    x, y = _images_and_labels(model)
    bad = y.copy()
    bad[5] = 9  # in the second batch
    message = r"has 5 classes: labels must be class ids in \[0, 5\); got 1 label\(s\) outside, from 9 to 9\."

    def batches(labels):
        for start in (0, 4):
            yield x[start:start + 4], labels[start:start + 4]

    with pytest.raises(ValueError, match=message):
        model.fit(batches(bad), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.evaluate(_Batches(x, bad), verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(_Batches(x, y), validation_data=batches(bad), verbose=0)
    # Good labels train, the user's workers, length and epochs kept.
    history = model.fit(_Batches(x, y, workers=2), epochs=2, verbose=0).history["loss"]
    assert len(history) == 2 and np.isfinite(history).all()
    # A PyTorch DataLoader (Keras takes one on every backend): a copy with the
    # check after its collate_fn; the user's loader is left as it was.
    import torch

    def loader(labels):
        pairs = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(labels))
        return torch.utils.data.DataLoader(pairs, batch_size=4)

    bad_loader = loader(bad)
    collate = bad_loader.collate_fn
    with pytest.raises(ValueError, match=message):
        model.fit(bad_loader, shuffle=False, verbose=0)
    assert bad_loader.collate_fn is collate
    history = model.fit(loader(y), epochs=2, shuffle=False, verbose=0).history["loss"]
    assert len(history) == 2 and np.isfinite(history).all()


def test_segmentation_labels_are_one_class_id_per_pixel_or_the_ignored_class():
    model = az.CNMMTiny(num_classes=5, task="segmentation")
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    x = np.random.default_rng(0).random((4,) + model.image_shape, dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 5, (4,) + model.image_shape[:2])
    y[0, 0, 0] = 255
    assert np.isfinite(model.fit(x, y, verbose=0).history["loss"][-1])
    with pytest.raises(ValueError, match=r"in \[0, 5\) or 255; got 1 label\(s\) outside, from 7 to 7"):
        model.fit(x, np.where(y == 255, 7, y), verbose=0)
    with pytest.raises(ValueError, match=r"one class id per pixel as labels, shape \(batch, 8, 8, 1\)"):
        model.fit(x, y[:, :4], verbose=0)


@pytest.mark.parametrize("family", ["msdnet", "dmnn"])
def test_a_calibration_without_budgets_is_refused_and_keeps_the_thresholds(family):
    model = FAMILIES[family]()
    held = _images_and_labels(model, 7)
    kept = model.calibrate(held, budgets=[1.0], verbose=0)
    for grid in ([], 1.0):
        with pytest.raises(ValueError, match="budgets must be a list of numbers"):
            model.calibrate(held, budgets=grid, verbose=0)
    assert model.calibration is kept
    assert model.predict(held[0], budget=1.0, verbose=0).shape == (7, 5)


@pytest.mark.parametrize("family", ["msdnet", "dmnn"])
def test_calibrate_shows_keras_progress_bar_unless_silenced(family, capsys):
    model = FAMILIES[family]()
    held = _images_and_labels(model, 7)
    model.calibrate(held, budgets=[1.0], batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    model.calibrate(held, budgets=[1.0], batch_size=4)  # "auto", as Keras' predict: a bar
    assert "2/2" in capsys.readouterr().out
    batches = [(held[0][:4], held[1][:4]), (held[0][4:], held[1][4:])]
    az.calibrate(model, batches, budgets=[1.0], verbose=2)  # one line per pass over the data
    assert "2/2" in capsys.readouterr().out


def test_the_first_fit_traces_the_training_step_once():
    # Keras' TensorFlow trainer builds Adam's variables inside the first trace
    # of its step, and TensorFlow then traces it again (half of a small
    # model's first `fit`); the zoo builds them before.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the retrace is TensorFlow's (Keras builds the optimizer first on JAX and PyTorch)")
    model = FAMILIES["msdnet"]()
    model.compile(optimizer="adam")
    traces, step = [], model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    x, y = _images_and_labels(model)
    model.fit(x, y, epochs=2, verbose=0)
    assert len(traces) == 1
    assert len(model.optimizer.variables) > len(model.trainable_variables)  # Adam's moments


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_compiles_with_xla_on_tensorflow(family):
    # Keras compiles `fit` with XLA on TensorFlow where a GPU is present
    # (`jit_compile="auto"`; not on a CPU-only machine like ours): asked for here.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("jit_compile=True is XLA on TensorFlow (JAX always compiles; PyTorch's is torch.compile)")
    keras.utils.set_random_seed(0)
    model = FAMILIES[family]()
    model.compile(optimizer="adam", jit_compile=True)
    assert model.jit_compile
    x, y = _images_and_labels(model, n=16)
    losses = model.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
