"""The one place that chooses a device: jobs resolve it and pass it down."""

from __future__ import annotations

import os

from copyscope.descriptors.errors import UserError


def cuda_available() -> bool:
    """True when torch sees a GPU. Without an NVIDIA driver, answers without importing torch (~1.5 s)."""
    if not os.path.exists("/proc/driver/nvidia/version") and not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; explicit values are checked and kept."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not cuda_available():
            raise UserError(f"--device {requested} asked for, but no GPU is visible")
        return requested
    raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda[:N]")
