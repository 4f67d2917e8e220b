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
    # Same number of tensors, the classifiers' shapes differ: both sides named.
    with pytest.raises(ValueError, match=r"only in the file: .*\(32, 10\).*only in the model: .*\(32, 7\)"):
        adaptive_zoo.MSDNetTiny(num_classes=7, weights=path)
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
