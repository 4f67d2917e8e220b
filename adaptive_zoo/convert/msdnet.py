"""The authors' MSDNet (kalviny/MSDNet-PyTorch): flags and tensor names."""

from adaptive_zoo.convert.mapping import (
    bn_entries, bool_flag, conv_bn_entries, conv_entries, dash_list, exit_head_entries, int_flag,
)
from adaptive_zoo.layers.multi_scale_dense import MSDLayer, MSDStem, MSDTransition

# The authors' argument names that shape the network, and their defaults.
ARCH_FLAGS = {
    "nBlocks": None, "stepmode": None, "step": 1, "base": 4, "nChannels": 32, "growthRate": 6,
    "grFactor": "1-2-4", "bnFactor": "1-2-4", "bottleneck": True, "reduction": 0.5,
    "prune": "max", "data": None,
}
# Flags that do not change the network (training and bookkeeping).
OTHER_FLAGS = {"arch", "nScales", "num_classes", "seed", "save", "epochs", "batch_size", "lr",
               "momentum", "weight_decay", "optimizer", "print_freq", "workers", "use_valid",
               "data_root", "evalmode", "evaluate_from", "resume", "gpu", "start_epoch",
               "lr_type", "decay_rate", "splits"}


def model_kwargs(config):
    """Our `MSDNet` arguments for the authors' flags."""
    unknown = sorted(set(config) - set(ARCH_FLAGS) - OTHER_FLAGS)
    if unknown:
        raise ValueError(
            f"Unknown MSDNet flags {unknown}; the authors' flags are {sorted(ARCH_FLAGS)}."
        )
    flags = {k: config.get(k, v) for k, v in ARCH_FLAGS.items()}
    for key in ("nBlocks", "stepmode", "data"):
        if flags[key] is None:
            raise ValueError(f"The MSDNet config needs {key!r}.")
    data = flags["data"]
    if data not in ("cifar10", "cifar100", "ImageNet"):
        raise ValueError(f"data must be cifar10, cifar100 or ImageNet, got {data!r}.")
    gr, bn = dash_list(flags["grFactor"], "grFactor"), dash_list(flags["bnFactor"], "bnFactor")
    if len(gr) != len(bn):
        raise ValueError(f"grFactor {flags['grFactor']!r} and bnFactor {flags['bnFactor']!r} "
                         "must have one entry per scale.")
    if "nScales" in config and int_flag(config["nScales"], "nScales") != len(gr):
        raise ValueError(f"nScales={config['nScales']} disagrees with grFactor {flags['grFactor']!r}.")
    imagenet = data == "ImageNet"
    return dict(
        n_blocks=int_flag(flags["nBlocks"], "nBlocks"), step_mode=flags["stepmode"],
        step=int_flag(flags["step"], "step"), base=int_flag(flags["base"], "base"),
        n_channels=int_flag(flags["nChannels"], "nChannels"),
        growth_rate=int_flag(flags["growthRate"], "growthRate"), gr_factor=gr, bn_factor=bn,
        bottleneck=bool_flag(flags["bottleneck"], "bottleneck"), reduction=float(flags["reduction"]),
        prune=flags["prune"], imagenet_stem=imagenet, head_width=None if imagenet else 128,
        num_classes=int_flag(config.get("num_classes", {"cifar10": 10, "cifar100": 100}.get(data, 1000)),
                             "num_classes"),
        input_shape=(224, 224, 3) if imagenet else (32, 32, 3),
    )


def _msd_conv(prefix, conv):
    if conv.bottleneck is None:
        return conv_bn_entries(f"{prefix}.net.0", f"{prefix}.net.1", conv.conv)
    return {
        **conv_bn_entries(f"{prefix}.net.0", f"{prefix}.net.1", conv.bottleneck),
        **conv_bn_entries(f"{prefix}.net.3", f"{prefix}.net.4", conv.conv),
    }


def entries(model):
    """{torch_name: (variable, transform)} for every tensor of `model`."""
    result = {}
    for i, block in enumerate(model.blocks):
        for p, layer in enumerate(block):
            prefix = f"blocks.{i}.{p}"
            if isinstance(layer, MSDStem):
                for s, conv in enumerate(layer.convs):
                    if s == 0 and layer.imagenet_stem:
                        result.update(conv_entries(f"{prefix}.layers.0.0", conv.conv))
                        result.update(bn_entries(f"{prefix}.layers.0.1", conv.bn))
                    else:
                        result.update(conv_bn_entries(f"{prefix}.layers.{s}.net.0",
                                                      f"{prefix}.layers.{s}.net.1", conv))
            elif isinstance(layer, MSDLayer):
                for j, (down, normal) in enumerate(zip(layer.down, layer.normal)):
                    if down is not None:
                        result.update(_msd_conv(f"{prefix}.layers.{j}.conv_down", down))
                    result.update(_msd_conv(f"{prefix}.layers.{j}.conv_normal", normal))
            elif isinstance(layer, MSDTransition):
                for j, conv in enumerate(layer.convs):
                    result.update(conv_bn_entries(f"{prefix}.m.{j}.net.0", f"{prefix}.m.{j}.net.1", conv))
            else:
                raise TypeError(f"Unexpected layer {type(layer).__name__} in an MSDNet block.")
    for k, head in enumerate(model.heads):
        result.update(exit_head_entries(f"classifier.{k}", head))
    return result
