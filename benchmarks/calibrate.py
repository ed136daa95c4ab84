"""Fit the re-ranking calibration and measure what each feature adds, from `match --explain` output.

    copyscope match QUERIES --index IDX --background BG --explain explain.jsonl --out m.csv
    .venv/bin/python benchmarks/calibrate.py explain.jsonl:ground_truth.csv [more ...] [--holdout e.jsonl:gt.csv]

Fits one logistic calibration on the labelled candidate pairs of every tuning set given (printed in
FEATURES order for matching.reranking.PACKAGED_CALIBRATIONS; with --out, written as the JSON that
`copyscope index --calibration` takes), and the same fit without each feature,
then prints micro-AP, recall at precision 0.9 and recall@1 of several scorings of each set's pairs,
held-out sets (not fitted on) included.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from copyscope.matching.metrics import compute_metrics
from copyscope.matching.reranking import FEATURES, SCORE_NORMS, RerankOptions
from copyscope.matching.scoring import Calibration, FittedCalibration, fit_logistic
from copyscope.pipeline.formats import read_ground_truth
from copyscope.pipeline.index_files import read_manifest


def load_set(spec: str):
    explain, gt_csv = spec.split(":")
    with open(explain) as f:
        rows = [json.loads(line) for line in f]
    gt = read_ground_truth(gt_csv)
    truth = set(zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist()))
    y = np.array([(r["query_id"], r["reference_id"]) in truth for r in rows], float)
    x = np.array([[r[f] for f in FEATURES] for r in rows])
    return rows, gt, x, y


def report(name: str, rows, gt, score) -> None:
    m = compute_metrics([r["query_id"] for r in rows], [r["reference_id"] for r in rows], score,
                        gt.query_ids, gt.reference_ids)
    print(f"  {name:38s} uAP {m.uap:.3f}  R@P90 {m.recall_at_p90:.3f}  R@1 {m.recall_at_1:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="explain.jsonl:ground_truth.csv")
    parser.add_argument("--holdout", nargs="*", default=[], help="explain.jsonl:ground_truth.csv, evaluated only")
    parser.add_argument("--l2", type=float, default=0.01, help="L2 penalty of the logistic fit")
    parser.add_argument("--index", default=None, help="the index the explain files were matched against: its model "
                        "and local features are what the calibration is fitted for")
    parser.add_argument("--score-norm", default="stretch", choices=SCORE_NORMS)
    parser.add_argument("--out", default=None, help="write the calibration here (JSON for `copyscope index "
                        "--calibration`; needs --index)")
    args = parser.parse_args()
    if args.out and not args.index:
        parser.error("--out needs --index")
    sets = [load_set(s) for s in args.sets]
    held = [load_set(s) for s in args.holdout]
    x = np.concatenate([s[2] for s in sets])
    y = np.concatenate([s[3] for s in sets])
    weights, bias = fit_logistic(x, y, l2=args.l2)
    print(f"{int(y.sum())} true pairs of {len(y)}; fitted weights ({', '.join(FEATURES)}):")
    print("  Calibration(weights=(" + ", ".join(f"{w:.3f}" for w in weights) + f"), bias={bias:.3f})")
    if args.out:
        manifest = read_manifest(args.index)
        fitted = FittedCalibration(Calibration(tuple(round(float(w), 3) for w in weights), round(bias, 3)), FEATURES,
                                   manifest["model"]["name"], manifest["local"],
                                   RerankOptions(score_norm=args.score_norm).calibrated_as)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(fitted.to_dict(), f, indent=2)
        print(f"wrote {args.out}")
    ablations = {f"without {f}": [i for i, g in enumerate(FEATURES) if g != f] for f in FEATURES}
    fits = {name: fit_logistic(x[:, keep], y, l2=args.l2) for name, keep in ablations.items()}
    for spec, (rows, gt, xs, _) in zip(args.sets + args.holdout, sets + held):
        print(spec)
        whole = np.array([-1.0 if r["whole_image_score"] is None else r["whole_image_score"] for r in rows])
        report("global descriptor (whole image)", rows, gt, whole)
        report("global, best view (regions)", rows, gt, np.array([r["best_view_score"] for r in rows]))
        report("stretched global, best view", rows, gt, xs[:, FEATURES.index("best_view")])
        report("calibrated, all features", rows, gt, Calibration(tuple(weights), bias)(xs))
        for name, keep in ablations.items():
            w, b = fits[name]
            report(name, rows, gt, Calibration(tuple(w), b)(xs[:, keep]))


if __name__ == "__main__":
    main()
