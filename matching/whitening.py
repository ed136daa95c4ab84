"""PCA whitening fitted on the collection being searched: what its references share weighs less.

    w = fit_whitening(reference_vectors)    # (N, D) L2-normalised descriptors of the collection
    w(x)                                    # (M, D) -> (M, D) float32, whitened and L2-normalised

Templated content (an app's chrome, a meme's caption style, a shared background) and a collection's common
look (dog photos) put their references' descriptors along a few shared directions; a raw cosine counts
those directions as evidence of a copy. Whitening by the collection's own covariance weighs each direction
by how little the collection varies along it, so two photos in one frame stop looking alike while an edited
copy keeps its specific content. Fitted on the references only: no labels, no query.

The covariance is shrunk towards isotropy as if `prior` more descriptors had been seen,
C = (N C_refs + prior s2 I) / (N + prior), s2 = trace(C_refs) / D, and the mean towards 0 likewise, so a
collection much smaller than D is hardly whitened (an empty one not at all). Eigenvalues below `floor`
times the largest are raised to it; each principal axis is scaled by eigenvalue ** (-power / 2) (power 1:
full whitening). Defaults chosen on the tuning half of the photos (benchmarks/whitening.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

REFIT_GROWTH = 1.25  # fit again once the collection is 25 % larger, or 20 % smaller, than at the fit
REFIT_MIN = 32  # a whitening fitted on fewer references (an empty index's: none) stays until this many


@dataclass(frozen=True)
class WhiteningSpec:
    """How an index fits its whitening (recorded in its manifest; the calibration is fitted for it)."""

    prior: int = 128
    power: float = 0.5
    floor: float = 1e-3

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Whitening:
    """mean (D,) float32, projection (D, D) float32, fitted_on: how many references it was fitted on."""

    mean: np.ndarray
    projection: np.ndarray
    fitted_on: int

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(M, D) descriptors -> (M, D) float32 whitened, L2-normalised."""
        x = (np.asarray(vectors, np.float32) - self.mean) @ self.projection
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def outgrown(self, size: int) -> bool:
        """True when a collection of `size` references has grown or shrunk by a quarter since the fit (or has
        reached REFIT_MIN while fitted on fewer): time to fit again."""
        return size >= max(REFIT_GROWTH * self.fitted_on, REFIT_MIN) or size < self.fitted_on / REFIT_GROWTH

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "projection": self.projection, "fitted_on": np.int64(self.fitted_on)}

    @classmethod
    def from_arrays(cls, arrays) -> Whitening:
        return cls(np.asarray(arrays["mean"], np.float32), np.asarray(arrays["projection"], np.float32),
                   int(arrays["fitted_on"]))


def fit_whitening(vectors: np.ndarray, spec: WhiteningSpec = WhiteningSpec(), chunk: int = 65536) -> Whitening:
    """(N, D) descriptors of a collection (N >= 0) -> its Whitening, shrunk as the module says. The moments are
    summed in float64 over chunks of `chunk` rows: memory beyond the input is O(chunk * D + D * D)."""
    n, d = vectors.shape
    total, outer = np.zeros(d), np.zeros((d, d))
    for start in range(0, n, chunk):
        x = np.asarray(vectors[start:start + chunk], np.float64)
        total += x.sum(axis=0)
        outer += x.T @ x
    share = n / (n + spec.prior) if n + spec.prior else 0.0
    mean = total / max(n, 1)
    cov = outer / max(n, 1) - np.outer(mean, mean)
    spread = np.trace(cov) / d if n > 1 else 1.0
    cov = share * cov + (1 - share) * spread * np.eye(d)
    values, axes = np.linalg.eigh(cov)
    values = np.maximum(values, spec.floor * values.max())
    projection = axes * values ** (-spec.power / 2)
    return Whitening((share * mean).astype(np.float32), projection.astype(np.float32), n)
