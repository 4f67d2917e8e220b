"""The checkpoint registry: names, paths, hashes."""

import hashlib
import os

import keras
import numpy as np
import pytest

import adaptive_zoo
from adaptive_zoo import weights


def test_unknown_name_lists_what_is_available():
    with pytest.raises(ValueError, match="Unknown weights 'cifar1000'"):
        adaptive_zoo.MSDNetTiny(weights="cifar1000")


def test_known_name_without_a_published_file_says_how_to_get_it():
    with pytest.raises(ValueError, match="No checkpoint is published under 'imagenet'.*kalviny"):
        adaptive_zoo.MSDNetTiny(weights="imagenet")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="No checkpoint file"):
        adaptive_zoo.MSDNetTiny(weights=str(tmp_path / "nothing.weights.h5"))


def test_keras_weights_round_trip_and_mismatch(tmp_path):
    model = adaptive_zoo.MSDNetTiny()
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    loaded = adaptive_zoo.MSDNetTiny(weights=path)
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    with pytest.raises(ValueError, match="do not fit"):
        adaptive_zoo.MSDNetTiny(n_blocks=3, weights=path)


def test_a_mismatched_or_corrupted_weights_file_names_the_problem(tmp_path):
    path = str(tmp_path / "ten.weights.h5")
    adaptive_zoo.MSDNetTiny(num_classes=10).save_weights(path)
    # Same number of tensors, the stem's input channels differ: both sides named.
    with pytest.raises(ValueError, match=r"only in the file: .*\(3, 3, 1, 8\).*only in the model: "
                                         r".*\(3, 3, 3, 8\)"):
        adaptive_zoo.MSDNetTiny(input_shape=(16, 16, 3), weights=path)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not hdf5")
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(open(path, "rb").read()[:3000])  # an interrupted copy
    for bad in (garbage, truncated):
        with pytest.raises(ValueError, match="not a readable Keras .weights.h5 file"):
            adaptive_zoo.MSDNetTiny(weights=str(bad))


def test_registered_download_is_verified_and_a_bad_file_is_not_kept(tmp_path, monkeypatch):
    source = tmp_path / "published.weights.h5"
    model = adaptive_zoo.MSDNetTiny()
    model.save_weights(str(source))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(
        weights.REGISTRY, "test-good",
        {"families": {"msdnet": {"url": source.as_uri(), "sha256": digest, "how": ""}}},
    )
    assert "test-good" in weights.available("msdnet")
    path = weights.resolve("test-good", "msdnet")
    assert os.path.exists(path)
    adaptive_zoo.MSDNetTiny(weights="test-good")
    os.remove(path)
    monkeypatch.setitem(
        weights.REGISTRY, "test-bad",
        {"families": {"msdnet": {"url": source.as_uri(), "sha256": "0" * 64, "how": ""}}},
    )
    with pytest.raises(ValueError, match="verified"):
        weights.resolve("test-bad", "msdnet")
    assert not os.path.exists(path)


def _manifest():
    import json

    path = os.path.join(os.path.dirname(__file__), "..", "weights", "manifest.json")
    with open(path) as f:
        return json.load(f)


def test_manifest_lists_exactly_the_published_files_with_measured_numbers(monkeypatch):
    manifest = _manifest()
    weights.check_manifest(manifest)
    # A file registered without measured numbers in the manifest is refused.
    url, digest = "https://example.invalid/tiny.weights.h5", "a" * 64
    monkeypatch.setitem(weights.REGISTRY, "digits",
                        {"families": {"msdnet": {"url": url, "sha256": digest, "how": ""}}})
    with pytest.raises(ValueError, match="'digits' \\(msdnet\\) is registered but not in the"):
        weights.check_manifest(manifest)
    entry = {"name": "digits", "family": "msdnet", "url": url, "sha256": digest}
    with pytest.raises(ValueError, match="no measured numbers"):
        weights.check_manifest({"published": [entry]})
    entry["measured"] = [{"dataset": "digits test", "top1": 0.98, "script": "examples/eval.py",
                          "commit": "0000000"}]
    weights.check_manifest({"published": [entry]})
    with pytest.raises(ValueError, match="sha256 differs"):
        weights.check_manifest({"published": [dict(entry, sha256="b" * 64)]})


def _tiny_dmnn(num_classes, **kwargs):
    return adaptive_zoo.DMNNResNet(depths=(2, 2), base_width=8, input_shape=(8, 8, 1),
                                   cifar_stem=True, num_classes=num_classes, **kwargs)


@pytest.mark.parametrize("family, make", [
    ("msdnet", lambda k, **kw: adaptive_zoo.MSDNetTiny(num_classes=k, **kw)),
    ("dmnn", _tiny_dmnn),
    ("cnmm", lambda k, **kw: adaptive_zoo.CNMMTiny(num_classes=k, **kw)),
])
def test_weights_of_another_class_count_load_all_but_the_classifiers(family, make, tmp_path):
    trained = make(10)
    path = str(tmp_path / f"{family}.weights.h5")
    trained.save_weights(path)
    with pytest.warns(UserWarning, match="trained for 10 classes, this model has num_classes=3"):
        model = make(3, weights=path)
    heads = {id(v) for layer in model.classifier_layers() for v in layer.weights}
    assert heads and all(v.shape[-1] == 3 for layer in model.classifier_layers()[:1]
                         for v in layer.weights)
    for mine, theirs in zip(model.weights, trained.weights):
        if id(mine) not in heads:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine),
                                          keras.ops.convert_to_numpy(theirs), err_msg=mine.path)
    x = np.random.default_rng(0).random((2,) + model.image_shape, dtype=np.float32)
    assert model.predict(x, verbose=0).shape == (2, 3)


def test_another_class_count_and_another_architecture_is_still_an_error(tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    adaptive_zoo.MSDNetTiny(num_classes=10).save_weights(path)
    with pytest.raises(ValueError, match="do not fit"):
        adaptive_zoo.MSDNetTiny(num_classes=3, n_blocks=3, weights=path)


def test_dmnn_weights_load_with_or_without_the_training_only_category_heads(tmp_path):
    # Trained with a category loss (the paper's recipe), served without its
    # heads, and the reverse (fine-tuning with a category map from weights
    # saved without one).
    categories = [c % 2 for c in range(10)]
    with_heads = _tiny_dmnn(10, category_map=categories)
    without = _tiny_dmnn(10)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    for source, make in ((with_heads, lambda **kw: _tiny_dmnn(10, **kw)),
                         (without, lambda **kw: _tiny_dmnn(10, category_map=categories, **kw))):
        path = str(tmp_path / f"dmnn{len(source.category_heads)}.weights.h5")
        source.save_weights(path)
        loaded = make(weights=path)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), source.predict(x, verbose=0),
                                   atol=1e-6)
    # With the heads on both sides, they load too (resuming training).
    path = str(tmp_path / "resume.weights.h5")
    with_heads.save_weights(path)
    resumed = _tiny_dmnn(10, category_map=categories, weights=path)
    for mine, theirs in zip(resumed.category_heads, with_heads.category_heads):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine.kernel),
                                      keras.ops.convert_to_numpy(theirs.kernel))
