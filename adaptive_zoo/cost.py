"""The cost convention of the whole zoo, and `profile(model)`.

One convention, the authors' (see PAPERS.md): a multiply-add is ONE operation.

- convolution: `C_in * C_out * k_h * k_w * H_out * W_out / groups`
- dense: `in * out + out`
- ReLU: one operation per output element
- pooling: `C * H_out * W_out * k * k`
- BatchNorm, concatenation, resizing: zero

Every layer of ours that does work has a `flops(input_shape)` method built from
the primitives below; a model's profile is the sum along the path it takes.
"""

import dataclasses

__all__ = [
    "Profile",
    "conv_flops",
    "conv_output_size",
    "count_params",
    "dense_flops",
    "pool_flops",
    "profile",
    "relu_flops",
]


def conv_output_size(size, kernel_size, strides, padding):
    """Spatial output size of a convolution or pooling window (PyTorch rule)."""
    return (size + 2 * padding - kernel_size) // strides + 1


def conv_flops(c_in, c_out, kernel_size, h_out, w_out, groups=1):
    """Multiply-adds of a 2D convolution (bias not counted, as the authors)."""
    return c_in * c_out * kernel_size * kernel_size * h_out * w_out // groups


def dense_flops(units_in, units_out, use_bias=True):
    """Multiply-adds of a dense layer, the bias adds counted once each."""
    return units_in * units_out + (units_out if use_bias else 0)


def relu_flops(h, w, c):
    """One operation per output element."""
    return h * w * c


def pool_flops(c, h_out, w_out, kernel_size):
    """Pooling: one operation per window element per output element."""
    return c * h_out * w_out * kernel_size * kernel_size


def count_params(model):
    """Parameters used at inference, counted the way the authors count them.

    Every weight except BatchNorm's moving statistics (BatchNorm's affine pair
    counts) and integer state such as random seeds; freezing a model does not
    change its count. Layers that a model lists in `training_only_layers`
    (auxiliary heads dropped after training) are excluded.
    """
    import keras

    excluded = set()
    for layer in getattr(model, "training_only_layers", ()):
        excluded.update(id(v) for v in layer.weights)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            excluded.update(id(v) for v in (layer.moving_mean, layer.moving_variance))
    total = 0
    for variable in model.weights:
        if id(variable) in excluded or "float" not in str(variable.dtype):
            continue
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        total += size
    return total


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a model costs.

    Attributes:
        flops: multiply-adds of the full model for one image (the authors'
            convention). For a multi-exit model, the cumulative cost of its
            last exit, every earlier head included.
        params: parameters used at inference (see `count_params`).
        exit_flops: for multi-exit models, the cumulative cost of each exit
            (everything executed before it, earlier heads included);
            `None` for single-exit models.

    Example:
    ```python
    p = adaptive_zoo.profile(adaptive_zoo.MSDNetTiny())
    p.flops, p.params, p.exit_flops
    print(p)   # MFLOPs, M params and MFLOPs per exit
    ```
    """

    flops: int
    params: int
    exit_flops: tuple = None

    def __str__(self):
        text = f"{self.flops / 1e6:.2f} MFLOPs, {self.params / 1e6:.3f} M params"
        if self.exit_flops:
            per_exit = ", ".join(f"{f / 1e6:.2f}" for f in self.exit_flops)
            text += f"; MFLOPs per exit: {per_exit}"
        return text


def profile(model):
    """Cost profile of an adaptive_zoo model.

    Args:
        model: a model of this package (it knows its own cost; see each
            family's `cost_profile`).

    Returns:
        A `Profile` with `flops`, `params` and, for multi-exit models,
        `exit_flops`.

    Example:
    ```python
    model = adaptive_zoo.MSDNetCIFARAnytime(num_classes=100)
    p = adaptive_zoo.profile(model)
    print(p.exit_flops[0] / 1e6)  # 15.14 MFLOPs, as the authors measured
    ```
    """
    if not hasattr(model, "cost_profile"):
        raise TypeError(
            f"profile() takes an adaptive_zoo model; {type(model).__name__} "
            "does not describe its cost (no `cost_profile` method)."
        )
    flops, exit_flops = model.cost_profile()
    return Profile(
        flops=int(flops),
        params=count_params(model),
        exit_flops=None if exit_flops is None else tuple(int(f) for f in exit_flops),
    )
