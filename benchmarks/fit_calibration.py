"""Fit the calibration of one model on benchmarks built from the tuning half of the photos only.

    .venv/bin/python benchmarks/fit_calibration.py ../shared/photos --work /tmp/fit [--model sscd_distilled]

Builds the `benchmark make` sets of TUNING from the tuning half (benchmarks/halves.py): templated content and
look-alike distractors, so the fit sees distractors harder and more varied than the references (a plain set
added to them made the fit less cautious: held-out precision at 0.5 fell from 0.95 to 0.86 with look-alikes).
Indexes their references with the model and the default local features, runs the default `match --explain`
(k = 10 = the verified candidates, so the explain rows are every verified candidate whatever the scores), and
fits both calibrations (the score and the reverse score) on those pairs with benchmarks/calibrate.py, which
writes WORK/calibration.json for `copyscope index --calibration` and prints the PACKAGED_CALIBRATIONS lines.
The sets of HELD_OUT, from the held-out half (never fitted on), are reported beside them (--no-holdout skips
them). Each step is skipped when its output exists, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import make_halves  # noqa: E402

from copyscope.matching.local_features import LocalSpec  # noqa: E402
from copyscope.matching.reranking import DEFAULT_NORM, FEATURES, MATCH_FEATURES, PACKAGED_CALIBRATIONS  # noqa: E402
from copyscope.matching.scoring import FittedCalibration  # noqa: E402
from copyscope.matching.whitening import WhiteningSpec  # noqa: E402
from copyscope.pipeline.model_spec import ModelSpec, region_model_choice  # noqa: E402

TEMPLATES = ["--templates", "3"]  # 3 screenshot frames, 3 meme styles, 3 shared backgrounds, 20 photos each
# (name, seed, benchmark make options)
TUNING = (("tl", 11, TEMPLATES + ["--lookalikes"]), ("t", 12, TEMPLATES), ("l", 13, ["--lookalikes"]))
HELD_OUT = (("t", 21, TEMPLATES), ("tl", 21, TEMPLATES + ["--lookalikes"]), ("l", 21, ["--lookalikes"]),
            ("plain", 21, []))


def copyscope(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])


def explained(work: Path, half: Path, name: str, seed: int, make: list[str], model: str, provisional: Path,
              extra: list[str], variant: str = "") -> str:
    """Benchmark, index and `match --explain` of one set (each skipped when done) -> "explain.jsonl:gt.csv".
    variant: a suffix of the index and explain names (another region model: another index of one benchmark)."""
    name = f"{half.name}_{seed}_{name}"
    bench, idx, explain = work / f"bench_{name}", work / f"idx_{name}{variant}", work / f"explain_{name}{variant}.jsonl"
    if not bench.exists():
        copyscope("benchmark", "make", str(half), "--out", str(bench), "--seed", str(seed), "--quiet", *make)
    if not idx.exists():
        copyscope("index", str(bench / "references"), "--out", str(idx), "--model", model, "--calibration",
                  str(provisional), "--quiet", *extra)
    if not explain.exists():
        copyscope("match", str(bench / "queries"), "--index", str(idx), "--out", str(work / f"m_{name}.csv"),
                  "--k", "10", "--explain", str(explain), "--settle", "off", "--quiet")  # every query's regions
    return f"{explain}:{bench / 'ground_truth.csv'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--full-local-features", action="store_true",
                        help="fit for references stored whole (LocalSpec.uncompressed), not the compact default")
    parser.add_argument("--region-model", default="same", help="`copyscope index --region-model` (default same)")
    parser.add_argument("--whitening", default="collection", choices=("collection", "none"),
                        help="fit for indexes that whiten by their references (default) or for raw descriptors")
    parser.add_argument("--features", default=None,
                        help="comma-separated features to fit (default: all a match computes when whitened; without "
                        f"whitening {','.join(FEATURES)}, so that dedup, which scores raw, can use the calibration)")
    parser.add_argument("--no-holdout", action="store_true", help="fit only; do not report the held-out sets")
    args = parser.parse_args()
    local = LocalSpec.uncompressed() if args.full_local_features else LocalSpec()
    region = region_model_choice(args.region_model, ModelSpec(args.model))
    extra = ["--region-model", args.region_model] + (["--full-local-features"] if args.full_local_features else [])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    halves = make_halves(args.photos, work / "halves")
    # Any weights serve for matching while fitting: the explain rows are all verified candidates.
    provisional = work / "provisional.json"
    start = PACKAGED_CALIBRATIONS[0]
    whitening = WhiteningSpec().to_dict() if args.whitening == "collection" else None
    provisional.write_text(json.dumps(FittedCalibration(start.calibration, start.features, args.model, local.to_dict(),
                                                        DEFAULT_NORM, None, region.name if region else None,
                                                        whitening).to_dict()))
    variant = (f"_regions_{region.name}" if region else "") + ("_raw" if whitening is None else "")
    sets = [explained(work, halves["tune"], *s, args.model, provisional, extra, variant) for s in TUNING]
    held = [] if args.no_holdout else [explained(work, halves["holdout"], *s, args.model, provisional, extra, variant)
                                       for s in HELD_OUT]
    index = work / f"idx_tune_{TUNING[0][1]}_{TUNING[0][0]}{variant}"
    cmd = [sys.executable, str(Path(__file__).with_name("calibrate.py")), *sets, "--index", str(index),
           "--out", str(work / "calibration.json"),
           "--features", args.features or ",".join(MATCH_FEATURES if whitening else FEATURES)]
    cmd += ["--holdout", *held] if held else []
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
