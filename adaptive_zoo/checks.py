"""Argument checks shared by the zoo's layers, models and data helpers."""

import numpy as np

__all__ = ["is_whole_number", "positive_integer"]


def is_whole_number(value):
    """Whether `value` is an integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_integer(value, name):
    """`value` as an `int`; a `ValueError` naming the argument `name` unless
    it is a positive integer (Python's or NumPy's; not a bool)."""
    if not is_whole_number(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
