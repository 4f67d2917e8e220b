"""The authors' RANet (yangle15/RANet-pytorch): flags and tensor names."""

from adaptive_zoo.convert.mapping import (
    bn_entries, bool_flag, conv_bn_entries, conv_entries, dash_list, exit_head_entries, int_flag,
)
from adaptive_zoo.layers.multi_scale_dense import RANetBlock, RANetFusionBlock

# The authors' argument names that shape the network, and their defaults
# (their args.py).
ARCH_FLAGS = {
    "data": None, "nBlocks": 2, "block_step": 2, "stepmode": "even", "step": 4,
    "scale_list": "1-2-3", "nChannels": 16, "growthRate": 6, "grFactor": "4-2-1",
    "bnFactor": "4-2-1", "compress_factor": 0.25, "reduction": 0.5, "bnAfter": True,
}
# Flags that do not change the network (training, bookkeeping, derived values
# that are checked against the rest).
OTHER_FLAGS = {"arch", "nScales", "num_classes", "num_exits", "seed", "save", "epochs",
               "batch_size", "lr", "momentum", "weight_decay", "optimizer", "print_freq",
               "workers", "use_valid", "data_root", "evalmode", "evaluate_from", "resume", "gpu",
               "start_epoch", "lr_type", "decay_rate", "splits"}
_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet": 1000}


def model_kwargs(config):
    """Our `RANet` arguments for the authors' flags.

    Raises:
        ValueError: naming unknown flags, and flags that contradict each other
            (`nScales`, `num_classes`, `num_exits`, `arch` against the rest).
    """
    unknown = sorted(set(config) - set(ARCH_FLAGS) - OTHER_FLAGS)
    if unknown:
        raise ValueError(
            f"Unknown RANet flags {unknown}; the authors' architecture flags are "
            f"{sorted(ARCH_FLAGS)}."
        )
    flags = {k: config.get(k, v) for k, v in ARCH_FLAGS.items()}
    data = flags["data"]
    if data is None:
        raise ValueError("The RANet config needs 'data' (cifar10, cifar100 or ImageNet).")
    if data not in _CLASSES:
        raise ValueError(f"data must be cifar10, cifar100 or ImageNet, got {data!r}.")
    if "arch" in config and config["arch"] != "RANet":
        raise ValueError(f"arch={config['arch']!r} is not a RANet configuration.")
    scales = dash_list(flags["scale_list"], "scale_list")
    gr, bn = dash_list(flags["grFactor"], "grFactor"), dash_list(flags["bnFactor"], "bnFactor")
    if not len(scales) == len(gr) == len(bn):
        raise ValueError(
            f"scale_list {flags['scale_list']!r}, grFactor {flags['grFactor']!r} and bnFactor "
            f"{flags['bnFactor']!r} must have one entry per sub-network."
        )
    if "nScales" in config and int_flag(config["nScales"], "nScales") != len(gr):
        raise ValueError(f"nScales={config['nScales']} disagrees with grFactor {flags['grFactor']!r}.")
    # The authors size the classifiers from `data`, not from num_classes.
    classes = _CLASSES[data]
    if "num_classes" in config and int_flag(config["num_classes"], "num_classes") != classes:
        raise ValueError(f"num_classes={config['num_classes']} disagrees with data={data!r}.")
    if not bool_flag(flags["bnAfter"], "bnAfter"):
        raise ValueError("bnAfter=False: the authors' RANet never builds that variant.")
    n_blocks, block_step = int_flag(flags["nBlocks"], "nBlocks"), int_flag(flags["block_step"], "block_step")
    if "num_exits" in config:
        expected = n_blocks + block_step * (len(scales) - 1)
        if int_flag(config["num_exits"], "num_exits") != expected:
            raise ValueError(
                f"num_exits={config['num_exits']} disagrees with nBlocks={n_blocks}, "
                f"block_step={block_step} and {len(scales)} scales ({expected} exits)."
            )
    imagenet = data == "ImageNet"
    return dict(
        n_blocks=n_blocks, block_step=block_step, step_mode=flags["stepmode"],
        step=int_flag(flags["step"], "step"), scale_list=scales,
        n_channels=int_flag(flags["nChannels"], "nChannels"),
        growth_rate=int_flag(flags["growthRate"], "growthRate"), gr_factor=gr, bn_factor=bn,
        compress_factor=float(flags["compress_factor"]), reduction=float(flags["reduction"]),
        bottleneck=True, imagenet_stem=imagenet, head_width=None if imagenet else 128,
        num_classes=classes, input_shape=(224, 224, 3) if imagenet else (32, 32, 3),
    )


def _conv_bn(prefix, conv):
    """The authors' ConvBN with its bottleneck: net.0/1 and net.3/4."""
    return {
        **conv_bn_entries(f"{prefix}.net.0", f"{prefix}.net.1", conv.bottleneck),
        **conv_bn_entries(f"{prefix}.net.3", f"{prefix}.net.4", conv.conv),
    }


def _basic(prefix, block):
    """The authors' ConvBasic: net.0 conv, net.1 BN."""
    return conv_bn_entries(f"{prefix}.net.0", f"{prefix}.net.1", block)


def entries(model):
    """{torch_name: (variable, transform)} for every tensor of `model`."""
    result = {}
    for i, conv in enumerate(model.stem.convs):
        prefix = f"FirstLayer.layers.{i}"
        if i == 0 and model.stem.imagenet_stem:
            result.update(conv_entries(f"{prefix}.0", conv.conv))
            result.update(bn_entries(f"{prefix}.1", conv.bn))
        else:
            result.update(_basic(prefix, conv))
    for ii, flow in enumerate(model.flows):
        for b, block in enumerate(flow):
            prefix = f"scale_flows.{ii}.{b}"
            if isinstance(block, RANetFusionBlock):
                for j, (up, own) in enumerate(zip(block.up_convs, block.own_convs)):
                    result.update(_conv_bn(f"{prefix}.layers.{j}.conv_up", up))
                    result.update(_conv_bn(f"{prefix}.layers.{j}.conv_normal", own))
                result.update(_basic(f"{prefix}.conv_last", block.last))
            elif isinstance(block, RANetBlock):
                for j, conv in enumerate(block.convs):
                    result.update(_conv_bn(f"{prefix}.layers.{j}.conv_normal", conv))
            else:
                raise TypeError(f"Unexpected layer {type(block).__name__} in a RANet flow.")
            if block.trans is not None:
                result.update(_basic(f"{prefix}.trans", block.trans))
    for k, head in enumerate(model.heads):
        result.update(exit_head_entries(f"classifier.{k}", head))
    return result
