"""The one place that chooses a device: jobs resolve it and pass it down.

A device is resolved for a backend, the runtime that will hold the model ("onnx": onnxruntime,
"torch"; `copyscope.descriptors.descriptor_backend(name)` tells which): torch may see a GPU while the
installed onnxruntime is the CPU build, so "auto" means "cuda" only when that runtime can use it.

Ray narrows CUDA_VISIBLE_DEVICES to the GPU it assigns, so inside an actor with num_gpus=1 that GPU is
always cuda:0: `actor_device` gives the string the actors are passed, and `ray_visible_devices` the
CUDA_VISIBLE_DEVICES to start a local Ray with, so that `cuda:N` really lands on GPU N.

    device = resolve_device(args.device, descriptor_backend(spec.name))   # job process
    env CUDA_VISIBLE_DEVICES=ray_visible_devices(device) for ray.init      # local Ray only
    EmbedSettings(device=actor_device(device))                             # what actors receive
"""

from __future__ import annotations

import os

from copyscope.descriptors.errors import UserError
from copyscope.descriptors.registry import BACKENDS


def nvidia_driver_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing torch or onnxruntime)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def cuda_available(backend: str = "torch") -> bool:
    """True when `backend` can run on a GPU here.

    torch: torch.cuda.is_available(). onnx: onnxruntime offers CUDAExecutionProvider (the CPU build
    does not). Without an NVIDIA driver, answers False without importing either (~1.5 s for torch).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not nvidia_driver_present():
        return False
    if backend == "onnx":
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    import torch

    return torch.cuda.is_available()


def _cuda_index(device: str) -> int | None:
    """"cuda" -> None, "cuda:N" -> N; anything else is a ValueError."""
    head, sep, index = device.partition(":")
    if head != "cuda" or (sep and not index.isdigit()):
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return int(index) if sep else None


def resolve_device(requested: str = "auto", backend: str = "torch") -> str:
    """The device `backend` will really use: "auto" -> "cuda" when it can use a GPU, else "cpu";
    "cpu" is kept; "cuda[:N]" is kept when it can, else a UserError saying why.

    N counts the GPUs this process sees (its CUDA_VISIBLE_DEVICES), as torch and onnxruntime do.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if requested == "auto":
        return "cuda" if cuda_available(backend) else "cpu"
    if requested == "cpu":
        return "cpu"
    index = _cuda_index(requested)
    if not cuda_available(backend):
        why = ("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)" if backend == "onnx"
               and nvidia_driver_present() else "no GPU is visible")
        raise UserError(f"--device {requested} asked for, but {why}")
    if index is not None and backend == "torch":
        import torch

        if index >= torch.cuda.device_count():
            raise UserError(f"--device {requested} asked for, but only {torch.cuda.device_count()} GPU(s) "
                               "are visible")
    return requested


def actor_device(device: str) -> str:
    """The device string for a Ray actor with num_gpus=1 running on `device`: Ray sets the actor's
    CUDA_VISIBLE_DEVICES to the one GPU it assigned, so any "cuda[:N]" is "cuda:0" there; "cpu" stays."""
    if device == "cpu":
        return "cpu"
    _cuda_index(device)
    return "cuda:0"


def ray_visible_devices(device: str) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local Ray started for `device`: for "cuda:N", the N-th GPU this
    process sees (an entry of its own CUDA_VISIBLE_DEVICES when set, else "N"), so Ray schedules GPU
    actors on that GPU only; None (leave the environment as it is) for "cpu" and "cuda"."""
    if device == "cpu":
        return None
    index = _cuda_index(device)
    if index is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if index >= len(entries):
        raise UserError(f"device {device!r} asked for, but CUDA_VISIBLE_DEVICES={visible!r} lists "
                           f"{len(entries)} GPU(s)")
    return entries[index]
