"""Could other local verification find the copies that the default match leaves unverified?

    .venv/bin/python benchmarks/hard_copies.py WORK [--sets tune_11_tl,tune_12_t,tune_13_l]

WORK is a benchmarks/fit_calibration.py work folder (bench_*, idx_*, explain_*.jsonl of each set). For each set,
the queries whose candidates all have fewer than FEW_INLIERS inliers as matched (second look included) are taken,
and their 4 candidates with the best view score, and the true reference when it is a candidate further down.
Every such pair is verified again in several ways, and the script prints, per way, how many copies and how many
wrong candidates reach 4 and 8 inliers (raw: no frame is taken out). A way that raises copies without raising
wrong candidates as much would be worth building. It also prints how many keypoints the default extraction
finds in those copies' queries (few keypoints: nothing left to verify).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
from pathlib import Path

import numpy as np

from copyscope.matching.local_features import LocalSpec, extract_local_features, extract_query_features
from copyscope.matching.verification import verify_pair
from copyscope.pipeline.catalog import Catalog
from copyscope.pipeline.decode import decode_image
from copyscope.pipeline.second_look import FEW_INLIERS
from copyscope.pipeline.verify_stage import verify_stored

TOP = 4  # candidates by best view score looked at again per query
# name -> (long side, keypoints, ratio, geometry) of both images, each extracted whole from its file
WAYS = {
    "both files, 512 px, 1000 keypoints, ratio 0.75": (512, 1000, 0.75, "homography"),
    "both files, 768 px, 2000 keypoints": (768, 2000, 0.75, "homography"),
    "both files, 1024 px, 4000 keypoints": (1024, 4000, 0.75, "homography"),
    "both files, ratio 0.85": (512, 1000, 0.85, "homography"),
    "both files, affine": (512, 1000, 0.75, "affine"),
    "both files, 192 px (coarse)": (192, 1000, 0.75, "homography"),
    "both files, 128 px (coarse)": (128, 1000, 0.75, "homography"),
}
STORED = "as stored (the index's features, the default query)"


def pairs_to_check(explain: Path, gt_csv: Path) -> list[tuple[str, str, bool]]:
    """(query, reference, is the copy) of the unverified queries' TOP candidates and true references."""
    with open(explain) as f:
        rows = [json.loads(line) for line in f]
    with open(gt_csv, newline="") as f:
        truth = {r["query_id"]: r["reference_id"] for r in csv.DictReader(f) if r["reference_id"]}
    by_query = collections.defaultdict(list)
    for r in rows:
        by_query[r["query_id"]].append(r)
    out = []
    for q, cands in by_query.items():
        if max(r.get("inliers") or 0 for r in cands) >= FEW_INLIERS:
            continue
        refs = [r["reference_id"] for r in sorted(cands, key=lambda r: -r["best_view_score"])]
        looked = refs[:TOP] + [ref for ref in refs[TOP:] if ref == truth.get(q)]
        out += [(q, ref, truth.get(q) == ref) for ref in looked]
    return out


def check_set(work: Path, name: str) -> list[tuple[bool, dict[str, int], int]]:
    """[(is the copy, {way: inliers}, query keypoints by default)] of one set's pairs_to_check."""
    bench = work / f"bench_{name}"
    spec = LocalSpec()  # what fit_calibration.py indexes with
    catalog = Catalog(work / f"idx_{name}" / "catalog.sqlite", readonly=True, method=spec.method)
    pairs = pairs_to_check(work / f"explain_{name}.jsonl", bench / "ground_truth.csv")
    ids = catalog.ids_of({ref for _, ref, _ in pairs})
    queries, references = {}, {}
    out = []
    for q, ref, is_copy in pairs:
        if q not in queries:
            image = decode_image(bench / "queries" / f"{q}.jpg")
            queries = {q: {way: extract_query_features(image, max_keypoints=kp, max_side=side)
                           for way, (side, kp, _, _) in WAYS.items()}
                       | {STORED: extract_query_features(image, max_keypoints=spec.max_keypoints,
                                                         max_side=spec.max_side)}}  # one query at a time
        if ref not in references:
            image = decode_image(bench / "references" / f"{ref}.jpg")
            references[ref] = {way: extract_local_features(image, max_keypoints=kp, max_side=side)
                               for way, (side, kp, _, _) in WAYS.items()}
        inliers = {way: verify_pair(queries[q][way][0], references[ref][way], mirrored=queries[q][way][1],
                                    ratio=ratio, geometry=geometry).inliers
                   for way, (_, _, ratio, geometry) in WAYS.items()}
        inliers[STORED] = verify_stored(queries[q][STORED][0], catalog.features(ids[ref]), spec).inliers
        out.append((is_copy, inliers, len(queries[q][STORED][0])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--sets", default="tune_11_tl,tune_12_t,tune_13_l", help="comma-separated set names")
    args = parser.parse_args()
    checked = [row for name in args.sets.split(",") for row in check_set(args.work, name)]
    copies = [c for c in checked if c[0]]
    wrong = [c for c in checked if not c[0]]
    print(f"{len(copies)} copies and {len(wrong)} wrong candidates of unverified queries ({args.sets})")
    for way in (STORED, *WAYS):
        counts = "  ".join(f">= {t}: copies {sum(c[1][way] >= t for c in copies)}, "
                           f"wrong {sum(c[1][way] >= t for c in wrong)}" for t in (FEW_INLIERS, 8))
        print(f"  {way:52s} {counts}")
    keypoints = np.array([c[2] for c in copies])
    if len(keypoints):
        print(f"keypoints of those copies' queries (default extraction): median {int(np.median(keypoints))}, "
              f"{int((keypoints <= 20).sum())} of {len(keypoints)} with 20 or fewer")


if __name__ == "__main__":
    main()
