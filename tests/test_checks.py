"""The argument checks shared by layers, models and data."""

import numpy as np
import pytest

from adaptive_zoo.checks import integer, is_whole_number, positive_integer, whole_valued


@pytest.mark.parametrize("value, whole", [
    (3, True), (np.int64(3), True), (0, True), (-2, True),
    (3.0, False), (2.5, False), ("3", False), (True, False), (np.bool_(True), False), (None, False),
])
def test_whole_numbers_are_python_or_numpy_integers_not_bools(value, whole):
    assert is_whole_number(value) is whole


@pytest.mark.parametrize("bad", [0, -1, 2.5, 3.0, "3", True, None])
def test_positive_integer_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"units must be a positive integer, got "):
        positive_integer(bad, "units")


def test_positive_integer_returns_a_python_int():
    value = positive_integer(np.int32(4), "units")
    assert value == 4 and type(value) is int


def test_integer_takes_any_sign_but_no_fraction():
    assert integer(0, "step") == 0 and integer(np.int64(-2), "step") == -2
    for bad in (2.5, 3.0, "3", True):
        with pytest.raises(ValueError, match=r"step must be an integer, got "):
            integer(bad, "step")


def test_whole_valued_floats():
    assert whole_valued(np.array([0.0, 3.0, -2.0]))
    for values in ([0.5], [np.nan], [np.inf], [1.0, 2.000001]):
        assert not whole_valued(np.array(values))
