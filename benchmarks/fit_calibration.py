"""Fit the calibration of one model on benchmarks built from the tuning half of the photos only.

    .venv/bin/python benchmarks/fit_calibration.py ../shared/photos --work /tmp/fit --model sscd_distilled

Builds `benchmark make` sets from the tuning half (benchmarks/halves.py; seeds --seeds), indexes their
references with the model and the default local features, runs the default `match --explain` (k = 10 =
the verified candidates, so the explain rows are every verified candidate whatever the scores), and fits
the logistic calibration on those pairs with benchmarks/calibrate.py, which writes WORK/calibration.json
for `copyscope index --calibration` and prints the PACKAGED_CALIBRATIONS line. Add --holdout-seed to also
report the fit on a benchmark from the held-out half (never fitted on). --templates K [--template-size N]
and --lookalikes are passed to every `benchmark make` (both halves), so the fit sees templated content and
look-alikes; the folders they build are named apart (e.g. bench_tune_11_t3x20_la).
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
from copyscope.matching.reranking import DEFAULT_NORM, FEATURES, PACKAGED_CALIBRATIONS  # noqa: E402
from copyscope.matching.scoring import FittedCalibration  # noqa: E402


def copyscope(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])


def hard_cases(args) -> tuple[list[str], str]:
    """The `benchmark make` options of the hard cases asked for, and the tag of the folders they build."""
    make = ["--templates", str(args.templates), "--template-size", str(args.template_size)] if args.templates else []
    tag = f"_t{args.templates}x{args.template_size}" if args.templates else ""
    return (make + ["--lookalikes"], tag + "_la") if args.lookalikes else (make, tag)


def explained(work: Path, half: Path, seed: int, model: str, provisional: Path, extra: list[str],
              make: tuple[list[str], str] = ([], "")) -> str:
    name = f"{half.name}_{seed}{make[1]}"
    bench, idx = work / f"bench_{name}", work / f"idx_{name}"
    if not bench.exists():
        copyscope("benchmark", "make", str(half), "--out", str(bench), "--seed", str(seed), "--quiet", *make[0])
    copyscope("index", str(bench / "references"), "--out", str(idx), "--model", model, "--calibration",
              str(provisional), "--quiet", *extra)
    explain = work / f"explain_{name}.jsonl"
    copyscope("match", str(bench / "queries"), "--index", str(idx), "--out", str(work / f"m_{name}.csv"),
              "--k", "10", "--explain", str(explain), "--quiet")
    return f"{explain}:{bench / 'ground_truth.csv'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--holdout-seed", type=int, default=None)
    parser.add_argument("--full-local-features", action="store_true",
                        help="fit for references stored whole (LocalSpec.uncompressed), not the compact default")
    parser.add_argument("--templates", type=int, default=0, metavar="K", help="benchmark make --templates K")
    parser.add_argument("--template-size", type=int, default=20, help="benchmark make --template-size")
    parser.add_argument("--lookalikes", action="store_true", help="benchmark make --lookalikes")
    args = parser.parse_args()
    make = hard_cases(args)
    local = LocalSpec.uncompressed() if args.full_local_features else LocalSpec()
    extra = ["--full-local-features"] if args.full_local_features else []
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    halves = make_halves(args.photos, work / "halves")
    # Any weights serve for matching while fitting: the explain rows are all verified candidates.
    provisional = work / "provisional.json"
    start = PACKAGED_CALIBRATIONS[0]
    provisional.write_text(json.dumps(FittedCalibration(start.calibration, FEATURES, args.model, local.to_dict(),
                                                        DEFAULT_NORM).to_dict()))
    sets = [explained(work, halves["tune"], seed, args.model, provisional, extra, make) for seed in args.seeds]
    held = [explained(work, halves["holdout"], args.holdout_seed, args.model, provisional, extra, make)] \
        if args.holdout_seed is not None else []
    index = work / f"idx_tune_{args.seeds[0]}{make[1]}"
    cmd = [sys.executable, str(Path(__file__).with_name("calibrate.py")), *sets, "--index", str(index),
           "--out", str(work / "calibration.json")] + (["--holdout", *held] if held else [])
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
