"""Which descriptor a job runs, recorded in every index manifest so queries are embedded the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from copyscope.descriptors import Descriptor, create_descriptor, descriptor_backend
from copyscope.descriptors.errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    """name and weights as `create_descriptor` takes them; options: its extra keyword arguments."""

    name: str = "sscd"
    weights: str | None = None
    options: dict = field(default_factory=dict)

    def build(self, *, device: str = "cpu", num_threads: int | None = None) -> Descriptor:
        return create_descriptor(self.name, self.weights, device=device, num_threads=num_threads, **self.options)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(name=d["name"], weights=d.get("weights"), options=dict(d.get("options") or {}))


def region_model_choice(text: str, spec: ModelSpec) -> ModelSpec | None:
    """--region-model same|NAME for an index of `spec` -> the region model it records (None: `spec` itself, also
    when NAME is `spec`); UserError for an unknown name. Region views are resized as `spec` resizes."""
    if text == "same":
        return None
    descriptor_backend(text)
    return distinct_region_model(spec, ModelSpec(text))


def distinct_region_model(spec: ModelSpec, region: ModelSpec | None) -> ModelSpec | None:
    """The region model an index of `spec` records: None when it is `spec` itself."""
    return None if region == spec else region


def check_region_model(model: Descriptor, region: ModelSpec) -> None:
    """UserError unless `region` gives descriptors of the size of the built `model`'s."""
    if region.build(num_threads=1).dim != model.dim:
        raise UserError(f"region model {region.name!r} gives descriptors of another size than {model.name!r}")
