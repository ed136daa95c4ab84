"""Speed of copyscope beside a bare model loop on the same images: images/s, queries/s, per-stage times.

    .venv/bin/python benchmarks/speed.py ../shared/photos --work /tmp/speed [--match-only] \
        [--match "" "--settle off" "--region-size 160"] [--region-models sscd_distilled]

In one run, one after the other on this machine:
1. the bare loop: decode (same decoder and JPEG draft hint), resize and the model, one image at a time with
   every core given to the runtime, over every photo;
2. `copyscope index` on the same photos, the whole command in a fresh process, with `--local-features none`
   (the same work as the loop) and by default (+ the local features verification reads); ratio to (1);
3. a benchmark built from the held-out half (benchmarks/halves.py: 200 references, 400 queries of which 200
   are copies, seed 31), its references indexed once; the default `match` of its queries, whole command
   (Ray start included), then once per extra option set of --match and once per --region-models index:
   queries/s and micro-AP, and the queries/s over the bare loop's images/s;
4. the same match in this process without Ray, every stage timed (decode, region proposals, resize, local
   features, embedding of whole images and of regions, FAISS search, verification; the rest is scoring and
   bookkeeping): seconds and share of the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade import copyscope as run_cli  # noqa: E402
from halves import make_halves  # noqa: E402
from throughput import bare_loop  # noqa: E402

from copyscope.descriptors.base import Descriptor  # noqa: E402
from copyscope.jobs.match import match_folder  # noqa: E402
from copyscope.matching.index import SearchIndex  # noqa: E402
from copyscope.matching.reranking import RerankOptions  # noqa: E402
from copyscope.pipeline import engine, stages, verify_stage  # noqa: E402
from copyscope.pipeline.files import list_images  # noqa: E402
from copyscope.pipeline.model_spec import ModelSpec  # noqa: E402


def copyscope(*args: str) -> tuple[dict, float]:
    """Run a command in a fresh process -> (its JSON summary, wall seconds)."""
    start = time.perf_counter()
    stdout = run_cli(*args)
    return json.loads(stdout.strip().splitlines()[-1]), time.perf_counter() - start


class StageClock:
    """Seconds spent in named functions of the pipeline while active (wrapped in place, restored on exit)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.embedding = "embed whole images"

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name if name != "embed" else self.embedding] += time.perf_counter() - start
        return wrapper

    def _pass(self, fn):
        def wrapper(index, images, runner, *, regions, **kwargs):
            self.embedding = "embed whole images" if not regions else (
                "embed regions" if kwargs.get("whole") is False else "embed whole images and regions")
            return fn(index, images, runner, regions=regions, **kwargs)
        return wrapper

    @contextlib.contextmanager
    def active(self):
        targets = [(stages, "decode_image", "decode"), (stages, "propose_regions", "region proposals"),
                   (stages, "resize_image", "resize"), (stages, "extract_local_features", "local features"),
                   (Descriptor, "embed_resized", "embed"), (SearchIndex, "search", "FAISS search"),
                   (verify_stage, "verify_stored", "verify")]
        saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
        saved.append((engine.CopyIndex, "embed_queries", engine.CopyIndex.embed_queries))
        for owner, attr, name in targets:
            setattr(owner, attr, self._timed(name, getattr(owner, attr)))
        engine.CopyIndex.embed_queries = self._pass(engine.CopyIndex.embed_queries)
        try:
            yield self
        finally:
            for owner, attr, fn in saved:
                setattr(owner, attr, fn)


def evaluate(bench: Path, matches: Path, out: Path) -> dict:
    return copyscope("evaluate", str(bench / "ground_truth.csv"), str(matches), "--out", str(out), "--quiet")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--match", nargs="+", default=[""], metavar="OPTIONS",
                        help='`match` runs to time, each its extra options in one string ("": the default)')
    parser.add_argument("--region-models", nargs="*", default=[], metavar="NAME",
                        help="also the default `match` against the references indexed with --region-model NAME")
    parser.add_argument("--match-only", action="store_true", help="skip (1) and (2)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    photos = [p for _, p in list_images(args.photos).entries]
    print(f"{len(photos)} photos, model {args.model}, {os.cpu_count()} cores", flush=True)

    bare = bare_loop(photos, ModelSpec(args.model))
    print(f"bare loop (decode + resize + model): {bare:.1f} img/s", flush=True)
    if not args.match_only:
        for extra in (["--local-features", "none"], []):
            out = work / f"index_all{'_none' if extra else ''}"
            shutil.rmtree(out, ignore_errors=True)
            summary, seconds = copyscope("index", args.photos, "--out", str(out), "--model", args.model, "--quiet",
                                         *extra)
            rate = summary["images"] / seconds
            print(f"index {' '.join(extra) or '(default: + local features)'}: {seconds:.1f} s, {rate:.1f} img/s, "
                  f"ratio to the bare loop {rate / bare:.2f}", flush=True)

    bench, idx = work / "bench", work / "idx"
    if not bench.exists():
        holdout = make_halves(args.photos, work / "halves")["holdout"]
        copyscope("benchmark", "make", str(holdout), "--out", str(bench), "--n-references", "200", "--n-queries",
                  "400", "--seed", "31", "--quiet")
    if not idx.exists():
        copyscope("index", str(bench / "references"), "--out", str(idx), "--model", args.model, "--quiet")
    runs = [(idx, options, options or "(default)") for options in args.match]
    for name in args.region_models:
        region_idx = work / f"idx_{name}"
        if not region_idx.exists():
            copyscope("index", str(bench / "references"), "--out", str(region_idx), "--model", args.model,
                      "--region-model", name, "--quiet")
        runs.append((region_idx, "", f"(index --region-model {name})"))
    queries = len(list_images(bench / "queries").entries)
    for n, (index, options, label) in enumerate(runs):
        out = work / f"match_{n}.csv"
        summary, seconds = copyscope("match", str(bench / "queries"), "--index", str(index), "--out", str(out),
                                     "--quiet", *options.split())
        ev = evaluate(bench, out, work / f"eval_{n}")
        print(f"match {label}: {queries} queries in {seconds:.1f} s, {queries / seconds:.2f} "
              f"queries/s (ratio to the bare loop {queries / seconds / bare:.2f}); uAP {ev['uAP']:.4f}, regions "
              f"searched {summary['regions_searched']}, pairs verified {summary['verified_pairs']}", flush=True)

    clock = StageClock()
    with clock.active():
        start = time.perf_counter()
        match_folder(bench / "queries", idx, work / "match_stages.csv", rerank=RerankOptions(), use_ray=False,
                     progress=False)
        total = time.perf_counter() - start
    print(f"match in process, no Ray: {total:.1f} s, {queries / total:.2f} queries/s; stages:")
    for name, seconds in sorted(clock.seconds.items(), key=lambda t: -t[1]):
        print(f"  {name:34s} {seconds:7.1f} s  {100 * seconds / total:5.1f} %  {1000 * seconds / queries:6.1f} ms/query")
    print(f"  {'the rest (scoring, bookkeeping)':34s} {total - sum(clock.seconds.values()):7.1f} s")


if __name__ == "__main__":
    main()
