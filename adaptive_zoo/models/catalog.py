"""Every preset of the zoo by name: `list_models` and `create_model`.

A preset is one of the published configurations (or one of our small demo
nets) under a lower-case name, as timm names its models: the name maps to one
of this package's constructors and the arguments of that configuration, and
`create_model`'s keyword arguments (`num_classes`, `input_shape`, `weights`,
`sub_blocks`, ...) override them. The constructors stay the reference: the
catalog only names them.

Example:
```python
adaptive_zoo.list_models("dmnn*")     # ['dmnn101', 'dmnn101_cifar', 'dmnn50', ...]
adaptive_zoo.list_models(family="ranet")
model = adaptive_zoo.create_model("msdnet_cifar_anytime", num_classes=10)
```
"""

import collections
import difflib
import fnmatch

from adaptive_zoo.models import cnmm, dmnn, msdnet, ranet

__all__ = ["FAMILIES", "PRESETS", "Preset", "create_model", "describe_model", "list_models"]

FAMILIES = ("msdnet", "ranet", "dmnn", "cnmm")

Preset = collections.namedtuple("Preset", ["constructor", "arguments", "family", "description"])
Preset.__doc__ = """A named configuration: `constructor(**arguments)` builds it."""

PRESETS = {
    "msdnet_cifar_anytime": Preset(
        msdnet.MSDNetCIFARAnytime, {}, "msdnet",
        "MSDNet, CIFAR anytime prediction (even, step 2, base 4): 7 exits, 32x32, 100 classes"),
    "msdnet_cifar_budgeted": Preset(
        msdnet.MSDNetCIFARBudgeted, {}, "msdnet",
        "MSDNet, CIFAR budgeted batch classification (lin_grow, step 1, base 1): 5 exits, 32x32"),
    "msdnet_imagenet_step4": Preset(
        msdnet.MSDNetImageNet, {"step": 4}, "msdnet",
        "MSDNet, ImageNet, step = base = 4: 5 exits, 224x224, 1000 classes"),
    "msdnet_imagenet_step6": Preset(
        msdnet.MSDNetImageNet, {"step": 6}, "msdnet",
        "MSDNet, ImageNet, step = base = 6: 5 exits, 224x224, 1000 classes"),
    "msdnet_imagenet_step7": Preset(
        msdnet.MSDNetImageNet, {"step": 7}, "msdnet",
        "MSDNet, ImageNet, step = base = 7: 5 exits, 224x224, 1000 classes"),
    "msdnet_tiny": Preset(
        msdnet.MSDNetTiny, {}, "msdnet",
        "a small MSDNet for 16x16 grey images (our digits demo, not from the paper): 4 exits"),
    "ranet_cifar_anytime": Preset(
        ranet.RANetCIFARAnytime, {}, "ranet",
        "RANet, CIFAR anytime (scale list 1-2-3-3, step 4): 8 exits, 32x32, 100 classes"),
    "ranet_cifar_budgeted": Preset(
        ranet.RANetCIFARBudgeted, {}, "ranet",
        "RANet, CIFAR, the authors' other README model (lg, scale list 1-2-3): 6 exits, 32x32"),
    "ranet_imagenet": Preset(
        ranet.RANetImageNet, {"n_channels": 64}, "ranet",
        "RANet, ImageNet anytime, 64 channels (the paper's): 8 exits, 224x224, 1000 classes"),
    "ranet_imagenet_c32": Preset(
        ranet.RANetImageNet, {"n_channels": 32}, "ranet",
        "RANet, ImageNet, 32 channels (the authors' README command): 8 exits, 224x224"),
    "dmnn50": Preset(
        dmnn.DMNN50, {"sub_blocks": 2, "target_rate": 0.5}, "dmnn",
        "DMNN-50 (ResNet-50), N=2 sub-blocks, target rate 0.5: 224x224, 1000 classes"),
    "dmnn50_n4": Preset(
        dmnn.DMNN50, {"sub_blocks": 4, "target_rate": 0.7}, "dmnn",
        "DMNN-50 (ResNet-50), N=4 sub-blocks, target rate 0.7: 224x224, 1000 classes"),
    "dmnn101": Preset(
        dmnn.DMNN101, {"sub_blocks": 2, "target_rate": 0.5}, "dmnn",
        "DMNN-101 (ResNet-101), N=2 sub-blocks, target rate 0.5: 224x224, 1000 classes"),
    "dmnn_mobilenetv2": Preset(
        dmnn.DMNNMobileNetV2, {"sub_blocks": 2, "target_rate": 0.9}, "dmnn",
        "DMNN-MobileNetV2, N=2 sub-blocks, target rate 0.9: 224x224, 1000 classes"),
    "dmnn50_cifar": Preset(
        dmnn.DMNN50CIFAR, {"sub_blocks": 4, "target_rate": 0.7}, "dmnn",
        "DMNN-50 for 32x32 (3x3 stem, strides 2), N=4, target rate 0.7: the paper's CIFAR-100 model"),
    "dmnn101_cifar": Preset(
        dmnn.DMNN101CIFAR, {"sub_blocks": 2, "target_rate": 0.5}, "dmnn",
        "DMNN-101 for 32x32 (the stem of dmnn50_cifar), N=2, target rate 0.5: 100 classes"),
    "dmnn_mobilenetv2_cifar": Preset(
        dmnn.DMNNMobileNetV2CIFAR, {"sub_blocks": 2, "target_rate": 0.9}, "dmnn",
        "DMNN-MobileNetV2 for 32x32 (stride-1 stem and second stage), N=2, target rate 0.9"),
    "cnmm_cifar": Preset(
        cnmm.CNMMCIFAR, {}, "cnmm",
        "CNMM for 32x32 (our preset: 8 columns, 4 scales, widths 16 to 128): 10 classes"),
    "cnmm_tiny": Preset(
        cnmm.CNMMTiny, {}, "cnmm",
        "a small CNMM for 8x8 grey images (our digits demo): 4 columns, 3 scales"),
}


def list_models(pattern="*", family=None):
    """The names `create_model` takes, sorted.

    Args:
        pattern: a shell-style pattern (`fnmatch`: `*`, `?`, `[...]`) the
            names must match, case-insensitive; `"*"` (default): every name.
        family: `None` (every family) or one of `FAMILIES`.

    Returns:
        A sorted list of names.

    Example:
    ```python
    adaptive_zoo.list_models("*cifar*", family="msdnet")
    # ['msdnet_cifar_anytime', 'msdnet_cifar_budgeted']
    ```
    """
    if not isinstance(pattern, str):
        raise ValueError(f"list_models' pattern must be a string such as 'dmnn*'; got {pattern!r}.")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}: expected None or one of {', '.join(FAMILIES)}.")
    pattern = pattern.lower()
    return sorted(name for name, preset in PRESETS.items()
                  if fnmatch.fnmatchcase(name, pattern) and family in (None, preset.family))


def describe_model(name):
    """The `Preset` behind `name`: its constructor, arguments, family and a
    one-line description.

    Args:
        name: a name from `list_models()` (case-insensitive).

    Returns:
        A `Preset`.

    Example:
    ```python
    preset = adaptive_zoo.describe_model("msdnet_imagenet_step4")
    preset.arguments          # {'step': 4}, given to preset.constructor (MSDNetImageNet)
    print(preset.family, preset.description)
    ```
    """
    if not isinstance(name, str):
        raise ValueError(f"A model name is a string such as 'dmnn50'; got {name!r}.")
    preset = PRESETS.get(name.lower())
    if preset is None:
        close = difflib.get_close_matches(name.lower(), PRESETS, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown model name {name!r}.{hint} adaptive_zoo.list_models() lists the "
                         f"{len(PRESETS)} names.")
    return preset


def create_model(name, **kwargs):
    """The model the preset `name` names, built by its constructor.

    Args:
        name: a name from `list_models()` (case-insensitive).
        **kwargs: arguments of the constructor, over the preset's own:
            `num_classes`, `input_shape`, `weights` (`None`, a registered
            name, or a path), and each family's (`sub_blocks`, `target_rate`,
            `category_map`, ...).

    Returns:
        A Keras model, as the constructor returns it.

    Example:
    ```python
    model = adaptive_zoo.create_model("dmnn50_cifar", num_classes=10)
    logits = model(images, budget=0.5)
    ```
    """
    preset = describe_model(name)
    return preset.constructor(**{**preset.arguments, **kwargs})
