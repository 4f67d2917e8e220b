"""Assigning PyTorch tensors to Keras layers, with complete checking.

A family's converter lists `(torch_prefix, keras_layer)` pairs; this module
turns them into `{torch_name: (keras_variable, transform)}` and assigns a state
dict, naming every missing, unexpected or wrongly shaped tensor at once.
"""

import re

import numpy as np

from adaptive_zoo.checks import integer
from adaptive_zoo.layers.conv_bn import ConvBNAct

__all__ = [
    "assign", "bool_flag", "dash_list", "int_flag", "exit_head_entries", "conv_bn_entries",
    "conv_entries", "bn_entries", "dense_entries",
]

# Buffers PyTorch saves that have no Keras counterpart.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def int_flag(value, key):
    """One of the authors' integer flags as an `int`: an integer, or its
    decimal digits as their command line gives them; a `ValueError` naming
    the flag otherwise (2.5 is not read as 2)."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return integer(value, key)


def bool_flag(value, key):
    """One of the authors' boolean flags; a `ValueError` unless it is True or
    False (the string "False" would otherwise read as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key} must be True or False, got {value!r}.")
    return bool(value)


def dash_list(value, key):
    """The authors' `'1-2-4'` flags (or a list) as a list of ints."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split("-")]
        except ValueError:
            raise ValueError(f"{key} must look like '1-2-4', got {value!r}.") from None
    return [int_flag(v, f"each entry of {key}") for v in value]


def _oihw_to_hwio(w):
    return np.transpose(w, (2, 3, 1, 0))


def conv_entries(prefix, conv):
    entries = {f"{prefix}.weight": (conv.kernel, _oihw_to_hwio)}
    if conv.use_bias:
        entries[f"{prefix}.bias"] = (conv.bias, None)
    return entries


def bn_entries(prefix, bn):
    return {
        f"{prefix}.weight": (bn.gamma, None),
        f"{prefix}.bias": (bn.beta, None),
        f"{prefix}.running_mean": (bn.moving_mean, None),
        f"{prefix}.running_var": (bn.moving_variance, None),
    }


def dense_entries(prefix, dense):
    return {
        f"{prefix}.weight": (dense.kernel, np.transpose),
        f"{prefix}.bias": (dense.bias, None),
    }


def conv_bn_entries(conv_prefix, bn_prefix, block):
    """Entries of a `ConvBNAct` whose conv and BN sit at the given names."""
    if not isinstance(block, ConvBNAct):
        raise TypeError(f"Expected ConvBNAct, got {type(block).__name__}.")
    return {**conv_entries(conv_prefix, block.conv), **bn_entries(bn_prefix, block.bn)}


def exit_head_entries(prefix, head):
    """Entries of a `MultiScaleDenseExit` under the authors' `ClassifierModule`
    names (MSDNet and RANet name their exits the same way)."""
    return {
        **conv_bn_entries(f"{prefix}.m.0.net.0", f"{prefix}.m.0.net.1", head.conv1),
        **conv_bn_entries(f"{prefix}.m.1.net.0", f"{prefix}.m.1.net.1", head.conv2),
        **dense_entries(f"{prefix}.linear", head.dense),
    }


def _strip(name):
    for prefix in ("module.",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def assign(entries, state_dict, what="checkpoint", may_differ=()):
    """Assign `state_dict` ({torch_name: array}) through `entries`.

    Args:
        entries: `{torch_name: (variable, transform)}`.
        state_dict: `{torch_name: array}`.
        what: how error messages name the state dict.
        may_differ: variables (the classifiers') that may differ from the
            state dict's in their last dimension only (another number of
            classes): those are left as they are, if every other tensor fits.

    Returns:
        `{torch_name: shape}` (in our layout) of the state dict's tensors
        left unassigned under `may_differ`; empty when everything was
        assigned.

    Raises:
        ValueError: naming every missing, unexpected and mis-shaped tensor;
            nothing is assigned unless everything fits.
    """
    tensors = {}
    for name, value in state_dict.items():
        name = _strip(name)
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        tensors[name] = value
    missing = sorted(set(entries) - set(tensors))
    extra = sorted(set(tensors) - set(entries))
    wrong, other_classes = [], {}
    values = {}
    allowed = {id(v) for v in may_differ}
    for name, (variable, transform) in entries.items():
        if name not in tensors:
            continue
        array = np.asarray(tensors[name], dtype="float32")
        if transform is not None:
            array = transform(array)
        if tuple(array.shape) != tuple(variable.shape):
            if id(variable) in allowed and array.shape[:-1] == tuple(variable.shape)[:-1]:
                other_classes[name] = tuple(array.shape)
                continue
            wrong.append(
                f"{name}: {tuple(np.shape(tensors[name]))} in the {what}, "
                f"expected {tuple(variable.shape)} (after layout change)"
            )
            continue
        values[name] = array
    if missing or extra or wrong:
        lines = []
        if missing:
            lines.append(f"missing ({len(missing)}): {', '.join(missing[:20])}"
                         + (" ..." if len(missing) > 20 else ""))
        if extra:
            lines.append(f"unexpected ({len(extra)}): {', '.join(extra[:20])}"
                         + (" ..." if len(extra) > 20 else ""))
        if wrong:
            lines.append(f"wrong shape ({len(wrong)}): " + "; ".join(wrong[:20])
                         + (" ..." if len(wrong) > 20 else ""))
        raise ValueError(
            f"The {what} does not match this model configuration:\n  " + "\n  ".join(lines)
        )
    if other_classes:  # every classifier stays fresh, none half-loaded
        values = {n: a for n, a in values.items() if id(entries[n][0]) not in allowed}
    for name, value in values.items():
        entries[name][0].assign(value)
    return other_classes
