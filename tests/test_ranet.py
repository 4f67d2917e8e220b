"""RANet: parity with the authors' network, cost, early exit, saving. Its blocks and
resizing on their own: tests/test_multi_scale_dense.py.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch).
"""

import os

import keras
import numpy as np
import pytest

import adaptive_zoo
from adaptive_zoo import convert
from adaptive_zoo.convert import ranet as ranet_convert
from adaptive_zoo.models.ranet import RANet, ranet_block_plan
from conftest import RANET_TINY_FLAGS, load_fixture

BACKEND = keras.backend.backend()

# PAPERS.md, RANet section (the authors' op_counter on their models).
CIFAR_MFLOPS = [15.83, 31.31, 44.69, 50.41, 60.71, 63.72, 90.26, 95.00]
CIFAR_PARAMS = 3_354_710
IMAGENET_FIRST_LAST_MFLOPS = (434.97, 3333.49)
IMAGENET_PARAMS_M = 149.14


def _tiny_model(**overrides):
    kwargs = ranet_convert.model_kwargs(RANET_TINY_FLAGS)
    kwargs.update(input_shape=(16, 16, 3), head_width=8, num_classes=5)
    kwargs.update(overrides)
    return RANet(**kwargs)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _export_state_dict(model):
    """Our weights under the authors' names and layouts (inverse of convert)."""
    result = {}
    for name, (variable, transform) in ranet_convert.entries(model).items():
        value = _numpy(variable)
        if transform is not None and value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))  # HWIO -> OIHW
        elif transform is not None:
            value = np.transpose(value)
        result[name] = value
    return result


@pytest.fixture(scope="module")
def fixture_data():
    return load_fixture("ranet_cifar100_anytime.npz")


@pytest.fixture(scope="module")
def cifar_model(fixture_data):
    meta, tensors, _, _ = fixture_data
    return convert.from_authors("ranet", meta["config"], tensors)


@pytest.fixture(scope="module")
def tiny():
    return _tiny_model()


# --------------------------------------------------------------------------- #
# Parity and cost of the published models.
# --------------------------------------------------------------------------- #
def test_fixture_parity_every_exit(fixture_data, cifar_model):
    meta, _, images, logits = fixture_data
    assert cifar_model.num_exits == meta["num_exits"] == 8
    ours = cifar_model(images, exits="all")
    for k, (mine, theirs) in enumerate(zip(ours, logits)):
        error = np.abs(_numpy(mine) - theirs).max() / np.abs(theirs).max()
        assert error < 1e-4, f"exit {k}: relative error {error}"
    # The compiled inference path too (on PyTorch: gradients off, so each
    # block's growing features fill reserved channels in place).
    for k, (mine, theirs) in enumerate(zip(cifar_model.predict_all_exits(images, verbose=0), logits)):
        error = np.abs(mine - theirs).max() / np.abs(theirs).max()
        assert error < 1e-4, f"exit {k}, compiled: relative error {error}"


def test_cifar_anytime_profile(fixture_data, cifar_model):
    meta, _, _, _ = fixture_data
    profile = adaptive_zoo.profile(cifar_model)
    assert profile.params == CIFAR_PARAMS == meta["num_params"]
    assert len(profile.exit_flops) == len(CIFAR_MFLOPS)
    for k, (mine, paper) in enumerate(zip(profile.exit_flops, CIFAR_MFLOPS)):
        assert abs(mine / 1e6 - paper) / paper < 0.005, f"exit {k}: {mine / 1e6} vs {paper}"
    assert profile.flops == profile.exit_flops[-1]


def test_cifar_preset_is_the_fixture_configuration(fixture_data, cifar_model):
    meta, _, _, _ = fixture_data
    preset_config = dict(
        n_blocks=2, block_step=2, step_mode="even", step=4, scale_list=[1, 2, 3, 3],
        n_channels=16, growth_rate=6, gr_factor=[4, 2, 1, 1], bn_factor=[4, 2, 1, 1],
        compress_factor=0.25, reduction=0.5, bottleneck=True, imagenet_stem=False,
        head_width=128,
    )
    config = cifar_model.get_config()
    for key, value in preset_config.items():
        assert config[key] == value, key


def test_imagenet_profile():
    model = adaptive_zoo.RANetImageNet()
    profile = adaptive_zoo.profile(model)
    assert len(profile.exit_flops) == 8
    first, last = IMAGENET_FIRST_LAST_MFLOPS
    assert abs(profile.exit_flops[0] / 1e6 - first) / first < 0.005
    assert abs(profile.exit_flops[-1] / 1e6 - last) / last < 0.005
    assert abs(profile.params / 1e6 - IMAGENET_PARAMS_M) / IMAGENET_PARAMS_M < 0.005


# --------------------------------------------------------------------------- #
# The state between stages and the block plan.
# --------------------------------------------------------------------------- #
def test_early_exit_state_keeps_each_feature_once(cifar_model):
    # Between stages, the published CIFAR model carried 2.5 MiB per image
    # when every per-layer feature was kept as its own tensor; keeping one
    # per block and resolution, 0.83 MiB. This is what the gathers and the
    # pooled stream copy at each exit.
    state = [np.zeros((1, 32, 32, 3), "float32")]
    largest = 0
    for k in range(cifar_model.num_exits):
        state = cifar_model._stage(k, state, training=False)
        largest = max(largest, sum(int(np.prod(t.shape)) * 4 for t in state))
    assert largest < 1 << 20, largest


def test_block_plan_matches_authors_rules():
    plan = ranet_block_plan(2, 2, "even", 4, [1, 2, 3, 3])
    assert [len(p) for p in plan] == [2, 4, 6, 8]
    assert sum(b["exit"] for p in plan for b in p) == 8
    assert [b["down"] for b in plan[3]] == [False, False, False, True, False, True, False, False]
    assert [b["transition"] for b in plan[2]] == [False, True, False, True, False, False]
    lg = ranet_block_plan(2, 2, "lg", 2, [1, 2, 3])
    assert [b["layers"] for b in lg[2]] == [2, 4, 6, 8, 10, 12]


def test_invalid_configurations():
    with pytest.raises(ValueError, match="one entry per sub-network"):
        _tiny_model(gr_factor=(2, 1))
    with pytest.raises(ValueError, match="bottleneck"):
        _tiny_model(bottleneck=False)
    with pytest.raises(ValueError, match="step_mode"):
        ranet_block_plan(2, 2, "lin_grow", 4, [1, 2])
    # Non-integers were truncated (a step of 2.5 built the network of step 2).
    with pytest.raises(ValueError, match="step must be an integer, got 2.5"):
        _tiny_model(step=2.5)
    with pytest.raises(ValueError, match="each of gr_factor must be a positive integer, got 0"):
        _tiny_model(gr_factor=(2, 0, 1))


# --------------------------------------------------------------------------- #
# The budget contract: real early exit.
# --------------------------------------------------------------------------- #
def test_early_exit_matches_dense_pick(tiny):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(48, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 5, size=48)
    # Explicit budgets: the default grid of MultiExitModel.calibrate starts
    # from a "cheapest" estimate that fails on this tiny net (see report).
    tiny.calibrate((images, labels), budgets=[0.6, 0.7, 0.8, 0.9, 1.0])
    dense = np.stack([_numpy(o) for o in tiny(images, exits="all")])
    probs = np.exp(dense - dense.max(-1, keepdims=True))
    confidence = (probs / probs.sum(-1, keepdims=True)).max(-1)
    exit_flops = np.asarray(tiny.exit_flops(), dtype="float32")

    seen_stages = []
    original = tiny._stage

    def spy(k, state, training=None):
        first = state[0] if isinstance(state, (list, tuple)) else state
        seen_stages.append((k, int(first.shape[0])))
        return original(k, state, training=training)

    used = set()
    lo, hi = tiny.calibration.budget_range
    tiny._stage = spy
    try:
        for budget in np.linspace(lo, hi, 3):
            seen_stages.clear()
            logits, cost = tiny(images, budget=float(budget), return_cost=True)
            cost = _numpy(cost)
            # Cumulative exit costs are distinct: the cost names the exit taken.
            chosen = np.array([int(np.flatnonzero(exit_flops == c)[0]) for c in cost])
            used.update(chosen.tolist())
            # The exit taken is the first whose confidence reaches its
            # threshold (up to float rounding between the two paths).
            thresholds = tiny.calibration.thresholds_for(float(budget))
            for i, k in enumerate(chosen):
                assert np.all(confidence[:k, i] < np.asarray(thresholds[:k]) + 1e-5), (budget, i)
                if k < tiny.num_exits - 1:
                    assert confidence[k, i] >= thresholds[k] - 1e-5, (budget, i)
            # Its logits are the dense path's logits of that exit.
            picked = dense[chosen, np.arange(len(images))]
            np.testing.assert_allclose(_numpy(logits), picked, rtol=1e-4, atol=1e-5)
            # Stage k ran only on the samples that had not left before it.
            for k, batch in seen_stages:
                assert batch == int(np.sum(chosen >= k)), (budget, k, batch)
            assert seen_stages[0] == (0, len(images))
    finally:
        del tiny._stage
    assert len(used) > 1


def test_compiled_predict_matches_call(tiny):
    rng = np.random.default_rng(6)
    images = rng.normal(size=(20, 16, 16, 3)).astype("float32")
    tiny.calibrate((images, rng.integers(0, 5, size=20)), budgets=[0.7, 0.85, 1.0])
    # Fresh images: no sample sits exactly on a threshold, where float
    # rounding of the two paths could legitimately differ.
    images = rng.normal(size=(20, 16, 16, 3)).astype("float32")
    for budget in (0.7, 0.85):
        logits, cost = tiny(images, budget=budget, return_cost=True)
        fast_logits, fast_cost = tiny.predict(images, budget=budget, return_cost=True,
                                              batch_size=8)
        np.testing.assert_allclose(fast_logits, _numpy(logits), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(fast_cost, _numpy(cost))


def test_compiled_predict_follows_new_weights():
    # Each compiled stage takes only the variables of its blocks and exit;
    # after set_weights, predict must compute with the new values everywhere
    # (it fails if a stage's list misses a variable that JAX then bakes in).
    keras.utils.set_random_seed(7)
    model = _tiny_model()
    rng = np.random.default_rng(8)
    images = rng.normal(size=(24, 16, 16, 3)).astype("float32")
    model.calibrate((images, rng.integers(0, 5, size=24)), budgets=[0.7, 1.0])
    model.predict(images, budget=0.7, batch_size=24)  # compiles the stages
    model.set_weights([w * (1 + 0.2 * rng.standard_normal(w.shape)).astype(w.dtype)
                       for w in model.get_weights()])
    images = rng.normal(size=(24, 16, 16, 3)).astype("float32")
    logits, cost = model(images, budget=0.7, return_cost=True)  # eager: the new weights
    assert len(np.unique(_numpy(cost))) > 1  # several exits: their heads decide
    fast_logits, fast_cost = model.predict(images, budget=0.7, return_cost=True, batch_size=24)
    np.testing.assert_allclose(fast_logits, _numpy(logits), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(fast_cost, _numpy(cost))


def test_anytime_budget_and_cost(tiny):
    images = np.zeros((3, 16, 16, 3), dtype="float32")
    flops = tiny.exit_flops()
    logits, cost = tiny(images, budget=flops[0] / flops[-1], mode="anytime", return_cost=True)
    dense = tiny(images, exits="all")
    np.testing.assert_allclose(_numpy(logits), _numpy(dense[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(cost), tiny.path_flops(0))


# --------------------------------------------------------------------------- #
# Saving, converting, training.
# --------------------------------------------------------------------------- #
def test_keras_round_trip(tiny, tmp_path):
    path = os.path.join(tmp_path, "ranet.keras")
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, RANet)
    images = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype("float32")
    for a, b in zip(tiny(images, exits="all"), loaded(images, exits="all")):
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=1e-5, atol=1e-6)
    assert loaded.get_config() == tiny.get_config()
    assert adaptive_zoo.profile(loaded) == adaptive_zoo.profile(tiny)


@pytest.fixture(scope="module")
def tiny_authors():
    """A tiny model from the authors' flags, and its weights under their names."""
    model = convert.from_authors("ranet", RANET_TINY_FLAGS)
    return model, _export_state_dict(model)


def test_from_authors_round_trip(tiny_authors):
    model, state_dict = tiny_authors
    assert model.num_exits == 3
    copy = convert.from_authors("ranet", RANET_TINY_FLAGS, state_dict)
    images = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype("float32")
    for a, b in zip(model(images, exits="all"), copy(images, exits="all")):
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=1e-5, atol=1e-6)


def test_from_authors_flag_errors():
    with pytest.raises(ValueError, match="bogusFlag"):
        convert.from_authors("ranet", {**RANET_TINY_FLAGS, "bogusFlag": 3})
    with pytest.raises(ValueError, match="num_classes"):
        convert.from_authors("ranet", {**RANET_TINY_FLAGS, "num_classes": 7})
    with pytest.raises(ValueError, match="nScales"):
        convert.from_authors("ranet", {**RANET_TINY_FLAGS, "nScales": 2})
    with pytest.raises(ValueError, match="grFactor"):
        convert.from_authors("ranet", {**RANET_TINY_FLAGS, "grFactor": "2-1"})
    assert "ranet" in convert.KINDS


def test_from_authors_state_dict_errors(tiny_authors):
    model, state_dict = tiny_authors
    name = "scale_flows.2.1.layers.0.conv_up.net.3.weight"
    assert name in state_dict
    missing = {k: v for k, v in state_dict.items() if k != name}
    with pytest.raises(ValueError, match=r"missing.*" + name.replace(".", r"\.")):
        convert.load_state_dict(model, missing, "ranet")
    extra = {**state_dict, "scale_flows.7.0.conv_last.net.0.weight": np.zeros((1, 1, 1, 1))}
    with pytest.raises(ValueError, match=r"unexpected.*scale_flows\.7\.0\.conv_last"):
        convert.load_state_dict(model, extra, "ranet")
    wrong = {**state_dict, name: np.zeros((2, 3, 3, 3), dtype="float32")}
    with pytest.raises(ValueError, match=r"wrong shape.*" + name.replace(".", r"\.")):
        convert.load_state_dict(model, wrong, "ranet")


def test_fit_one_step():
    model = _tiny_model(num_classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(5)
    images = rng.normal(size=(8, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(8,))
    before = _numpy(model.heads[-1].dense.kernel).copy()
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, _numpy(model.heads[-1].dense.kernel))


def test_weights_registry_names_the_authors():
    with pytest.raises(ValueError, match="yangle15/RANet-pytorch"):
        adaptive_zoo.weights.resolve("imagenet", "ranet")
