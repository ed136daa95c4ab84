"""Which descriptor a job runs, recorded in every index manifest so queries are embedded the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from copyscope.descriptors import Descriptor, create_descriptor, descriptor_backend


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
    region = ModelSpec(text)
    return None if region == spec else region
