"""Images/s of `copyscope index` end to end against a bare loop of the same model on the same images.

    .venv/bin/python benchmarks/throughput.py ../shared/photos [--model sscd] [--repeat 1]

The bare loop is the floor any pipeline pays: decode (same decoder, same JPEG draft hint), resize,
run the model one image at a time with every core given to the runtime. The pipeline number is
the whole `copyscope index --local-features none` command in a fresh process (the same work as
the loop: Python start, Ray start, actors, shards, FAISS index and manifest written). Both run back
to back in this session; the ratio is printed. The default `index`, which also extracts and stores
RootSIFT features for verification, is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from copyscope.descriptors import resize_image
from copyscope.pipeline.decode import DecodeError, decode_image
from copyscope.pipeline.files import list_images
from copyscope.pipeline.model_spec import ModelSpec


def bare_loop(paths: list[str], spec: ModelSpec) -> float:
    """Images/s of decode + resize + embed, one image at a time, in this process."""
    model = spec.build(num_threads=os.cpu_count())
    model.embed_resized([resize_image(model.cfg, decode_image(paths[0], min_side=model.cfg.size))])  # warm up
    start = time.perf_counter()
    for path in paths:
        try:
            image = decode_image(path, min_side=model.cfg.size)
        except DecodeError:
            continue
        model.embed_resized([resize_image(model.cfg, image)])
    return len(paths) / (time.perf_counter() - start)


def index_command(folder: str, model: str, *extra: str) -> tuple[float, dict]:
    """Images/s of the `copyscope index` command, wall clock, and its summary."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "copyscope.jobs.cli", "index", folder, "--out", out, "--model", model, "--quiet", *extra]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary["images"] / seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--repeat", type=int, default=1, help="alternate bare/pipeline runs this many times")
    args = parser.parse_args()
    paths = [p for _, p in list_images(args.folder).entries]
    print(f"{len(paths)} images, model {args.model}, {os.cpu_count()} cores")
    ratios = []
    for _ in range(args.repeat):
        bare = bare_loop(paths, ModelSpec(args.model))
        piped, summary = index_command(args.folder, args.model, "--local-features", "none")
        ratios.append(piped / bare)
        print(f"bare loop {bare:.1f} img/s | copyscope index --local-features none {piped:.1f} img/s end to end "
              f"({summary['seconds']:.1f} s inside the job) | ratio {piped / bare:.2f}", flush=True)
        with_local, _ = index_command(args.folder, args.model)
        print(f"copyscope index (default: + RootSIFT for verification) {with_local:.1f} img/s | "
              f"ratio {with_local / bare:.2f}", flush=True)
    print(f"ratio (median of {len(ratios)}): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
