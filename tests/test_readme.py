"""The README against the package: its Python examples parse, and every name,
model method and file of ours that it mentions exists (so that a rename
cannot leave the documentation behind)."""

import ast
import os
import re
import textwrap

import adaptive_zoo

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    README = f.read()

MODULES = ("budget", "convert", "cost", "data", "fast_path", "losses", "weights")
FAMILIES = (adaptive_zoo.MSDNet, adaptive_zoo.RANet, adaptive_zoo.DMNN, adaptive_zoo.CNMM)


def _resolve(dotted):
    obj = adaptive_zoo
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_python_examples_parse():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 8
    for block in blocks:
        ast.parse(textwrap.dedent(block))


def test_the_layers_example_runs():
    import keras
    import numpy as np

    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S)
                if "from adaptive_zoo import GumbelGate" in b]
    names = {}
    exec(compile(block, "README.md", "exec"), names)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(names["sparse"]),
                               keras.ops.convert_to_numpy(names["dense"]), atol=1e-5)
    assert tuple(names["logits"].shape) == (8, 10)
    assert tuple(names["outputs"].shape) == (8, 8, 8, 32)


def test_the_layers_train_and_save_in_a_model_of_ones_own(tmp_path):
    # The README's claim for the four layers: `fit` and `.keras` files in a user's functional model.
    import keras
    import numpy as np

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    gates, _ = adaptive_zoo.GumbelGate(2, use_previous_state=False, seed=1)(x)
    x = adaptive_zoo.SubBlockBranch("bottleneck", widths=(8, 8), filters=32)(x, gates)
    edges = [adaptive_zoo.MixtureEdge(32, direction="down", seed=s)(x) for s in (2, 3)]
    x = adaptive_zoo.layers.mix_node(edges)  # a CNMM node: its edges weighted by their keep samples
    model = keras.Model(inputs, adaptive_zoo.MultiScaleDenseExit(5, width=16)(x))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images, labels = rng.random((16, 16, 16, 3), dtype=np.float32), rng.integers(0, 5, 16)
    before = [np.copy(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights]
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    moved = [not np.array_equal(keras.ops.convert_to_numpy(w), b)
             for w, b in zip(model.trainable_weights, before)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]
    model.save(tmp_path / "mine.keras")
    loaded = keras.saving.load_model(tmp_path / "mine.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_every_package_name_it_mentions_exists():
    names = set(re.findall(r"adaptive_zoo\.([A-Za-z_][\w.]*\w)", README))
    modules = "|".join(MODULES)
    names |= {n for n in re.findall(rf"`(?:adaptive_zoo\.)?((?:{modules})\.[A-Za-z_]\w*)", README)
              if not n.endswith(".py")}
    assert {"create_model", "profile", "budget.prune_mixture"} <= names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except AttributeError:
            missing.append(name)
    assert not missing, missing


def test_every_model_method_it_calls_exists():
    methods = set(re.findall(r"\bmodel\.([a-z_]\w*)\(", README))
    assert {"calibrate", "predict", "export", "freeze_backbone"} <= methods
    # `zero_grad`: the DDP example's, of `torch.nn.Module` (a model on PyTorch).
    missing = [m for m in sorted(methods - {"zero_grad"})
               if not any(hasattr(family, m) for family in FAMILIES)]
    assert not missing, missing


def test_every_file_it_names_exists():
    paths = set(re.findall(r"`((?:adaptive_zoo|docs|examples|scripts|tests|weights)/[\w./-]*\w)", README))
    assert "examples/benchmark.py" in paths and "scripts/test.sh" in paths
    missing = [p for p in sorted(paths) if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, missing
