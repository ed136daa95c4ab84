"""What one view costs the model: milliseconds an image, one at a time and in batches of same-sized views.

    .venv/bin/python benchmarks/view_cost.py [--model sscd] [--sizes 288x288,288x384] [--batches 4,8,32]

Random pixels (the cost of a convolutional network does not depend on them), the model as the pipeline builds
it (`ModelSpec.build`, every core), each setting timed three times after a warm-up and the best run kept.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from copyscope.pipeline.model_spec import ModelSpec


def best_seconds(run, repeats: int = 3) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--sizes", default="288x288,288x384", help="HxW of the views, comma-separated")
    parser.add_argument("--batches", default="4,8,32", help="batch sizes to compare with one at a time")
    parser.add_argument("--views", type=int, default=32, help="views timed in each setting")
    args = parser.parse_args()
    model = ModelSpec(args.model).build()
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        views = rng.integers(0, 256, (args.views, h, w, 3), np.uint8)
        one = best_seconds(lambda: [model.embed_resized(views[i:i + 1]) for i in range(len(views))]) / len(views)
        print(f"{args.model} {h}x{w}: one at a time {1000 * one:.1f} ms a view", flush=True)
        for b in (int(v) for v in args.batches.split(",")):
            model.max_batch = b
            batched = best_seconds(lambda: model.embed_resized(list(views))) / len(views)
            print(f"  batches of {b:2d}: {1000 * batched:.1f} ms a view ({one / batched:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
