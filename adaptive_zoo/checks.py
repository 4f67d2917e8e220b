"""Argument checks shared by the zoo's layers, models and data helpers."""

import numpy as np

__all__ = ["integer", "is_whole_number", "positive_integer", "whole_valued"]


def is_whole_number(value):
    """Whether `value` is an integer, Python's or NumPy's, and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(value, name):
    """`value` as an `int`; a `ValueError` naming the argument `name` unless
    it is an integer (Python's or NumPy's; not a bool): 2.5 is not read as 2."""
    if not is_whole_number(value):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    return int(value)


def positive_integer(value, name):
    """`value` as an `int`; a `ValueError` naming the argument `name` unless
    it is a positive integer (Python's or NumPy's; not a bool)."""
    if not is_whole_number(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def whole_valued(values):
    """Whether every value of the floating-point array `values` is finite and
    a whole number (class ids or category ids given as floats: 3.0 is an id,
    0.5 and NaN are not)."""
    return bool(np.all(np.isfinite(values) & (values == np.round(values))))
