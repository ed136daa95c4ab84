"""Would a second look at the query's best view find the copies that verification misses?

    .venv/bin/python benchmarks/box_reverify.py /tmp/fit [--side 512]

Reads the tuning sets of benchmarks/fit_calibration.py (WORK/explain_tune_*.jsonl beside WORK/bench_tune_*;
the held-out ones are left alone). For every query whose copy is a candidate verified by fewer than 4 inliers,
it verifies that pair again two ways: the query's best-view box (the region view that scored highest against
the reference, `best_view_box`) cut out, upscaled so that its long side is `--side` and described on its own;
and the whole query described at 1024 px with 2000 keypoints. The query's strongest wrong candidate (highest
best-view score) is verified the same ways beside it, so that a gain look-alikes and shared frames get too
shows up as one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import FEW_INLIERS, load_set  # noqa: E402

from copyscope.descriptors.regions import crop_boxes  # noqa: E402
from copyscope.matching.local_features import extract_local_features, extract_query_features  # noqa: E402
from copyscope.matching.verification import verify_images, verify_pair  # noqa: E402
from copyscope.pipeline.decode import decode_image  # noqa: E402

LARGE = {"max_side": 1024, "max_keypoints": 2000}  # the whole query described larger


def box_view(image: np.ndarray, box: list[float], side: int) -> np.ndarray:
    """(H, W, 3) image -> its (x0, y0, x1, y1) box upscaled so that its long side is `side` (the whole image when
    the box is under 16 pixels a side)."""
    view = crop_boxes(image, np.array(box, int))[0]
    if min(view.shape[:2]) < 16:
        return image
    scale = side / max(view.shape[:2])
    return cv2.resize(view, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the --work folder of benchmarks/fit_calibration.py")
    parser.add_argument("--side", type=int, default=512, help="long side of the upscaled box, and its max_side")
    args = parser.parse_args()
    found = {"missed copy": [], "strongest wrong candidate": []}
    for explain in sorted(args.work.glob("explain_tune_*.jsonl")):
        bench = args.work / explain.stem.replace("explain_", "bench_")
        rows, _, _, y, _ = load_set(f"{explain}:{bench / 'ground_truth.csv'}")
        by_query: dict[str, list[tuple[dict, bool]]] = {}
        for row, is_copy in zip(rows, y.astype(bool)):
            by_query.setdefault(row["query_id"], []).append((row, is_copy))
        for query_id, pairs in by_query.items():
            missed = [row for row, is_copy in pairs if is_copy and row.get("inliers", 0) < FEW_INLIERS]
            wrong = [row for row, is_copy in pairs if not is_copy]
            if not missed:
                continue
            query = decode_image(bench / "queries" / f"{query_id}.jpg")
            large_query, large_mirrored = extract_query_features(query, **LARGE)
            strongest = max(wrong, key=lambda r: r["best_view_score"], default=None)
            for kind, row in (("missed copy", missed[0]), ("strongest wrong candidate", strongest)):
                if row is None:
                    continue
                reference = decode_image(bench / "references" / f"{row['reference_id']}.jpg")
                boxed = verify_images(box_view(query, row["best_view_box"], args.side), reference,
                                      max_side=args.side).inliers
                large = verify_pair(large_query, extract_local_features(reference, **LARGE),
                                    mirrored=large_mirrored).inliers
                found[kind].append((row.get("inliers", 0), boxed, large))
    print(f"pairs of queries whose copy is a candidate with < {FEW_INLIERS} inliers; inliers of each way "
          "(>= 8 / >= 12 / max)")
    for kind, counts in found.items():
        c = np.array(counts, int).reshape(-1, 3)
        shown = "  ".join(f"{name} {(c[:, i] >= 8).sum()} / {(c[:, i] >= 12).sum()} / {c[:, i].max(initial=0)}"
                          for i, name in enumerate(("as matched", f"box at {args.side} px", "whole at 1024 px")))
        print(f"  {kind:26s} {len(c):4d} pairs  {shown}")


if __name__ == "__main__":
    main()
