"""Fit the PCA that compacts stored RootSIFT (matching/data/rootsift_pca48.npz) on the tuning half only.

    .venv/bin/python benchmarks/fit_projection.py ../shared/photos --out matching/data/rootsift_pca48.npz

Each photo of the tuning half (benchmarks/halves.py) is decoded as references are (JPEG draft to a short
side of 288), RootSIFT is extracted as the index extracts it (1000 keypoints, long side 512), 300 of its
descriptors are drawn at random (numpy seed 0), and a PCA of all of them keeps --dims components.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import half_of  # noqa: E402

from copyscope.matching.compact_features import fit_projection  # noqa: E402
from copyscope.matching.local_features import extract_local_features  # noqa: E402
from copyscope.pipeline.decode import decode_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dims", type=int, default=48)
    parser.add_argument("--per-photo", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    parts = []
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() == ".jpg" and half_of(p.name) == "tune")
    for photo in photos:
        d = extract_local_features(decode_image(photo, min_side=288), "rootsift", max_keypoints=1000,
                                   max_side=512).descriptors
        parts.append(d[rng.permutation(len(d))[:args.per_photo]])
    x = np.concatenate(parts)
    fitted = fit_projection(x, args.dims)
    centred = x.astype(np.float64) / 512 - fitted["mean"]
    kept = float(((centred @ fitted["components"].T) ** 2).sum() / (centred ** 2).sum())
    np.savez(args.out, **fitted)
    print(f"{len(x)} descriptors of {len(photos)} tuning photos -> {args.dims} dims, scale {float(fitted['scale']):.1f}, "
          f"variance kept {kept:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
