"""Learned local features and matching (kornia DISK + LightGlue) from weight files the user supplies.

Nothing here downloads: kornia's `DISK.from_pretrained` and `LightGlue("disk")` fetch weights from
the network, so the models are built bare (`DISK()`, `LightGlue(None, input_dim=128)`, the "disk"
configuration without its weights) and loaded from local files:

    DISK:      the checkpoint of cvlab-epfl/disk (state dict under "extractor") or a bare state dict.
    LightGlue: the checkpoint of cvg/LightGlue for DISK (old "self_attn.<i>" / "cross_attn.<i>" key
               names are accepted) or a state dict of kornia's LightGlue.

The output is the OpenCV path's: LocalFeatures (method "disk", float32 descriptors) and (M, 2) int32
tentative matches, which `verification.verify_pair(q, r, pairs=...)` turns into a Verification.
Mirrored copies are not searched on this path (LightGlue sees keypoint positions too).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from kornia.feature import DISK, LightGlue

from copyscope.matching.local_features import LocalFeatures, shrink, to_original_pixels
from copyscope.matching.verification import Verification, verify_pair

LEARNED_METHOD = "disk"
_DISK_DIM = 128

WeightsPath = str | os.PathLike


def _read_state_dict(path: WeightsPath | None, what: str) -> dict[str, torch.Tensor]:
    if path is None:
        raise ValueError(f"{what} needs a local weights file (copyscope never downloads weights); "
                         f"pass the path of a {what} checkpoint")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: WeightsPath) -> None:
    """Load every parameter or fail with the names; missing buffers (derived constants) are allowed."""
    result = model.load_state_dict(state, strict=False)
    parameters = dict(model.named_parameters())
    missing = [k for k in result.missing_keys if k in parameters]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} is not a {what} checkpoint: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def load_disk(path: WeightsPath | None, *, device: str = "cpu") -> DISK:
    """DISK (128-d descriptors) with weights from a local file, in eval mode on `device`."""
    state = _read_state_dict(path, "DISK")
    model = DISK(desc_dim=_DISK_DIM)
    _load_strict(model, state.get("extractor", state), "DISK", path)
    return model.to(device).eval()


def _lightglue_keys(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Map the key names of cvg/LightGlue checkpoints to kornia's."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("matcher.")
        for i in range(n_layers):
            for block in ("self_attn", "cross_attn"):
                if key.startswith(f"{block}.{i}."):
                    key = f"transformers.{i}.{block}." + key[len(f"{block}.{i}."):]
        renamed[key] = value
    return renamed


def load_lightglue(path: WeightsPath | None, *, device: str = "cpu", filter_threshold: float = 0.1) -> LightGlue:
    """LightGlue for DISK descriptors with weights from a local file, in eval mode on `device`."""
    state = _read_state_dict(path, "LightGlue")
    model = LightGlue(None, input_dim=_DISK_DIM, filter_threshold=filter_threshold)
    _load_strict(model, _lightglue_keys(state, model.conf.n_layers), "LightGlue", path)
    return model.to(device).eval()


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def extract_disk(model: DISK, image: np.ndarray, *, max_keypoints: int = 1000, max_side: int = 512) -> LocalFeatures:
    """(H, W, 3) uint8 RGB -> LocalFeatures ("disk", (N, 128) float32), strongest first, on `model`'s device."""
    small = shrink(image, max_side)
    tensor = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float() / 255
    found = model(tensor.to(_device_of(model)), n=max_keypoints, pad_if_not_divisible=True)[0]
    order = torch.argsort(found.detection_scores.float(), descending=True, stable=True)
    xy = to_original_pixels(found.keypoints[order].float().cpu().numpy(), small.shape[:2], image.shape[:2])
    descriptors = found.descriptors[order].float().cpu().numpy().reshape(-1, _DISK_DIM)
    return LocalFeatures(xy, descriptors, image.shape[:2], LEARNED_METHOD)


def _lightglue_input(features: LocalFeatures, device: torch.device) -> dict[str, torch.Tensor]:
    h, w = features.image_size
    return {"keypoints": torch.from_numpy(features.keypoints)[None].to(device),
            "descriptors": torch.from_numpy(features.descriptors.astype(np.float32))[None].to(device),
            "image_size": torch.tensor([[w, h]], dtype=torch.float32, device=device)}


@torch.inference_mode()
def match_lightglue(model: LightGlue, q: LocalFeatures, r: LocalFeatures) -> np.ndarray:
    """Two "disk" LocalFeatures -> (M, 2) int32 tentative matches (query row, reference row)."""
    for features in (q, r):
        if features.method != LEARNED_METHOD:
            raise ValueError(f"LightGlue here matches {LEARNED_METHOD!r} features, got {features.method!r}")
    if not len(q) or not len(r):
        return np.zeros((0, 2), np.int32)
    device = _device_of(model)
    found = model({"image0": _lightglue_input(q, device), "image1": _lightglue_input(r, device)})
    return found["matches"][0].cpu().numpy().astype(np.int32).reshape(-1, 2)


@dataclasses.dataclass
class LearnedMatcher:
    """DISK + LightGlue held together: `extract` images, `verify` pairs (geometry by `verify_pair`)."""

    disk: DISK
    lightglue: LightGlue
    max_keypoints: int = 1000
    max_side: int = 512

    @classmethod
    def from_files(cls, disk_weights: WeightsPath | None, lightglue_weights: WeightsPath | None, *,
                   device: str = "cpu", filter_threshold: float = 0.1, **kwargs) -> LearnedMatcher:
        """kwargs: max_keypoints, max_side."""
        lightglue = load_lightglue(lightglue_weights, device=device, filter_threshold=filter_threshold)
        return cls(load_disk(disk_weights, device=device), lightglue, **kwargs)

    def extract(self, image: np.ndarray) -> LocalFeatures:
        return extract_disk(self.disk, image, max_keypoints=self.max_keypoints, max_side=self.max_side)

    def verify(self, q: LocalFeatures, r: LocalFeatures, **kwargs) -> Verification:
        """kwargs: `verify_pair`'s geometry options (geometry, ransac_threshold, seed, ...)."""
        return verify_pair(q, r, pairs=match_lightglue(self.lightglue, q, r), **kwargs)
