"""What every model of the zoo shares (`models/base.py`): its input shape,
its classes and the base of its config, on each family."""

import keras
import numpy as np
import pytest

import adaptive_zoo as az

TINY_DMNN = dict(depths=(1, 2), base_width=8, sub_blocks=2, cifar_stem=True, input_shape=(8, 8, 1),
                 num_classes=5)

FAMILIES = {
    "msdnet": lambda **kw: az.MSDNetTiny(**{"num_classes": 5, **kw}),
    "dmnn": lambda **kw: az.DMNNResNet(**{**TINY_DMNN, **kw}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_input_shape_is_the_batch_shape_as_on_keras_applications(family):
    model = FAMILIES[family]()
    assert model.input_shape == (None,) + model.image_shape
    x = np.zeros((2,) + model.input_shape[1:], "float32")
    assert tuple(model(x).shape) == (2, 5)
    config = model.get_config()
    assert config["input_shape"] == list(model.image_shape) and config["num_classes"] == 5


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_a_bad_number_of_classes_is_named(family, num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        FAMILIES[family](num_classes=num_classes)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("input_shape", [(16, 16), (16, 0, 1), "16x16"])
def test_a_bad_input_shape_is_named(family, input_shape):
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        FAMILIES[family](input_shape=input_shape)
