"""The match cascade on held-out benchmarks: accuracy and speed of `match --settle S` against `--settle off`.

    .venv/bin/python benchmarks/cascade.py ../shared/photos --work /tmp/cascade [--settle off 0.99 0.95 0.9]

Builds two benchmarks from the held-out half of the photos (benchmarks/halves.py; nothing is tuned on it):
plain (seed 21) and templates + look-alike distractors (seed 21, `--templates 3 --lookalikes`), indexes their
references with the default model and local features, then runs the default `match` once per settle level,
one after the other in this process's session, and evaluates each. Prints, per set and level: micro-AP,
ECE, precision / recall at scores >= 0.5 and >= 0.9, the queries whose regions were searched, the whole
command's seconds and queries/s, and the speed-up over `--settle off`. Benchmarks and indexes are reused
when WORK holds them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halves import make_halves  # noqa: E402

SETS = (("plain", 21, []), ("templates_lookalikes", 21, ["--templates", "3", "--lookalikes"]))


def copyscope(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--work", required=True)
    parser.add_argument("--settle", nargs="+", default=["off", "0.99", "0.95", "0.9"])
    args = parser.parse_args()
    work = Path(args.work)
    holdout = make_halves(args.photos, work / "halves")["holdout"]
    print("set | settle | uAP | ECE | P@0.5 | R@0.5 | P@0.9 | R@0.9 | regions searched | s | queries/s | speed-up")
    for name, seed, options in SETS:
        bench, idx = work / f"bench_{name}", work / f"idx_{name}"
        if not bench.exists():
            copyscope("benchmark", "make", str(holdout), "--out", str(bench), "--seed", str(seed), "--quiet", *options)
        if not idx.exists():
            copyscope("index", str(bench / "references"), "--out", str(idx), "--quiet")
        base = None
        for settle in args.settle:
            out = work / f"m_{name}_{settle}.csv"
            start = time.perf_counter()
            summary = json.loads(copyscope("match", str(bench / "queries"), "--index", str(idx), "--out", str(out),
                                           "--settle", settle, "--quiet"))
            seconds = time.perf_counter() - start
            base = base or seconds
            ev = json.loads(copyscope("evaluate", str(bench / "ground_truth.csv"), str(out), "--out",
                                      str(work / f"eval_{name}_{settle}"), "--quiet"))
            at = ev["at_threshold"]
            print(f"{name} | {settle} | {ev['uAP']:.4f} | {ev['ece']:.4f} | {at['0.5']['precision']:.3f} | "
                  f"{at['0.5']['recall']:.3f} | {at['0.9']['precision']:.3f} | {at['0.9']['recall']:.3f} | "
                  f"{summary['regions_searched']}/{summary['matched']} | {seconds:.1f} | "
                  f"{summary['matched'] / seconds:.2f} | {base / seconds:.2f}x", flush=True)


if __name__ == "__main__":
    main()
