"""Warm latency of one upload matched in process through the service's engine (BankEngine), one after another.

    .venv/bin/python benchmarks/single_match.py --work /tmp/serve_load [--n 40]

WORK is the folder benchmarks/serve_load.py built (its bank of about 10,000 items in WORK/data; no server may
be running on it). Opens the engine, matches one upload to warm it up, then N uploads of WORK/queries (evenly
spread over the sorted names: edited copies of bank items and photos not in the bank), each recorded like
`POST /v1/match`. Prints p50 / p90 / p99 / mean milliseconds and the time in each stage (speed.StageClock).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import StageClock  # noqa: E402

from copyscope.pipeline.bank_engine import BankEngine  # noqa: E402
from copyscope.pipeline.bank_store import Actor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    work = Path(args.work)
    uploads = sorted((work / "queries").iterdir())
    chosen = [uploads[i] for i in np.linspace(0, len(uploads) - 1, args.n + 1).round().astype(int)]
    engine = BankEngine.open(work / "data")
    actor = Actor("single_match benchmark", "matcher")
    try:
        print(f"{engine.items_held()} items in memory; warm-up on {chosen[0].name}", flush=True)
        engine.match(actor, chosen[0].read_bytes())
        clock, times, decided = StageClock(), [], 0
        with clock.active():
            for path in chosen[1:]:
                image = path.read_bytes()
                start = time.perf_counter()
                record = engine.match(actor, image)
                times.append(time.perf_counter() - start)
                decided += any(m["decision"] == "match" for m in record["matches"])
    finally:
        engine.close()
    ms = 1000 * np.asarray(times)
    print(f"{len(ms)} uploads: p50 {np.percentile(ms, 50):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms, "
          f"p99 {np.percentile(ms, 99):.0f} ms, mean {ms.mean():.0f} ms; {decided} decided `match`")
    for name, seconds in sorted(clock.seconds.items(), key=lambda t: -t[1]):
        print(f"  {name:34s} {1000 * seconds / len(ms):6.1f} ms an upload  {100 * seconds / ms.sum() * 1000:5.1f} %")


if __name__ == "__main__":
    main()
