"""The authors' PyTorch checkpoints -> our Keras models.

`from_authors(kind, config, state_dict)` builds our model for the authors'
command-line flags and loads their tensors; torch is needed only to read a
`.pth`/`.pth.tar` file (loaded with `weights_only=True`).
"""

import collections.abc
import importlib
import os

import numpy as np

from adaptive_zoo import weights
from adaptive_zoo.convert import mapping

__all__ = [
    "KINDS", "from_authors", "guess_kind", "load_authors_checkpoint", "load_state_dict", "read_checkpoint",
]

# kind -> (converter module, model class path)
KINDS = {
    "msdnet": ("adaptive_zoo.convert.msdnet", "adaptive_zoo.models.msdnet:MSDNet"),
    "ranet": ("adaptive_zoo.convert.ranet", "adaptive_zoo.models.ranet:RANet"),
}


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; known: {sorted(KINDS)}.")
    module_name, cls_path = KINDS[kind]
    module = importlib.import_module(module_name)
    cls_module, cls_name = cls_path.split(":")
    return module, getattr(importlib.import_module(cls_module), cls_name)


def read_checkpoint(path):
    """A state dict of NumPy arrays from an authors' checkpoint file.

    Accepts a bare state dict or the authors' training checkpoint (a dict with
    a `state_dict` key); strips DataParallel's `module.` prefixes.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch (pip install torch); or pass the state "
            "dict as a mapping of names to NumPy arrays."
        ) from error
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint: {error}") from error
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} holds a {type(data).__name__}, not a state dict.")
    result = {}
    for name, value in data.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        result[name] = np.asarray(value)
    return result


# Top-level module names that tell the authors' checkpoints apart.
_SIGNATURES = {"msdnet": {"blocks"}, "ranet": {"scale_flows", "FirstLayer"}}


def guess_kind(state_dict):
    """The family an authors' state dict comes from, or None."""
    roots = {name.removeprefix("module.").split(".")[0] for name in state_dict}
    for kind, signature in _SIGNATURES.items():
        if signature & roots:
            return kind
    return None


def load_state_dict(model, state_dict, kind):
    """Assign an authors' state dict (names -> arrays) to our `model`.

    A state dict trained for another number of classes than the model's
    `num_classes` loads everything but the classifiers
    (`model.classifier_layers()`), which keep their fresh initialization.

    Returns:
        `None` if every tensor was loaded; else (the classifiers left fresh)
        the state dict's number of classes.

    Raises:
        ValueError: for a checkpoint of another family (named), or one of
            another configuration (naming the tensors that disagree).
    """
    module, _ = _kind(kind)
    found = guess_kind(state_dict)
    if found is not None and found != kind:
        raise ValueError(
            f"This is a {found} checkpoint (its tensors are named like the authors' {found}); "
            f"the model is a {kind}. Build the matching model, e.g. "
            f"adaptive_zoo.convert.from_authors({found!r}, their_config, checkpoint)."
        )
    heads = [v for layer in model.classifier_layers() for v in layer.weights]
    entries = module.entries(model)
    left = mapping.assign(entries, state_dict, what=f"{kind} state dict", may_differ=heads)
    if not left:
        return None
    kernel = model.classifier_layers()[0].kernel
    return next((shape[-1] for name, shape in left.items() if entries[name][0] is kernel),
                "another number of")


def load_authors_checkpoint(model, path, kind):
    """Load the authors' `.pth`/`.pth.tar` file at `path` into `model`."""
    classes = load_state_dict(model, read_checkpoint(path), kind)
    if classes is not None:
        weights.warn_fresh_classifiers(model, path, classes)


def from_authors(kind, config, state_dict=None):
    """Our Keras model for the authors' configuration, carrying their weights.

    Args:
        kind: `"msdnet"` or `"ranet"`.
        config: the authors' arguments as a dict (names as in their
            `args.py`, e.g. `{"data": "cifar100", "nBlocks": 7, ...}`).
        state_dict: `None` (random initialization), a mapping of their tensor
            names to arrays, or a path to their `.pth`/`.pth.tar` checkpoint.

    Returns:
        The Keras model.

    Example:
    ```python
    fixture = np.load("msdnet_cifar100_even7.npz")
    meta = json.loads(str(fixture["meta_json"]))
    tensors = {k[len("state_dict/"):]: fixture[k] for k in fixture if k.startswith("state_dict/")}
    model = adaptive_zoo.convert.from_authors("msdnet", meta["config"], tensors)
    ```
    """
    module, cls = _kind(kind)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict of the authors' arguments, got {type(config).__name__}.")
    model = cls(**module.model_kwargs(config))
    if state_dict is None:
        return model
    if isinstance(state_dict, collections.abc.Mapping):  # a dict, or NumPy's .npz file
        state_dict = dict(state_dict)
    elif isinstance(state_dict, (str, os.PathLike)) or hasattr(state_dict, "read"):
        state_dict = read_checkpoint(state_dict)
    else:
        raise ValueError(
            "state_dict must be None, a mapping of the authors' tensor names to arrays, or the path "
            f"of their checkpoint; got {type(state_dict).__name__}."
        )
    load_state_dict(model, state_dict, kind)
    return model
