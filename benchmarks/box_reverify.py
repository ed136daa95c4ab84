"""What does a second look at a query's best view find, and at what price? (pipeline.second_look)

    .venv/bin/python benchmarks/box_reverify.py /tmp/fit [--side 512]

Reads the tuning sets of benchmarks/fit_calibration.py (WORK/explain_tune_*.jsonl beside WORK/bench_tune_* and
WORK/idx_tune_*; the held-out ones are left alone), matched without a second look (`second_look` off, or
before it existed). It takes the queries the second look takes, those whose verified candidates all have fewer
than FEW_INLIERS inliers: it cannot know which candidate is the copy. For each, the best-view box of its top
candidate among the explain rows is described closer (matching.local_features.extract_box_features, long side
`--side`) and verified against the stored features of every explain row of the query. Pairs are counted for
copies and for wrong candidates, three ways:
  raw: the inliers as verified;
  query frames: the box's keypoints that are inliers to 3 or more candidates taken out (matching.shared_frames);
  + reference frames: also each reference's keypoints that frame its nearest references (CopyIndex.shared_frames).
Each way is counted again with the second look's floor on the reference coverage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import load_set  # noqa: E402

from copyscope.matching.local_features import extract_box_features  # noqa: E402
from copyscope.matching.shared_frames import discount, discount_frames  # noqa: E402
from copyscope.pipeline.decode import decode_image  # noqa: E402
from copyscope.pipeline.engine import CopyIndex  # noqa: E402
from copyscope.pipeline.second_look import FEW_INLIERS, MIN_REFERENCE_COVERAGE, SECOND_LOOK_INLIERS  # noqa: E402
from copyscope.pipeline.verify_stage import evidence_of, query_codes, verify_stored  # noqa: E402

WAYS = ("raw", "query frames", "+ reference frames")


def reverified(rows: list[dict], query: np.ndarray, engine: CopyIndex, ids: dict[str, int], side: int,
               frames: dict[int, np.ndarray]) -> list[tuple[dict, ...]] | None:
    """One query's candidate rows and its set's {reference id: collection frames} -> per row, the evidence of its
    top candidate's best-view box against it in each of WAYS; None when that box is the whole image."""
    h, w = query.shape[:2]
    box = max(rows, key=lambda r: r["best_view_score"])["best_view_box"]
    if [int(v) for v in box] == [0, 0, w, h]:
        return None
    spec = engine.local
    view = extract_box_features(query, box, spec.method, side=side, max_keypoints=spec.max_keypoints)
    codes = query_codes(view, spec)
    owners, raw = [], []
    for row in rows:
        ref_id = ids[row["reference_id"]]
        reference = engine.catalog.features(ref_id)
        owners.append(("box", ref_id))
        raw.append(evidence_of(verify_stored(view, reference, spec, codes=codes), view.image_size,
                               reference.image_size))
    burst = discount_frames(owners, raw, sides=("query",))
    shared = [discount(e, None, frames.get(ref_id)) for (_, ref_id), e in zip(owners, burst)]
    return list(zip(raw, burst, shared))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the --work folder of benchmarks/fit_calibration.py")
    parser.add_argument("--side", type=int, default=512, help="long side of the upscaled box, and its max_side")
    args = parser.parse_args()
    counts = {True: [], False: []}  # copy? -> per pair, (inliers, reference coverage) of each way
    queries = looked = 0
    for explain in sorted(args.work.glob("explain_tune_*.jsonl")):
        name = explain.stem.replace("explain_", "")
        bench, index = args.work / f"bench_{name}", args.work / f"idx_{name}"
        engine = CopyIndex.open(index)
        ids = {n: i for i, n in engine.names().items()}
        frames = engine.shared_frames(sorted(ids.values()))  # every reference's, once
        rows, _, _, y, _ = load_set(f"{explain}:{bench / 'ground_truth.csv'}")
        by_query: dict[str, list[tuple[dict, bool]]] = {}
        for row, is_copy in zip(rows, y.astype(bool)):
            by_query.setdefault(row["query_id"], []).append((row, bool(is_copy)))
        queries += len(by_query)
        for query_id, pairs in by_query.items():
            if max(row.get("inliers", 0) for row, _ in pairs) >= FEW_INLIERS:
                continue
            found = reverified([row for row, _ in pairs], decode_image(bench / "queries" / f"{query_id}.jpg"),
                               engine, ids, args.side, frames)
            if found is None:
                continue
            looked += 1
            for (_, is_copy), ways in zip(pairs, found):
                counts[is_copy].append([(e["inliers"], e["reference_coverage"]) for e in ways])
    print(f"{looked} of {queries} queries looked at again (every candidate under {FEW_INLIERS} inliers, best view "
          f"not the whole image); pairs with >= {SECOND_LOOK_INLIERS} / >= 12 inliers, and with >= "
          f"{SECOND_LOOK_INLIERS} at a reference coverage >= "
          f"{MIN_REFERENCE_COVERAGE:.0%}")
    for is_copy, kind in ((True, "copies"), (False, "wrong candidates")):
        c = np.array(counts[is_copy], float).reshape(-1, len(WAYS), 2)
        enough = c[:, :, 0] >= SECOND_LOOK_INLIERS
        shown = "  ".join(f"{way} {enough[:, i].sum()} / {(c[:, i, 0] >= 12).sum()} / "
                          f"{(enough[:, i] & (c[:, i, 1] >= MIN_REFERENCE_COVERAGE)).sum()}"
                          for i, way in enumerate(WAYS))
        print(f"  {kind:17s} {len(c):5d} pairs  {shown}")


if __name__ == "__main__":
    main()
