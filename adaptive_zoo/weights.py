"""The checkpoint registry: names -> (URL, SHA-256, family), and loading.

`weights=` on every constructor takes `None`, a registered name, or a path:

- a registered name downloads with `keras.utils.get_file(..., file_hash=)`
  into the Keras cache (offline, a cached file is used); a hash mismatch is an
  error and leaves no file behind;
- `*.weights.h5`: Keras weights of the same configuration;
- `*.pth`, `*.pth.tar`, `*.pt`: the authors' PyTorch checkpoint, converted
  (`adaptive_zoo.convert`; needs torch).

A name that is known but has no published file raises an error that says what
is available and how to produce the missing one.

A checkpoint trained for another number of classes than the model's
`num_classes` (in either format) loads every weight except the classifiers'
(`model.classifier_layers()`), which keep their fresh initialization for
fine-tuning, with a warning; any other difference is an error.

`weights/manifest.json` (in the repository) lists every published file with
the numbers we measured for it; `check_manifest` holds it to `REGISTRY`.
"""

import collections
import os
import warnings

import keras

__all__ = ["REGISTRY", "available", "check_manifest", "load_weights", "resolve", "warn_fresh_classifiers"]

# name -> entry. `url` and `sha256` are None until a file is published; then
# weights/manifest.json records the numbers we measured for it.
REGISTRY = {
    "imagenet": {
        "families": {
            "msdnet": {
                "url": None,
                "sha256": None,
                "how": (
                    "The MSDNet authors publish ImageNet checkpoints "
                    "(msdnet-step=4-block=5.pth.tar, step 6 and 7) from their repository "
                    "kalviny/MSDNet-PyTorch. Download one yourself and pass its path: "
                    "MSDNetImageNet(step=4, weights='/path/msdnet-step=4-block=5.pth.tar')."
                ),
            },
            "ranet": {
                "url": None,
                "sha256": None,
                "how": (
                    "No RANet checkpoint is registered. The RANet authors' repository "
                    "yangle15/RANet-pytorch is where to look for their trained models; with a "
                    "checkpoint of theirs, pass its path (RANetImageNet(weights='/path/model.pth.tar')), "
                    "or convert it with adaptive_zoo.convert.from_authors('ranet', flags, path)."
                ),
            },
            "dmnn": {
                "url": None,
                "sha256": None,
                "how": (
                    "The DMNN authors publish no checkpoint, and we have not trained one on "
                    "ImageNet. Train it yourself with our training recipe (model.compile(...) "
                    "and model.fit(...) with the resource-constrained loss built into the "
                    "model), save it with model.save_weights('dmnn.weights.h5'), and pass "
                    "that path: DMNN50(sub_blocks=2, weights='dmnn.weights.h5')."
                ),
            },
            "cnmm": {
                "url": None,
                "sha256": None,
                "how": (
                    "The CNMM authors publish neither code nor checkpoints, and we have not "
                    "trained a CNMM on ImageNet. Train one with model.compile(...) and "
                    "model.fit(...), save it with model.save_weights('cnmm.weights.h5'), and "
                    "pass that path: CNMM(..., weights='cnmm.weights.h5')."
                ),
            },
        },
    },
}

_TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")


def available(family=None):
    """Registered names that have a published file (for `family`, if given)."""
    names = []
    for name, entry in REGISTRY.items():
        for fam, info in entry["families"].items():
            if (family is None or fam == family) and info["url"]:
                names.append(name)
    return sorted(set(names))


def check_manifest(manifest):
    """Check `weights/manifest.json` (parsed) against `REGISTRY`.

    Every registered file (a name and family with a URL) must be listed in
    `manifest["published"]` with the same URL and SHA-256 and the numbers we
    measured for it (`measured`: a non-empty list, each with the `script` and
    `commit` that produced it), and the manifest must list nothing else.

    Raises:
        ValueError: naming every disagreement.
    """
    registered = {(name, family): info for name, entry in REGISTRY.items()
                  for family, info in entry["families"].items() if info["url"]}
    listed = {(e.get("name"), e.get("family")): e for e in manifest.get("published", [])}
    problems = [f"{name!r} ({family}) is registered but not in the manifest"
                for name, family in sorted(set(registered) - set(listed))]
    problems += [f"{name!r} ({family}) is in the manifest but has no registered file"
                 for name, family in sorted(set(listed) - set(registered), key=str)]
    for key in sorted(set(registered) & set(listed)):
        info, entry = registered[key], listed[key]
        for field in ("url", "sha256"):
            if entry.get(field) != info[field]:
                problems.append(f"{key[0]!r} ({key[1]}): {field} differs from REGISTRY")
        measured = entry.get("measured") or []
        if not measured or not all(m.get("script") and m.get("commit") for m in measured):
            problems.append(f"{key[0]!r} ({key[1]}): no measured numbers with script and commit")
    if problems:
        raise ValueError("weights/manifest.json and REGISTRY disagree: " + "; ".join(problems))


def resolve(name, family):
    """Download (or find in the cache) the registered checkpoint `name`.

    Returns:
        The local path of the verified file.
    """
    entry = REGISTRY.get(name, {}).get("families", {}).get(family)
    if entry is None:
        raise ValueError(
            f"Unknown weights {name!r} for {family}. Pass None, a path to a checkpoint, or one "
            f"of the published names: {available(family) or 'none yet'}."
        )
    if not entry["url"]:
        raise ValueError(
            f"No checkpoint is published under {name!r} for {family} yet (published: "
            f"{available(family) or 'none'}). {entry['how']}"
        )
    fname = entry["url"].rsplit("/", 1)[-1]
    try:
        return keras.utils.get_file(
            fname, origin=entry["url"], file_hash=entry["sha256"], hash_algorithm="sha256",
            cache_subdir=os.path.join("models", "adaptive_zoo"),
        )
    except Exception as error:
        path = os.path.join(keras.config.keras_home() if hasattr(keras.config, "keras_home")
                            else os.path.expanduser("~/.keras"), "models", "adaptive_zoo", fname)
        if os.path.exists(path):
            os.remove(path)
        raise ValueError(
            f"Could not get a verified copy of weights {name!r} ({entry['url']}): {error}"
        ) from error


def load_weights(model, weights, family):
    """Load `weights` (None, a registered name, or a path) into `model`."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, a name or a path; got {type(weights).__name__}.")
    path = os.fspath(weights)
    if not os.path.exists(path):
        if os.sep in path or path.endswith((".h5", ".keras") + _TORCH_SUFFIXES):
            raise ValueError(f"No checkpoint file at {path!r}.")
        path = resolve(path, family)
    if path.endswith(".keras"):
        raise ValueError(
            f"{path!r} is a whole saved model: load it with keras.saving.load_model(path)."
        )
    if path.endswith(_TORCH_SUFFIXES):
        from adaptive_zoo import convert

        convert.load_authors_checkpoint(model, path, kind=family)
        return
    if path.endswith(".h5"):
        found = _h5_tensors(path)
        mismatch = _mismatch(found, _shapes(model.weights))
        skip, classes = _h5_plan(model, found) if mismatch else ([], None)
        if skip is None:
            raise ValueError(f"The weights in {path!r} do not fit this {family} configuration: {mismatch}")
        try:
            model.load_weights(path, objects_to_skip=skip or None)
        except Exception as error:
            raise ValueError(f"Could not load {path!r} into this {family} model: {error}") from error
        if classes is not None:
            warn_fresh_classifiers(model, path, classes)
        return
    raise ValueError(
        f"Unrecognized checkpoint {path!r}: expected .weights.h5 (Keras) or .pth/.pth.tar "
        "(the authors' PyTorch checkpoints)."
    )


def warn_fresh_classifiers(model, source, classes):
    """Warn that `model`'s classifier layers were not loaded from `source`,
    a checkpoint trained for `classes` classes."""
    names = ", ".join(layer.path for layer in model.classifier_layers())
    warnings.warn(
        f"{source!r} was trained for {classes} classes, this model has num_classes="
        f"{model.num_classes}: every weight is loaded except those of the classifier "
        f"layers ({names}), which keep their fresh initialization. Fine-tune the model "
        "(model.fit) before using its predictions.",
        stacklevel=3,
    )


def _h5_tensors(path):
    """`(name, shape)` of every tensor in a Keras weights file.

    Raises:
        ValueError: if the file cannot be read as a Keras weights file
            (corrupted, truncated, or another kind of file).
    """
    import h5py

    found = []
    try:
        with h5py.File(path, "r") as f:
            if "layers" not in f and "vars" not in f:
                raise ValueError("it holds no Keras weights")

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                    found.append((name, tuple(obj.shape)))

            f.visititems(visit)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path!r} is not a readable Keras .weights.h5 file (corrupted, truncated or "
            f"another kind of file): {error}"
        ) from error
    return found


def _shapes(variables):
    return [(v.path, tuple(int(d) for d in v.shape)) for v in variables]


def _mismatch(found, ours):
    """How a file's tensors `found` differ from the model's `ours` (naming
    those of each side that the other lacks, by shape), or None if they fit."""
    file_only = _unmatched(found, ours)
    model_only = _unmatched(ours, found)
    if not (file_only or model_only):
        return None
    return (
        f"the file holds {len(found)} tensors, the model {len(ours)}; "
        f"only in the file: {_listed(file_only)}; only in the model: {_listed(model_only)}"
    )


def _h5_plan(model, found):
    """How to load a Keras weights file whose tensors `found` do not all fit
    `model`: `(skip, classes)`, the model's layers to leave as they are and,
    where the classifiers are among them, the file's number of classes (else
    None); `(None, None)` if the file does not fit.

    - Training-only layers (`model.training_only_layers`: DMNN's category
      heads, dropped after training) may be in the file only (not loaded)
      or in the model only (left fresh).
    - Classifiers (`model.classifier_layers()`) may differ in their number
      of outputs only: then all of them are left fresh.
    """
    training_only = list(getattr(model, "training_only_layers", []))
    groups = tuple(getattr(model, "_h5_training_only_groups", ()))
    file_training = [t for t in found if groups and t[0].startswith(groups)]
    found = [t for t in found if not (groups and t[0].startswith(groups))]
    aside = {id(v) for layer in training_only for v in layer.weights}
    skip = training_only if _mismatch(file_training, _shapes(
        [v for v in model.weights if id(v) in aside])) else []
    if not _mismatch(found, _shapes([v for v in model.weights if id(v) not in aside])):
        return skip, None
    heads = {id(v) for layer in model.classifier_layers() for v in layer.weights}
    rest = _shapes([v for v in model.weights if id(v) not in heads and id(v) not in aside])
    head_shapes = _shapes([v for v in model.weights if id(v) in heads and id(v) not in aside])
    left = _unmatched(found, rest)
    if _unmatched(rest, found) or sorted(shape[:-1] for _, shape in left) != sorted(
            shape[:-1] for _, shape in head_shapes):
        return None, None
    kernel = tuple(model.classifier_layers()[0].kernel.shape)
    classes = next((shape[-1] for _, shape in left if shape[:-1] == kernel[:-1]),
                   "another number of")
    return model.classifier_layers(), classes


def _unmatched(named_shapes, others):
    """The (name, shape) pairs of `named_shapes` left over once each shape of
    `others` has been matched to one of them."""
    available = collections.Counter(shape for _, shape in others)
    left = []
    for name, shape in named_shapes:
        if available[shape]:
            available[shape] -= 1
        else:
            left.append((name, shape))
    return left


def _listed(named_shapes, limit=6):
    if not named_shapes:
        return "none"
    text = ", ".join(f"{name} {shape}" for name, shape in named_shapes[:limit])
    more = len(named_shapes) - limit
    return text + (f" and {more} more" if more > 0 else "")
