"""Argument types shared by the example scripts' command lines."""

import argparse

from adaptive_zoo import budget as budget_lib


def positive_int(text):
    """An `argparse` type: an integer >= 1, else argparse's usage error
    naming the argument (`--epochs -1` otherwise reached Keras as a learning
    rate schedule with `decay_steps=-17`).

    Args:
        text: the argument as given.

    Returns:
        The integer.

    Example:
    ```python
    parser.add_argument("--epochs", type=cli.positive_int, default=12)
    ```
    """
    return _integer_at_least(text, 1, "a positive integer")


def non_negative_int(text):
    """`positive_int`, with 0 allowed (`benchmark.py --batches 0`: no stream)."""
    return _integer_at_least(text, 0, "an integer >= 0")


def _integer_at_least(text, low, what):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def budget(text):
    """An `argparse` type: one budget in (0, 1] (`adaptive_zoo.budget`'s
    rule), else argparse's usage error naming the argument.

    Args:
        text: the argument as given.

    Returns:
        The budget as a float.

    Example:
    ```python
    parser.add_argument("--budgets", type=cli.budget, nargs="+", default=[1.0, 0.5])
    ```
    """
    try:
        return budget_lib.validate_budget(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a budget in (0, 1], got {text!r}") from None


def budget_list(text):
    """An `argparse` type: budgets separated by commas, each as `budget`
    takes it (`train_tfds.py --budgets 0.5,abc` was read only after
    training, and failed there).

    Args:
        text: the argument as given, e.g. `"0.25,0.5,1.0"`.

    Returns:
        The list of budgets, in the order given.
    """
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"must be budgets separated by commas, got {text!r}")
    values = []
    for part in parts:
        try:
            values.append(budget(part))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"must be budgets in (0, 1] separated by commas, got {part!r} in {text!r}") from None
    return values


def weights_file(text):
    """An `argparse` type: a path ending in `.weights.h5`, the only name
    Keras' `save_weights` takes (`eval.py --save model.h5` otherwise failed
    after training, when the weights were saved).

    Args:
        text: the argument as given.

    Returns:
        The path, unchanged.
    """
    if not text.endswith(".weights.h5"):
        raise argparse.ArgumentTypeError(f"must be a path ending in .weights.h5, got {text!r}")
    return text
