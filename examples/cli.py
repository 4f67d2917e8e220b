"""Argument types shared by the example scripts' command lines."""

import argparse


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
