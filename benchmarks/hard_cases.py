"""Wrong links of a match run, by hard case: which templated or look-alike references the false matches hit.

    .venv/bin/python benchmarks/hard_cases.py BENCH matches.csv [more.csv ...]

BENCH is a `copyscope benchmark make --templates K [--lookalikes]` folder (its references_meta.csv names
each reference's kind: plain, template_screenshot, template_meme, template_background, lookalike_crop,
lookalike_class). Prints, for each matches CSV, the false matches scored >= 0.5 and >= 0.9 by the kind of
reference they point at, and the copies found at >= 0.5.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

from copyscope.pipeline.formats import read_ground_truth, read_matches

THRESHOLDS = (0.5, 0.9)


def reference_kinds(bench: Path) -> dict[str, str]:
    with open(bench / "references_meta.csv", newline="", encoding="utf-8") as f:
        return {row["reference_id"]: row["kind"] for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench")
    parser.add_argument("matches", nargs="+")
    args = parser.parse_args()
    bench = Path(args.bench)
    kinds = reference_kinds(bench)
    gt = read_ground_truth(bench / "ground_truth.csv")
    truth = set(zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist()))
    shown = sorted(set(kinds.values()))
    print("| matches | copies found >= 0.5 | " + " | ".join(f"false >= {t}: {k}" for t in THRESHOLDS for k in shown)
          + " |")
    print("| --- " * (2 + len(THRESHOLDS) * len(shown)) + "|")
    for path in args.matches:
        rows = list(read_matches(path))
        found = {(q, r) for q, r, s in rows if s >= 0.5 and (q, r) in truth}
        false = {t: Counter(kinds.get(r, "?") for q, r, s in rows if s >= t and (q, r) not in truth)
                 for t in THRESHOLDS}
        cells = [str(false[t][k]) for t in THRESHOLDS for k in shown]
        print(f"| {path} | {len(found)} of {len(truth)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
