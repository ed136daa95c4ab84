"""The two directions of a match, on photos that ship with scikit-image: a crop against its full photo, and a
photo pasted into another one. Prints score ("the query contains a copy of the reference") and reverse_score
("the reference contains the query") with the coverages they rest on.

    .venv/bin/python benchmarks/direction_example.py --work /tmp/direction
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.model_spec import ModelSpec


def save(folder: Path, name: str, image: np.ndarray) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jpg"
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=90)
    return name, str(path)


def pasted(small: np.ndarray, host: np.ndarray, share: float = 0.2) -> np.ndarray:
    """`small` resized to `share` of `host`'s area, pasted at its centre."""
    h, w = host.shape[:2]
    scale = np.sqrt(share * h * w / (small.shape[0] * small.shape[1]))
    size = (max(1, round(small.shape[1] * scale)), max(1, round(small.shape[0] * scale)))
    patch = np.asarray(Image.fromarray(small).resize(size, Image.LANCZOS))
    out = host.copy()
    top, left = (h - size[1]) // 2, (w - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = patch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="sscd")
    args = parser.parse_args()
    work = Path(args.work)
    astronaut, coffee = data.astronaut(), data.coffee()
    refs = [save(work / "refs", "astronaut", astronaut), save(work / "refs", "coffee", coffee),
            save(work / "refs", "chelsea", data.chelsea())]
    queries = [save(work / "queries", "astronaut_crop", astronaut[96:416, 96:416]),
               save(work / "queries", "astronaut_pasted_into_coffee", pasted(astronaut, coffee))]
    engine = CopyIndex.open_or_create(work / "index", ModelSpec(args.model))
    engine.add_images(refs)
    result = engine.match(queries, k=2)
    print("| query | reference | score | reverse_score | inliers | query coverage | reference coverage |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in result.explain:
        print(f"| {row['query_id']} | {row['reference_id']} | {row['score']:.3f} | {row['reverse_score']:.3f} | "
              f"{row.get('inliers', 0)} | {row.get('query_coverage', 0):.2f} | {row.get('reference_coverage', 0):.2f} |")


if __name__ == "__main__":
    main()
