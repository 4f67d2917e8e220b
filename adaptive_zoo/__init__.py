"""adaptive_zoo: adaptive-inference CNNs for Keras 3."""

from adaptive_zoo import budget, convert, weights
from adaptive_zoo.budget import calibrate
from adaptive_zoo.cost import Profile, profile
from adaptive_zoo.layers import MultiScaleDenseExit
from adaptive_zoo.models import (
    MSDNet,
    MSDNetCIFARAnytime,
    MSDNetCIFARBudgeted,
    MSDNetImageNet,
    MSDNetTiny,
    MultiExitModel,
    RANet,
    RANetCIFARAnytime,
    RANetCIFARBudgeted,
    RANetImageNet,
)

__version__ = "0.1.0"
