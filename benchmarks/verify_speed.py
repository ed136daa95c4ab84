"""Pairs/s of local verification, per method, in one process on one thread.

    .venv/bin/python benchmarks/verify_speed.py [../shared/photos] [--pairs 100] [--methods rootsift,orb]

Pairs are built from the photos: each query is an edited copy of a photo (rotated, rescaled,
cropped, re-encoded as JPEG) and is verified against its original and against an unrelated photo,
as a re-ranking stage sees them (one true candidate among false ones). Two numbers per method:
  extract+match+verify  the query's features (and its mirror's), the reference's, then the pair;
  match+verify          features precomputed (references are described at index time).
Both include the mirror pass. A sanity line counts copies with >= 8 inliers and the most inliers
an unrelated pair got. OpenCV, OpenMP and BLAS are held to one thread, so the rate is per core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from copyscope.matching.local_features import available_methods, extract_local_features, extract_query_features
from copyscope.matching.verification import verify_pair
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.pipeline.files import list_images

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"


def edited_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate +-20 degrees, rescale 0.7..1.2, crop 70 %, JPEG quality 50."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-20, 20), rng.uniform(0.7, 1.2))
    warped = cv2.warpAffine(image, matrix, (w, h))
    y, x = int(rng.uniform(0, 0.3) * h), int(rng.uniform(0, 0.3) * w)
    crop = np.ascontiguousarray(warped[y:y + int(0.7 * h), x:x + int(0.7 * w)])
    _, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 50])
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


def load_pairs(folder: str, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """`count` (query, reference, is_copy) pairs, half copies, half unrelated."""
    photos = []
    for _, path in list_images(folder).entries[: count // 2 + 1]:
        try:
            photos.append(decode_image(path))
        except DecodeError:
            continue
    rng = np.random.default_rng(seed)
    pairs = []
    for i, photo in enumerate(photos[:-1]):
        query = edited_copy(photo, rng)
        pairs += [(query, photo, True), (query, photos[(i + 1) % len(photos)], False)]
    return pairs[:count]


def measure(method: str, pairs: list[tuple[np.ndarray, np.ndarray, bool]]) -> tuple[float, float, list[int]]:
    """(extract+match+verify pairs/s, match+verify pairs/s, inliers per pair)."""
    start = time.perf_counter()
    for query, reference, _ in pairs:
        q, mirrored = extract_query_features(query, method)
        verify_pair(q, extract_local_features(reference, method), mirrored=mirrored)
    full = len(pairs) / (time.perf_counter() - start)
    features = [(extract_query_features(q, method), extract_local_features(r, method)) for q, r, _ in pairs]
    start = time.perf_counter()
    inliers = [verify_pair(q, r, mirrored=m).inliers for (q, m), r in features]
    return full, len(pairs) / (time.perf_counter() - start), inliers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--methods", default=",".join(available_methods()))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pairs = load_pairs(args.folder, args.pairs)
    copies = np.array([is_copy for _, _, is_copy in pairs])
    print(f"{len(pairs)} pairs ({copies.sum()} copies) from {args.folder}; 1 process, 1 thread, "
          f"OpenCV {cv2.__version__}")
    for method in args.methods.split(","):
        full, verify_only, inliers = measure(method, pairs)
        inliers = np.array(inliers)
        print(f"{method:9s} extract+match+verify {full:6.1f} pairs/s | match+verify {verify_only:6.1f} pairs/s | "
              f"copies with >= 8 inliers {np.mean(inliers[copies] >= 8):.0%}, "
              f"unrelated max {inliers[~copies].max()} inliers")


if __name__ == "__main__":
    main()
