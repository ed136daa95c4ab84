"""Does a score mean the same in a small collection as in a large one? The default `index` + `match` on subsets.

    .venv/bin/python benchmarks/collection_size.py BENCH --work W [--sizes 16,48,100,all] [--seed 0]

The collection whitening (matching.whitening) depends on the references: shrunk towards none while the
collection is small, close to full in a large one; the calibration was fitted at the sizes of the tuning
benchmarks (218 and 385 references). For each size, a random subset of BENCH's references is indexed by the default
`copyscope index` (seeded), and matched by the default `copyscope match` with the queries of those
references' copies plus as many queries without a copy in the subset (of the others, so that a distractor
whose reference is left out is a query without a copy). Prints `copyscope evaluate`'s micro-AP, expected
calibration error and precision / recall at scores >= 0.5 and >= 0.9, per size. Use held-out benchmarks.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_calibration import copyscope  # noqa: E402


def subset(bench: Path, out: Path, size: int | None, seed: int) -> None:
    """out/references, out/queries (symbolic links) and out/ground_truth.csv of `size` references."""
    with open(bench / "ground_truth.csv", newline="") as f:
        truth = {r["query_id"]: r["reference_id"] for r in csv.DictReader(f)}
    references = sorted(p.stem for p in (bench / "references").iterdir())
    rng = np.random.default_rng(seed)
    kept = set(references if size is None else rng.choice(references, min(size, len(references)), replace=False))
    copies = sorted(q for q, r in truth.items() if r in kept)
    others = sorted(q for q, r in truth.items() if r not in kept)
    negatives = sorted(rng.choice(others, min(len(copies), len(others)), replace=False)) if others else []
    for folder, names in (("references", kept), ("queries", set(copies) | set(negatives))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for path in (bench / folder).iterdir():
            if path.stem in names and not (out / folder / path.name).exists():
                (out / folder / path.name).symlink_to(path.resolve())
    with open(out / "ground_truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_id", "reference_id"])
        w.writerows([(q, truth[q]) for q in copies] + [(q, "") for q in negatives])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench")
    parser.add_argument("--work", required=True)
    parser.add_argument("--sizes", default="16,48,100,all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for size in args.sizes.split(","):
        out = Path(args.work) / f"size_{size}"
        subset(Path(args.bench), out, None if size == "all" else int(size), args.seed)
        if not (out / "index").exists():
            copyscope("index", str(out / "references"), "--out", str(out / "index"), "--quiet")
        if not (out / "matches.csv").exists():
            copyscope("match", str(out / "queries"), "--index", str(out / "index"), "--out", str(out / "matches.csv"),
                      "--quiet")
        copyscope("evaluate", str(out / "ground_truth.csv"), str(out / "matches.csv"), "--out", str(out / "eval"),
                  "--quiet")
        m = json.loads((out / "eval" / "metrics.json").read_text())
        saved = out / "index" / "whitening.npz"
        fitted = f"whitening fitted on {int(np.load(saved)['fitted_on'])}" if saved.exists() else "raw"
        at = {t: " ".join(f"{k[0].upper()} {v:.3f}" if v is not None else f"{k[0].upper()} -"
                          for k, v in m["at_threshold"][t].items() if k != "count") for t in ("0.5", "0.9")}
        print(f"{len(list((out / 'references').iterdir())):>4} references, {m['num_positives']} copies, {fitted}: "
              f"uAP {m['uAP']:.3f}  ECE {m['ece']:.3f}  >= 0.5: {at['0.5']}  >= 0.9: {at['0.9']}")


if __name__ == "__main__":
    main()
