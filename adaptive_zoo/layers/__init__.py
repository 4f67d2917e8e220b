"""The user-facing layers and their building blocks."""

from adaptive_zoo.layers.conv_bn import ConvBNAct
from adaptive_zoo.layers.multi_scale_dense import (
    MSDConv,
    MSDLayer,
    MSDStem,
    MSDTransition,
    MultiScaleDenseExit,
    RANetBlock,
    RANetFusionBlock,
    RANetStem,
    resize_bilinear_aligned,
)
from adaptive_zoo.layers.gumbel_gate import GumbelGate
from adaptive_zoo.layers.mixture_edge import MixtureEdge, mix_node
from adaptive_zoo.layers.sub_block_branch import (
    BottleneckSubBlock,
    InvertedResidualSubBlock,
    SubBlockBranch,
)
