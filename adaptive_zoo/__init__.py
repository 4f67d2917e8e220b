"""adaptive_zoo: adaptive-inference CNNs for Keras 3."""

from adaptive_zoo import budget, convert, data, losses, weights
from adaptive_zoo.budget import calibrate
from adaptive_zoo.cost import Profile, profile
from adaptive_zoo.fast_path import tune_cpu_allocator
from adaptive_zoo.layers import GumbelGate, MixtureEdge, MultiScaleDenseExit, SubBlockBranch
from adaptive_zoo.models import (
    CNMM,
    CNMMCIFAR,
    CNMMTiny,
    DMNN,
    DMNN50,
    DMNN50CIFAR,
    DMNN101,
    DMNN101CIFAR,
    MSDNet,
    MSDNetCIFARAnytime,
    MSDNetCIFARBudgeted,
    MSDNetImageNet,
    MSDNetTiny,
    DMNNMobileNetV2,
    DMNNMobileNetV2CIFAR,
    DMNNResNet,
    MultiExitModel,
    RANet,
    RANetCIFARAnytime,
    RANetCIFARBudgeted,
    RANetImageNet,
    create_model,
    describe_model,
    list_models,
)

__version__ = "0.1.0"
