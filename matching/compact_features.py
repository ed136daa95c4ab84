"""Compact stored local features: the strongest keypoints, RootSIFT reduced by PCA to uint8 codes.

    references: LocalFeatures (N <= 1000, 128 uint8) --compact--> (n <= 460, 48 uint8): at most 23,939 bytes
    queries:    LocalFeatures (N, 128 uint8) --project--> (N, 48 uint8), mirror taken before projecting

A code is c = clip(rint(scale * (x - mean) @ components.T) + 128, 0, 255), x = RootSIFT / 512 (unit L2):
L2 distances between codes are `scale` times distances in the PCA subspace, so verification's L2
matching and ratio test apply unchanged. The projection ships with the package (matching/data/*.npz),
fitted by benchmarks/fit_projection.py on RootSIFT of the tuning half of the photos only (48 dims keep
91 % of the variance); an index records its name, so queries are projected as its references were.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.matching.local_features import LocalFeatures, LocalSpec, mirror_features

_DATA = Path(__file__).with_name("data")
_ROOTSIFT_SCALE = 512.0  # matching.local_features stores RootSIFT as round(512 * value)


@dataclasses.dataclass(frozen=True, eq=False)
class Projection:
    """name, mean (128,) float32, components (d, 128) float32 (rows: principal axes), scale (code units)."""

    name: str
    mean: np.ndarray
    components: np.ndarray
    scale: float

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    def codes(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, 128) uint8 RootSIFT -> (N, d) uint8 codes."""
        x = descriptors.astype(np.float32) / _ROOTSIFT_SCALE - self.mean
        return np.clip(np.rint(x @ self.components.T * self.scale) + 128, 0, 255).astype(np.uint8)

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """(N, d) uint8 codes -> (N, 128) uint8 RootSIFT, the nearest point of the PCA subspace."""
        x = (codes.astype(np.float32) - 128) / self.scale @ self.components + self.mean
        return np.clip(np.rint(x * _ROOTSIFT_SCALE), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def load_projection(name: str) -> Projection:
    """A packaged projection by name (matching/data/NAME.npz); unknown names list the known ones."""
    path = _DATA / f"{name}.npz"
    if not path.is_file():
        known = sorted(p.stem for p in _DATA.glob("*.npz"))
        raise UserError(f"unknown local-feature projection {name!r}; known: {', '.join(known)}")
    with np.load(path) as z:
        return Projection(name, z["mean"].astype(np.float32), z["components"].astype(np.float32), float(z["scale"]))


def is_projected(features: LocalFeatures, spec: LocalSpec) -> bool:
    return bool(spec.projection) and features.descriptors.shape[1] == load_projection(spec.projection).dim


def project(features: LocalFeatures, spec: LocalSpec) -> LocalFeatures:
    """Full features -> the code space of `spec` (unchanged without a projection or when projected already)."""
    if not spec.projection or is_projected(features, spec):
        return features
    return dataclasses.replace(features, descriptors=load_projection(spec.projection).codes(features.descriptors))


def compact(features: LocalFeatures, spec: LocalSpec) -> LocalFeatures:
    """Extracted features (strongest first) -> what a reference stores: the first `spec.stored_keypoints`,
    projected."""
    if is_projected(features, spec):
        return features
    n = spec.stored_keypoints or len(features)
    kept = dataclasses.replace(features, keypoints=features.keypoints[:n], descriptors=features.descriptors[:n])
    return project(kept, spec)


def mirrored(features: LocalFeatures, spec: LocalSpec) -> LocalFeatures:
    """The features of the horizontally flipped image, in the code space of `spec`: exact for full features
    (bins permuted, then projected); for stored codes, through the reconstruction in the PCA subspace."""
    if not is_projected(features, spec):
        return project(mirror_features(features), spec)
    p = load_projection(spec.projection)
    full = dataclasses.replace(features, descriptors=p.reconstruct(features.descriptors))
    return dataclasses.replace(full, descriptors=p.codes(mirror_features(full).descriptors))


def fit_projection(descriptors: np.ndarray, dim: int, clip_quantile: float = 0.999) -> dict[str, np.ndarray]:
    """(M, 128) uint8 RootSIFT -> {"mean": (128,), "components": (dim, 128), "scale": ()} by PCA; scale maps the
    `clip_quantile` of |projection| to 127 code units."""
    x = descriptors.astype(np.float64) / _ROOTSIFT_SCALE
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((x - mean).T))
    components = vectors[:, np.argsort(values)[::-1][:dim]].T
    scale = 127.0 / float(np.quantile(np.abs((x - mean) @ components.T), clip_quantile))
    return {"mean": mean.astype(np.float32), "components": components.astype(np.float32),
            "scale": np.float32(scale)}
