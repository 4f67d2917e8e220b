"""Training losses of the zoo's gated networks (DMNN).

DMNN's resource-constrained loss (Su et al., 2019; the execution-rate term is
ConvNet-AIG's target-rate loss):

- `execution_rate_loss`: mean over gated blocks `l` and their sub-blocks `i`
  of `(rate_li - t)^2`, `rate_li` the batch execution rate of sub-block `i`
  of block `l` (per sub-block rather than per block: a per-block rate of
  `t` is met by switching some sub-blocks always on and the others always
  off, which makes the network static; per sub-block, each one must run for
  a fraction `t` of the images, so the decisions depend on the image);
- `flops_loss`: `(executed / full - t)^2` over the gated (skippable) FLOPs,
  so it agrees with the rate term (the always-run parts do not move it);
- `category_loss`: cross-entropy of a category head on each controller's
  state, against a class -> category mapping, weighted per stage
  (1e-4, 1e-3, 1e-2, 1e-1 for the 4 stages of a ResNet).

Every function takes tensors (`keras.ops` only), so it works inside
`model.fit` on every backend.
"""

import numpy as np
from keras import ops

from adaptive_zoo.checks import whole_valued

__all__ = [
    "CATEGORY_STAGE_WEIGHTS",
    "CATEGORY_MAPS",
    "CIFAR100_COARSE_LABELS",
    "FASHION_MNIST_CATEGORIES",
    "category_loss",
    "execution_rate_loss",
    "flops_loss",
    "validate_category_map",
]

CATEGORY_STAGE_WEIGHTS = (1e-4, 1e-3, 1e-2, 1e-1)

# CIFAR-100 fine label -> one of its 20 coarse labels (superclasses).
CIFAR100_COARSE_LABELS = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

# Fashion-MNIST class -> one of 5 categories: 0 tops (T-shirt, pullover, coat,
# shirt), 1 trousers, 2 dresses, 3 footwear (sandal, sneaker, ankle boot),
# 4 bags. (Our grouping: the dataset has no official superclasses.)
FASHION_MNIST_CATEGORIES = (0, 1, 0, 2, 0, 3, 0, 3, 4, 3)

# The mappings `category_map=` accepts by name.
CATEGORY_MAPS = {
    "cifar100": CIFAR100_COARSE_LABELS,
    "fashion_mnist": FASHION_MNIST_CATEGORIES,
}


def validate_category_map(category_map, num_classes):
    """A class -> category mapping as a list of ints, or a clear `ValueError`.

    Args:
        category_map: a name in `CATEGORY_MAPS` (`"cifar100"`: its 20
            coarse labels; `"fashion_mnist"`: 5 groups of clothing), a
            sequence of one category index per class, or a dict
            `{class: category}`.
        num_classes: number of classes it must cover.

    Returns:
        `(mapping, num_categories)`: a list of `num_classes` ints and the
        number of categories.
    """
    if isinstance(category_map, str):
        if category_map.lower() not in CATEGORY_MAPS:
            raise ValueError(
                f"Unknown category_map {category_map!r}: pass one of {sorted(CATEGORY_MAPS)} "
                "or one category per class."
            )
        category_map = CATEGORY_MAPS[category_map.lower()]
    if isinstance(category_map, dict):
        missing = [c for c in range(num_classes) if c not in category_map]
        if missing:
            raise ValueError(
                f"category_map must give a category for every class 0..{num_classes - 1}; "
                f"missing classes {missing[:10]}{'...' if len(missing) > 10 else ''}."
            )
        category_map = [category_map[c] for c in range(num_classes)]
    ids = np.asarray(category_map).reshape(-1)
    if not (ids.dtype.kind in "iu" or ids.dtype.kind == "f" and whole_valued(ids)):  # 0.5 was read as 0
        raise ValueError(
            f"category_map gives whole-number category ids, one per class; got {ids[:10].tolist()}."
        )
    mapping = [int(c) for c in ids]
    if len(mapping) != num_classes:
        raise ValueError(
            f"category_map must give one category per class: the model has {num_classes} "
            f"classes and the mapping covers {len(mapping)}."
        )
    if min(mapping) < 0:
        raise ValueError(f"category indices must be >= 0, got {min(mapping)}.")
    return mapping, max(mapping) + 1


def execution_rate_loss(gates, target_rate):
    """Mean over blocks and sub-blocks of `(batch execution rate - target)^2`.

    Args:
        gates: list of `(batch, N)` gate values (straight-through samples).
        target_rate: the target execution rate `t`.

    Returns:
        A scalar tensor.
    """
    # In float32 whatever the compute dtype (mixed precision), as Keras' losses.
    terms = [ops.mean(ops.square(ops.mean(ops.cast(g, "float32"), axis=0) - target_rate)) for g in gates]
    return ops.mean(ops.stack(terms))


def executed_flops(gates, sub_block_flops):
    """Per-image executed gated FLOPs, `(batch,)`, differentiable in `gates`."""
    total = 0.0
    for g, flops in zip(gates, sub_block_flops):
        weights = ops.convert_to_tensor(np.asarray(flops, dtype="float32"))
        total = total + ops.sum(ops.cast(g, "float32") * weights, axis=-1)
    return total


def flops_loss(gates, sub_block_flops, target_rate):
    """`(batch-mean executed gated FLOPs / full gated FLOPs - target)^2`.

    Args:
        gates: list of `(batch, N)` gate values.
        sub_block_flops: per block, the FLOPs of each of its sub-blocks.
        target_rate: the target `t`.

    Returns:
        A scalar tensor.
    """
    full = float(sum(sum(f) for f in sub_block_flops))
    ratio = ops.mean(executed_flops(gates, sub_block_flops)) / full
    return ops.square(ratio - target_rate)


def category_loss(category_logits, categories, weights):
    """Weighted sum of the category heads' cross-entropies.

    Args:
        category_logits: list of `(batch, num_categories)` logits, one per
            controller.
        categories: `(batch,)` integer category of each image.
        weights: one weight per controller (its stage's weight).

    Returns:
        A scalar tensor.
    """
    total = 0.0
    for logits, weight in zip(category_logits, weights):
        ce = ops.sparse_categorical_crossentropy(categories, ops.cast(logits, "float32"), from_logits=True)
        total = total + weight * ops.mean(ce)
    return total
