"""Model families, one module each."""

from adaptive_zoo.models.catalog import create_model, describe_model, list_models
from adaptive_zoo.models.cnmm import CNMM, CNMMCIFAR, CNMMTiny
from adaptive_zoo.models.msdnet import (
    MSDNet,
    MSDNetCIFARAnytime,
    MSDNetCIFARBudgeted,
    MSDNetImageNet,
    MSDNetTiny,
)
from adaptive_zoo.models.multi_exit import MultiExitModel
from adaptive_zoo.models.ranet import (
    RANet,
    RANetCIFARAnytime,
    RANetCIFARBudgeted,
    RANetImageNet,
)
from adaptive_zoo.models.dmnn import (
    DMNN,
    DMNN50,
    DMNN50CIFAR,
    DMNN101,
    DMNN101CIFAR,
    DMNNMobileNetV2,
    DMNNMobileNetV2CIFAR,
    DMNNResNet,
)
