"""adaptive_zoo: adaptive-inference CNNs for Keras 3."""

from adaptive_zoo import budget, convert, weights
from adaptive_zoo.cost import Profile, profile
from adaptive_zoo.layers import MultiScaleDenseExit
from adaptive_zoo.models import (
    MSDNet,
    MSDNetCIFARAnytime,
    MSDNetCIFARBudgeted,
    MSDNetImageNet,
    MultiExitModel,
)

__version__ = "0.1.0"
from adaptive_zoo import losses
from adaptive_zoo.layers import GumbelGate, SubBlockBranch
from adaptive_zoo.models import (
    DMNN,
    DMNN50,
    DMNN50CIFAR,
    DMNN101,
    DMNN101CIFAR,
    DMNNMobileNetV2,
    DMNNMobileNetV2CIFAR,
    DMNNResNet,
)
