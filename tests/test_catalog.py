"""The catalog of presets: `list_models`, `describe_model`, `create_model`."""

import inspect

import numpy as np
import pytest

import adaptive_zoo
from adaptive_zoo.models import catalog


def test_every_preset_is_a_public_constructor_with_arguments_it_takes():
    # Checked without building: the ImageNet presets are large.
    for name, preset in catalog.PRESETS.items():
        assert name == name.lower(), name
        assert getattr(adaptive_zoo, preset.constructor.__name__) is preset.constructor, name
        inspect.signature(preset.constructor).bind(**preset.arguments)
        assert preset.family in catalog.FAMILIES, name
        assert preset.description, name
    families = {preset.family for preset in catalog.PRESETS.values()}
    assert families == set(catalog.FAMILIES)


def test_list_models_filters_by_pattern_and_family():
    everything = adaptive_zoo.list_models()
    assert everything == sorted(catalog.PRESETS)
    assert adaptive_zoo.list_models("*cifar*", family="msdnet") == [
        "msdnet_cifar_anytime", "msdnet_cifar_budgeted"]
    assert adaptive_zoo.list_models("MSDNET_IMAGENET_STEP?") == [
        "msdnet_imagenet_step4", "msdnet_imagenet_step6", "msdnet_imagenet_step7"]
    assert "dmnn50" in adaptive_zoo.list_models("dmnn*")
    assert all(catalog.PRESETS[n].family == "ranet" for n in adaptive_zoo.list_models(family="ranet"))
    assert adaptive_zoo.list_models("resnet*") == []


def _config(model):
    return {k: v for k, v in model.get_config().items() if k != "name"}


def test_create_model_builds_the_constructors_model_with_overrides():
    model = adaptive_zoo.create_model("msdnet_tiny", num_classes=3, n_blocks=3)
    reference = adaptive_zoo.MSDNetTiny(num_classes=3, n_blocks=3)
    assert _config(model) == _config(reference)
    assert model.num_exits == 3
    logits = model(np.zeros((2, 16, 16, 1), "float32"))
    assert tuple(logits.shape) == (2, 3)

    # The preset's own arguments reach the constructor, and kwargs win.
    cnmm = adaptive_zoo.create_model("CNMM_Tiny", num_classes=4)
    assert _config(cnmm) == _config(adaptive_zoo.CNMMTiny(num_classes=4))
    gated = adaptive_zoo.create_model("dmnn_mobilenetv2_cifar", num_classes=10, sub_blocks=1)
    assert (gated.sub_blocks, gated.target_rate, gated.num_classes) == (1, 0.9, 10)


def test_describe_model_names_the_configuration():
    preset = adaptive_zoo.describe_model("msdnet_imagenet_step6")
    assert preset.constructor is adaptive_zoo.MSDNetImageNet
    assert preset.arguments == {"step": 6}
    assert preset.family == "msdnet"


def test_unknown_names_and_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown model name 'msdnet_cifar'\. Did you mean "
                                         r"'msdnet_cifar_anytime'.*list_models"):
        adaptive_zoo.create_model("msdnet_cifar")
    with pytest.raises(ValueError, match="Unknown model name 'vgg16'. adaptive_zoo.list_models"):
        adaptive_zoo.create_model("vgg16")
    with pytest.raises(ValueError, match="model name is a string"):
        adaptive_zoo.create_model(adaptive_zoo.MSDNetTiny)
    with pytest.raises(ValueError, match="Unknown family 'resnet'"):
        adaptive_zoo.list_models(family="resnet")
    with pytest.raises(ValueError, match="pattern must be a string"):
        adaptive_zoo.list_models(["dmnn50"])
    # The constructor's own checks still apply.
    with pytest.raises(ValueError, match="step 4, 6 or 7"):
        adaptive_zoo.create_model("msdnet_imagenet_step4", step=5)
