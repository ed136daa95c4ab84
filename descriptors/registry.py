"""One registry and factory for descriptor models.

`create_descriptor("sscd")`, `create_descriptor("timm:resnet50", weights="ckpt.pth")`. A name with a
colon selects a family and passes the part after it (the architecture) to the family's factory.
"""

from __future__ import annotations

import importlib
from typing import Callable

from copyscope.descriptors.base import Descriptor
from copyscope.descriptors.errors import UserError

_FACTORIES: dict[str, Callable[..., Descriptor]] = {}
_FAMILY_ARG = "<architecture>"
# Built-in models register when their module is first needed, so that a process running the ONNX
# models never pays for importing torch and timm.
_BUILTIN_MODULES = {
    "sscd": "descriptors.onnx_sscd",
    "sscd_distilled": "descriptors.onnx_sscd",
    "sscd_torchscript": "descriptors.sscd_torchscript",
    f"timm:{_FAMILY_ARG}": "descriptors.timm_gem",
}


def register_descriptor(name: str, *, family: bool = False):
    """Decorator registering `factory(weights, device, num_threads, **kw) -> Descriptor`.

    With `family=True` the name is a prefix: "timm" serves "timm:<architecture>", the factory
    receiving `arch=` as well.
    """

    def wrap(factory):
        key = f"{name}:{_FAMILY_ARG}" if family else name
        if key in _FACTORIES:
            raise ValueError(f"descriptor {key!r} is registered twice")
        _FACTORIES[key] = factory
        return factory

    return wrap


def list_descriptors() -> list[str]:
    return sorted(set(_FACTORIES) | set(_BUILTIN_MODULES))


def _lookup(key: str) -> Callable[..., Descriptor] | None:
    if key not in _FACTORIES and key in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[key])
    return _FACTORIES.get(key)


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
