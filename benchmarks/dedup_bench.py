"""Dedup speed and pair precision / recall on photos with planted edited copies and near misses,
beside the peer `immaculate --method sscd` timed in the same run.

    .venv/bin/python benchmarks/dedup_bench.py ../shared/photos --work /tmp/dedup_bench \
        --immaculate /tmp/immvenv/bin/immaculate

The folder: `--n` photos (every dog breed of the ImageNet-named photos first: near misses of one
another, then random others), `--copied` of them with 1-3 edited copies each (crops, text / emoji
overlays, screenshots, colour jitter, greyscale, re-encoding, rescaling; 1-2 edits a copy), all
mixed in sub-folders under new names. Positives are the pairs inside a planted group (a photo and
its copies); a tool's predicted pairs are the pairs inside its groups. immaculate needs Python 3.12:
install it in its own venv, never in the project's.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from copyscope.pipeline.augment import apply_chain, sample_chain  # noqa: E402
from copyscope.pipeline.decode import decode_image  # noqa: E402
from copyscope.pipeline.files import list_images  # noqa: E402

EDIT_KINDS = ("crop", "text", "emoji", "screenshot", "color_jitter", "grayscale", "jpeg", "rescale")
DOG_CLASSES = range(151, 269)  # ImageNet class indices of the dog breeds


def build_folder(photos: Path, out: Path, n: int, copied: int, seed: int) -> list[set[str]]:
    """Write the planted folder -> planted groups (paths relative to `out`)."""
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    dogs = [names[i] for i in DOG_CLASSES if i < len(names)][:n]
    others = [x for x in names if x not in set(dogs)]
    chosen = dogs + [others[i] for i in rng.choice(len(others), n - len(dogs), replace=False)]
    sources = {x: f"photos/{i % 7}/{x}" for i, x in enumerate(chosen)}
    for name, rel in sources.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos / name, out / rel)
    groups = []
    for k, name in enumerate(rng.choice(chosen, copied, replace=False)):
        image = decode_image(photos / name)
        group = {sources[name]}
        for c in range(int(rng.integers(1, 4))):
            chain = sample_chain(rng, *image.shape[:2], n_edits=(1, 2), kinds=EDIT_KINDS)
            rel = f"incoming/{(k + c) % 5}/img_{k:04d}_{c}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(apply_chain(image, chain)).save(out / rel, quality=85)
            group.add(rel)
        groups.append(group)
    return groups


def pairs_of(groups) -> set[frozenset]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def precision_recall(predicted: list, planted: list[set[str]]) -> dict:
    pred, truth = pairs_of(predicted), pairs_of(planted)
    hit = len(pred & truth)
    return {"pairs_predicted": len(pred), "pairs_true": len(truth), "precision": hit / max(1, len(pred)),
            "recall": hit / max(1, len(truth))}


def timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc, time.perf_counter() - start


def run_copyscope(folder: Path, out: Path, args) -> tuple[list, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "copyscope.jobs.cli", "dedup", str(folder), "--out", str(out), "--model", args.model,
           "--quiet", "--device", "cpu", *(["--threshold", str(args.threshold)] if args.threshold is not None else [])]
    _, seconds = timed(cmd, cwd=ROOT)
    return json.loads((out / "groups.json").read_text()), seconds


def run_immaculate(folder: Path, args) -> tuple[list, float]:
    proc, seconds = timed([args.immaculate, "--json", "--method", args.peer_method, str(folder)])
    found = json.loads(proc.stdout)
    rel = lambda p: os.path.relpath(p if os.path.isabs(p) else folder / p, folder)  # noqa: E731
    return [[rel(p) for p in g] for g in found["exact"] + found["near"]], seconds


def link_sweep(pairs_csv: Path, planted: list[set[str]]) -> list[str]:
    """Precision / recall of single links (inliers >= m and score >= t) over a grid of m and t."""
    with open(pairs_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "near"]
    truth = pairs_of(planted)
    out = []
    for m, t in itertools.product((4, 8, 12, 16), (0.3, 0.5, 0.9)):
        pred = {frozenset((r["a"], r["b"])) for r in rows if int(r["inliers"]) >= m and float(r["score"]) >= t}
        hit = len(pred & truth)
        out.append(f"inliers>={m} score>={t}: {len(pred)} links, precision {hit / max(1, len(pred)):.4f}, "
                   f"recall {hit / max(1, len(truth)):.4f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photos")
    p.add_argument("--work", required=True, help="scratch folder (outside the repository)")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--copied", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="sscd")
    p.add_argument("--threshold", type=float, default=None, help="copyscope's --threshold (default: its own)")
    p.add_argument("--immaculate", default=shutil.which("immaculate"), help="the peer's executable (none: skip)")
    p.add_argument("--peer-method", default="sscd")
    args = p.parse_args()
    work = Path(args.work)
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    planted = build_folder(Path(args.photos), folder, args.n, args.copied, args.seed)
    files = len(list_images(folder).entries)
    (work / "planted.json").write_text(json.dumps([sorted(g) for g in planted], indent=1))
    print(f"folder: {files} files, {len(planted)} planted groups, {len(pairs_of(planted))} planted pairs")
    groups, seconds = run_copyscope(folder, work / "out", args)
    results = {"copyscope": {"seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2),
                             **precision_recall(groups, planted)}}
    results["copyscope"]["link_sweep"] = link_sweep(work / "out" / "pairs.csv", planted)
    print(json.dumps(results, indent=2), flush=True)
    if args.immaculate:
        groups, seconds = run_immaculate(folder, args)
        results[f"immaculate --method {args.peer_method}"] = {
            "seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2), **precision_recall(groups, planted)}
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
