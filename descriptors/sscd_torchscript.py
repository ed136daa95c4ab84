"""Meta's official SSCD TorchScript files (sscd_disc_mixup.torchscript.pt, ...) from a local path.

Preprocessing as SSCD's README: short side resized to 288, ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import torch

from copyscope.descriptors.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessCfg
from copyscope.descriptors.registry import register_descriptor
from copyscope.descriptors.torch_descriptor import TorchDescriptor, infer_dim


@register_descriptor("sscd_torchscript", backend="torch")
def sscd_torchscript(weights=None, device="cpu", num_threads=None, image_size: int = 288):
    if not weights:
        raise ValueError("sscd_torchscript needs --weights: the path of an SSCD .torchscript.pt file")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"SSCD TorchScript weights not found: {weights}")
    module = torch.jit.load(str(weights), map_location="cpu")
    cfg = PreprocessCfg(resize="short_side", size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        dim=infer_dim(module))
    return TorchDescriptor("sscd_torchscript", module, cfg, device=device, num_threads=num_threads,
                           weights=str(weights))
