"""What each re-ranking part adds, measured with `copyscope match` + `copyscope evaluate` on a benchmark.

    .venv/bin/python benchmarks/rerank_ablation.py BENCH_DIR --work /tmp/ablation

BENCH_DIR is a `copyscope benchmark make` folder. Indexes its references (with local features) and
its background (global only), then runs `match` in several configurations and prints micro-AP,
recall at precision 0.9, recall@1, recall@1 on paste + screenshot queries, and queries/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from copyscope.jobs.evaluate import evaluate

CONFIGS = {
    "global descriptor only": ["--rerank", "none"],
    "+ background normalisation": ["--rerank", "none", "--background", "{bg}"],
    "+ local verification": ["--rerank", "verify", "--background", "{bg}"],
    "+ region search (default `match`)": ["--rerank", "full", "--background", "{bg}"],
    "default without background": ["--rerank", "full"],
}


def copyscope(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", *args, "--quiet"], capture_output=True, text=True,
                          env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench")
    parser.add_argument("--work", required=True, help="folder for indexes, matches and reports")
    args = parser.parse_args()
    bench, work = Path(args.bench), Path(args.work)
    idx, bg = work / "index", work / "background"
    if not (idx / "manifest.json").exists():
        copyscope("index", str(bench / "references"), "--out", str(idx))
    if not (bg / "manifest.json").exists():
        copyscope("index", str(bench / "background"), "--out", str(bg), "--local-features", "none")
    n_queries = len(list((bench / "queries").iterdir()))
    print("| configuration | uAP | recall@P90 | recall@1 | R@1 paste+screenshot | queries/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, extra in CONFIGS.items():
        out = work / name.split(" (")[0].replace(" ", "_").replace("+", "plus")
        seconds = copyscope("match", str(bench / "queries"), "--index", str(idx), "--out", str(out) + ".csv",
                            *[a.format(bg=bg) for a in extra])
        m = evaluate(bench / "ground_truth.csv", str(out) + ".csv", out, meta_csv=bench / "query_meta.csv",
                     progress=False)
        kinds = m["recall_at_1_by_kind"]
        counts = m["positives_by_kind"]
        hard = sum(kinds[k] * counts[k] for k in ("paste", "screenshot")) / sum(counts[k] for k in ("paste", "screenshot"))
        print(f"| {name} | {m['uAP']:.3f} | {m['recall_at_p90']:.3f} | {m['recall_at_1']:.3f} | {hard:.3f} | "
              f"{n_queries / seconds:.2f} |", flush=True)
        (out / "metrics_row.json").write_text(json.dumps({"config": name, **m, "seconds": seconds}))


if __name__ == "__main__":
    main()
