"""Model families, one module each."""

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
