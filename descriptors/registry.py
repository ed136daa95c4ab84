"""One registry and factory for descriptor models.

`create_descriptor("sscd")`, `create_descriptor("timm:resnet50", weights="ckpt.pth")`. A name with a
colon selects a family and passes the part after it (the architecture) to the family's factory.
Each entry declares its backend, the runtime that will hold the model ("onnx": onnxruntime, "torch"),
so that a job can choose a device that runtime really has before any model is built.
"""

from __future__ import annotations

import importlib
from typing import Callable

from copyscope.descriptors.base import Descriptor
from copyscope.descriptors.errors import UserError

BACKENDS = ("onnx", "torch")
_FACTORIES: dict[str, Callable[..., Descriptor]] = {}
_BACKENDS: dict[str, str] = {}
_FAMILY_ARG = "<architecture>"
# Built-in models register when their module is first needed, so that a process running the ONNX
# models never pays for importing torch and timm.
# (module, backend); the backend is known without importing the module.
_BUILTIN_MODULES = {
    "sscd": ("copyscope.descriptors.onnx_sscd", "onnx"),
    "sscd_distilled": ("copyscope.descriptors.onnx_sscd", "onnx"),
    "sscd_torchscript": ("copyscope.descriptors.sscd_torchscript", "torch"),
    f"timm:{_FAMILY_ARG}": ("copyscope.descriptors.timm_gem", "torch"),
}


def register_descriptor(name: str, *, family: bool = False, backend: str = "torch"):
    """Decorator registering `factory(weights, device, num_threads, **kw) -> Descriptor`.

    With `family=True` the name is a prefix: "timm" serves "timm:<architecture>", the factory
    receiving `arch=` as well. backend: "onnx" or "torch", the runtime its models run on.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")

    def wrap(factory):
        key = f"{name}:{_FAMILY_ARG}" if family else name
        if key in _FACTORIES:
            raise ValueError(f"descriptor {key!r} is registered twice")
        _FACTORIES[key] = factory
        _BACKENDS[key] = backend
        return factory

    return wrap


def list_descriptors() -> list[str]:
    return sorted(set(_FACTORIES) | set(_BUILTIN_MODULES))


def _lookup(key: str) -> Callable[..., Descriptor] | None:
    if key not in _FACTORIES and key in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[key][0])
    return _FACTORIES.get(key)


def _key(name: str) -> str:
    family, sep, arch = name.partition(":")
    if sep and not arch:
        raise UserError(f"unknown descriptor {name!r}; known: {', '.join(list_descriptors())}")
    return f"{family}:{_FAMILY_ARG}" if sep else name


def descriptor_backend(name: str) -> str:
    """"onnx" or "torch": the runtime the descriptor `name` runs on (built-ins answer without importing
    their module). Raises UserError for an unknown name."""
    key = _key(name)
    if key in _BACKENDS:
        return _BACKENDS[key]
    if key in _BUILTIN_MODULES:
        return _BUILTIN_MODULES[key][1]
    raise UserError(f"unknown descriptor {name!r}; known: {', '.join(list_descriptors())}")


def create_descriptor(
    name: str,
    weights: str | None = None,
    *,
    device: str = "cpu",
    num_threads: int | None = None,
    **kwargs,
) -> Descriptor:
    """Build a descriptor by name. Weights load only from a local path or an installed package.

    device: "cpu" or "cuda[:N]", chosen by the caller (jobs), never here.
    num_threads: intra-op threads of the runtime; None leaves the runtime's default.
    """
    family, sep, arch = name.partition(":")
    if sep:
        factory = _lookup(f"{family}:{_FAMILY_ARG}")
        if factory is None or not arch:
            raise UserError(f"unknown descriptor {name!r}; known: {', '.join(list_descriptors())}")
        kwargs["arch"] = arch
    else:
        factory = _lookup(name)
        if factory is None:
            raise UserError(f"unknown descriptor {name!r}; known: {', '.join(list_descriptors())}")
    return factory(weights=weights, device=device, num_threads=num_threads, **kwargs)
