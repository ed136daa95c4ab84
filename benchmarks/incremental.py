"""Incremental `index` on a real folder: first run, +20 images, -10 images; and the engine's warm latency.

    .venv/bin/python benchmarks/incremental.py ../shared/photos --work /tmp/incr

Indexes all photos but 20 (a folder of links) plus 30 edited copies of other photos (so the first run
holds 1,009 references), then adds the 20 and runs `index` again, then deletes 10 reference files and
runs it again, timing each whole command; checks that edited copies of the deleted
photos no longer match them (and did before). Then opens the index in process (CopyIndex.open) and
matches one image at a time, warm, printing p50 / p90 latency and whether Ray was started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copyscope.pipeline.augment import apply_chain, sample_chain
from copyscope.pipeline.decode import decode_image


def copyscope(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", *args, "--quiet"], capture_output=True,
                          text=True, env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def best_refs(csv: Path) -> dict[str, tuple[str, float]]:
    best = {}
    for line in csv.read_text().splitlines()[1:]:
        q, r, s = line.split(",")
        best.setdefault(q, (r, float(s)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--work", required=True)
    parser.add_argument("--latency-queries", type=int, default=30)
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    refs, queries = work / "refs", work / "queries"
    refs.mkdir(parents=True), queries.mkdir()
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    first, later = photos[:-20], photos[-20:]
    for p in first:
        (refs / p.name).symlink_to(p.resolve())
    deleted = first[:10]
    rng = np.random.default_rng(0)
    for p in first[100:130]:  # more references: edited copies of other photos, as libraries hold them
        image = decode_image(p)
        chain = sample_chain(rng, image.shape[0], image.shape[1], n_edits=(1, 2), kinds=["photometric"])
        Image.fromarray(apply_chain(image, chain)).save(refs / f"{p.stem}_edited.jpg", quality=85)
    for p in deleted:  # an edited copy of each photo that will be deleted
        image = decode_image(p)
        chain = sample_chain(rng, image.shape[0], image.shape[1], n_edits=(1, 2), kinds=["crop", "text"])
        Image.fromarray(apply_chain(image, chain)).save(queries / f"{p.stem}_copy.jpg", quality=85)

    t_first = copyscope("index", str(refs), "--out", str(work / "idx"))
    for p in later:
        (refs / p.name).symlink_to(p.resolve())
    t_add = copyscope("index", str(refs), "--out", str(work / "idx"))
    copyscope("match", str(queries), "--index", str(work / "idx"), "--out", str(work / "before.csv"), "--k", "1")
    for p in deleted:
        (refs / p.name).unlink()
    t_del = copyscope("index", str(refs), "--out", str(work / "idx"))
    copyscope("match", str(queries), "--index", str(work / "idx"), "--out", str(work / "after.csv"), "--k", "1")
    before, after = best_refs(work / "before.csv"), best_refs(work / "after.csv")
    hits_before = sum(before[f"{p.stem}_copy"][0] == p.stem for p in deleted)
    hits_after = sum(after.get(f"{p.stem}_copy", ("",))[0] == p.stem for p in deleted)
    print(f"first index of {len(first) + 30} images: {t_first:.1f} s")
    print(f"+{len(later)} photos, index again: {t_add:.1f} s = {t_add / t_first:.1%} of the first run")
    print(f"-{len(deleted)} photos, index again: {t_del:.1f} s = {t_del / t_first:.1%} of the first run")
    print(f"copies of the deleted photos matched to them: before {hits_before}/{len(deleted)}, "
          f"after {hits_after}/{len(deleted)}")
    scores = [after[f"{p.stem}_copy"][1] for p in deleted if f"{p.stem}_copy" in after]
    print("after-deletion top-1 scores of those copies: " + ", ".join(f"{s:.3f}" for s in scores))

    import ray

    from copyscope.pipeline.engine import CopyIndex

    engine = CopyIndex.open(work / "idx")
    n, mean, top = engine.catalog.feature_bytes()
    print(f"feature store: {n} references, {mean} bytes mean, {top} bytes max per reference")
    probe = [(p.stem, str(p)) for p in later[: args.latency_queries]]
    engine.match(probe[:1])  # warm: model built, FAISS and catalog open
    times = []
    for one in probe:
        start = time.perf_counter()
        engine.match([one])
        times.append(time.perf_counter() - start)
    print(f"engine.match of one image, in process, warm, {len(engine)} references: "
          f"p50 {1000 * np.median(times):.0f} ms, p90 {1000 * np.percentile(times, 90):.0f} ms "
          f"({len(times)} queries); Ray started: {ray.is_initialized()}")


if __name__ == "__main__":
    main()
