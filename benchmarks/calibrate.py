"""Fit the re-ranking calibration and measure what each feature adds, from `match --explain` output.

    copyscope match QUERIES --index IDX --background BG --explain explain.jsonl --out m.csv
    .venv/bin/python benchmarks/calibrate.py explain.jsonl:ground_truth.csv [more ...] [--holdout e.jsonl:gt.csv]
    .venv/bin/python benchmarks/calibrate.py SETS... --leave-one-out   # each set scored by a fit on the others

Fits two logistic calibrations on the labelled candidate pairs of every tuning set given: the score, "the
query contains a copy of the reference" (the ground truth), and the reverse score, "the reference contains the
query" (a copy whose edits add no foreign content: none of CONTAINING_EDITS in its query_meta.csv chain).
Both are printed in the order of --features (default MATCH_FEATURES) for matching.reranking.PACKAGED_CALIBRATIONS
and, with --out, written as the JSON that `copyscope index --calibration` takes. Then the main fit without each
feature, and micro-AP, recall at precision 0.9, recall@1, the expected calibration error and precision / recall
at scores >= 0.5 and 0.9 of several scorings of each set's pairs, held-out sets (not fitted on) included.
--leave-one-out scores each tuning set by a fit on the other ones instead (a choice of features or L2 judged
without the held-out half), beside the ceiling that no score can pass: the set's copies among the candidates,
and among those verified by 4 or more inliers.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from copyscope.matching.metrics import at_score_thresholds, compute_metrics, is_probability, reliability
from copyscope.matching.reranking import FEATURES, MATCH_FEATURES, SCORE_NORMS, RerankOptions
from copyscope.matching.scoring import Calibration, FittedCalibration, fit_logistic
from copyscope.pipeline.formats import read_ground_truth
from copyscope.pipeline.index_files import read_manifest
from copyscope.pipeline.second_look import FEW_INLIERS  # a pair with fewer counts as not verified


# Edits that put the reference inside foreign content: the query then contains the reference, not the reverse.
CONTAINING_EDITS = ("paste_into", "screenshot", "meme", "overlay_photo")


def containing_queries(meta_csv: Path) -> set[str]:
    """Queries of a benchmark whose edit chain holds one of CONTAINING_EDITS (query_meta.csv transforms)."""
    with open(meta_csv, newline="", encoding="utf-8") as f:
        return {row["query_id"] for row in csv.DictReader(f)
                if any(edit in CONTAINING_EDITS for edit, _ in json.loads(row["transforms"]))}


def load_set(spec: str, features: tuple[str, ...] = MATCH_FEATURES):
    """explain.jsonl:ground_truth.csv (query_meta.csv beside it) -> rows, gt, (N, F) `features`, (N,) copy labels,
    (N,) "the reference contains the query" labels."""
    explain, gt_csv = spec.split(":")
    with open(explain) as f:
        rows = [json.loads(line) for line in f]
    gt = read_ground_truth(gt_csv)
    truth = set(zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist()))
    containing = containing_queries(Path(gt_csv).with_name("query_meta.csv"))
    y = np.array([(r["query_id"], r["reference_id"]) in truth for r in rows], float)
    contained = y * np.array([r["query_id"] not in containing for r in rows], float)
    missing = sorted({f for r in rows for f in features if f not in r})
    if missing:
        raise SystemExit(f"{explain} has no {', '.join(missing)}: match again with this copyscope to fit them")
    x = np.array([[r[f] for f in features] for r in rows])
    return rows, gt, x, y, contained


def without_level(rows: list[dict], x: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    """(N, F) `features` with the two global scores raw (background level 0) instead of stretched."""
    x = x.copy()
    x[:, features.index("best_view")] = [r["best_view_score"] for r in rows]
    x[:, features.index("whole_image")] = [r["whole_image_score"] or 0.0 for r in rows]
    return x


def report(name: str, rows, gt, score) -> None:
    m = compute_metrics([r["query_id"] for r in rows], [r["reference_id"] for r in rows], score,
                        gt.query_ids, gt.reference_ids)
    line = f"  {name:38s} uAP {m.uap:.3f}  R@P90 {m.recall_at_p90:.3f}  R@1 {m.recall_at_1:.3f}"
    if is_probability(score):
        at = {p.threshold: p for p in at_score_thresholds(m.curve)}
        shown = "  ".join(f">= {t}: P {at[t].precision:.3f} R {at[t].recall:.3f}" if at[t].precision is not None
                          else f">= {t}: none" for t in (0.5, 0.9))
        line += f"  ECE {reliability(score, m.is_true).ece:.3f}  {shown}"
    print(line)


def leave_one_out(specs: list[str], sets: list, l2: float) -> None:
    """Report each set of `sets` (load_set) scored by the calibration fitted on the others, and its ceiling."""
    for i, (spec, (rows, gt, x, y, _)) in enumerate(zip(specs, sets)):
        others = [s for j, s in enumerate(sets) if j != i]
        weights, bias = fit_logistic(np.concatenate([s[2] for s in others]), np.concatenate([s[3] for s in others]),
                                     l2=l2)
        verified = y.astype(bool) & (np.array([r.get("inliers", 0) for r in rows]) >= FEW_INLIERS)
        copies = int(gt.has_copy.sum())
        print(f"{spec}\n  ceiling: of {copies} copies {int(y.sum())} are candidates ({y.sum() / copies:.3f}), "
              f"{int(verified.sum())} with >= {FEW_INLIERS} inliers ({verified.sum() / copies:.3f})")
        report("fitted on the other sets", rows, gt, Calibration(tuple(weights), bias)(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="explain.jsonl:ground_truth.csv")
    parser.add_argument("--holdout", nargs="*", default=[], help="explain.jsonl:ground_truth.csv, evaluated only")
    parser.add_argument("--l2", type=float, default=0.01, help="L2 penalty of the logistic fit")
    parser.add_argument("--index", default=None, help="the index the explain files were matched against: its model "
                        "and local features are what the calibration is fitted for")
    parser.add_argument("--score-norm", default="stretch", choices=SCORE_NORMS)
    parser.add_argument("--features", default=",".join(MATCH_FEATURES),
                        help=f"comma-separated features to fit (default: all a match computes; {','.join(FEATURES)} "
                        "for a calibration dedup can use too)")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="only score each set by a fit on the others (at least two sets; no --out)")
    parser.add_argument("--out", default=None, help="write the calibration here (JSON for `copyscope index "
                        "--calibration`; needs --index)")
    args = parser.parse_args()
    if args.out and not args.index:
        parser.error("--out needs --index")
    if args.leave_one_out and (args.out or len(args.sets) < 2):
        parser.error("--leave-one-out needs two or more sets and writes no calibration")
    features = tuple(args.features.split(","))
    unknown = set(features) - set(MATCH_FEATURES)
    if unknown or not {"best_view", "whole_image"} <= set(features):
        parser.error(f"--features: choose among {', '.join(MATCH_FEATURES)}, best_view and whole_image included")
    sets = [load_set(s, features) for s in args.sets]
    if args.leave_one_out:
        leave_one_out(args.sets, sets, args.l2)
        return
    held = [load_set(s, features) for s in args.holdout]
    x = np.concatenate([s[2] for s in sets])
    y = np.concatenate([s[3] for s in sets])
    weights, bias = fit_logistic(x, y, l2=args.l2)
    reverse_weights, reverse_bias = fit_logistic(x, np.concatenate([s[4] for s in sets]), l2=args.l2)
    rounded = lambda w, b: Calibration(tuple(round(float(v), 3) for v in w), round(b, 3))  # noqa: E731
    print(f"{int(y.sum())} true pairs of {len(y)}; fitted weights ({', '.join(features)}):")
    print("  Calibration(weights=(" + ", ".join(f"{w:.3f}" for w in weights) + f"), bias={bias:.3f})")
    print("  reverse=Calibration(weights=(" + ", ".join(f"{w:.3f}" for w in reverse_weights)
          + f"), bias={reverse_bias:.3f})")
    if args.out:
        manifest = read_manifest(args.index)
        region = manifest.get("region_model")
        fitted = FittedCalibration(rounded(weights, bias), features, manifest["model"]["name"], manifest["local"],
                                   RerankOptions(score_norm=args.score_norm).calibrated_as,
                                   rounded(reverse_weights, reverse_bias), region["name"] if region else None,
                                   manifest.get("whitening"))
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(fitted.to_dict(), f, indent=2)
        print(f"wrote {args.out}")
    ablations = {f"without {f}": [i for i, g in enumerate(features) if g != f] for f in features}
    fits = {name: fit_logistic(x[:, keep], y, l2=args.l2) for name, keep in ablations.items()}
    unlevelled = fit_logistic(np.concatenate([without_level(s[0], s[2], features) for s in sets]), y, l2=args.l2)
    for spec, (rows, gt, xs, _, _) in zip(args.sets + args.holdout, sets + held):
        print(spec)
        whole = np.array([-1.0 if r["whole_image_score"] is None else r["whole_image_score"] for r in rows])
        report("global descriptor (whole image)", rows, gt, whole)
        report("global, best view (regions)", rows, gt, np.array([r["best_view_score"] for r in rows]))
        report("stretched global, best view", rows, gt, xs[:, features.index("best_view")])
        report("calibrated, all features", rows, gt, Calibration(tuple(weights), bias)(xs))
        report("the same, refitted without background level", rows, gt,
               Calibration(tuple(unlevelled[0]), unlevelled[1])(without_level(rows, xs, features)))
        for name, keep in ablations.items():
            w, b = fits[name]
            report(name, rows, gt, Calibration(tuple(w), b)(xs[:, keep]))


if __name__ == "__main__":
    main()
