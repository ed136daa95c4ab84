"""Run a torch module as a descriptor: uint8 batches in, L2-normalised descriptors out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from copyscope.descriptors.base import Descriptor
from copyscope.descriptors.preprocess import PreprocessCfg, normalize_batch


class TorchDescriptor(Descriptor):
    """Wraps `module: (B, 3, H, W) float32 standardised -> (B, D)`; output re-normalised to unit L2."""

    def __init__(self, name: str, module: torch.nn.Module, cfg: PreprocessCfg, *, device: str = "cpu",
                 num_threads: int | None = None, weights: str | None = None):
        super().__init__(name, cfg, weights=weights)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalize_batch(self.cfg, batch)).to(self.device)
        return F.normalize(self.module(x).float(), dim=-1).cpu().numpy()


def infer_dim(module: torch.nn.Module, size: int = 64) -> int:
    """Output width of `module`, from one forward on a small dummy batch (on the CPU)."""
    with torch.inference_mode():
        return int(module.eval()(torch.zeros(1, 3, size, size)).shape[-1])
