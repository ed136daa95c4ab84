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

--templates K adds the hard cases of pipeline/augment/templates.py, none of them a copy of anything:
K screenshot frames, K meme styles and K shared backgrounds, each put on --template-size photos found
nowhere else in the folder (one image per photo), and --template-size photos cut into two crops that
do not overlap (both written, the photo not); and a quarter of the planted copies are put into a
random template instead of their own edits (still copies of their photo). The predicted pairs that
fall inside one template or one crop pair are counted apart ("false_pairs_by_case"). --half tune|holdout
uses only that half of the photos (benchmarks/halves.py), so a threshold tuned here never sees the other.
--against-index indexes the photos written whole (the folder's photos/) as references and dedups the rest
(incoming/) against them with `dedup --index`, as an upload backlog against a library: an original is then
`index:<its id>` in the groups, and the peer is not run.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from halves import half_of  # noqa: E402

from copyscope.pipeline.augment import EditContext, apply_chain, sample_chain  # noqa: E402
from copyscope.pipeline.augment.templates import (  # noqa: E402
    crop_pair, fine_grained_group, sample_templates, template_step,
)
from copyscope.pipeline.decode import decode_image  # noqa: E402
from copyscope.pipeline.files import list_images  # noqa: E402

EDIT_KINDS = ("crop", "text", "emoji", "screenshot", "color_jitter", "grayscale", "jpeg", "rescale")
N_DEFAULT, TEMPLATE_SIZE = 300, 20
TEMPLATED_COPIES = 0.25  # with --templates, the share of planted copies put into a template


def build_folder(photos: Path, out: Path, n: int | None, copied: int, seed: int, templates: int = 0,
                 template_size: int = TEMPLATE_SIZE, half: str | None = None
                 ) -> tuple[list[set[str]], dict[str, set[str]]]:
    """Write the planted folder -> (planted groups, the hard cases {"template <name>" | "crop pair <i>":
    files}), paths relative to `out`. n: photos written whole, every dog first (None: N_DEFAULT, or
    what the photos leave after the hard cases); half: only the photos of that half."""
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and (half is None or half_of(p.name) == half))
    dogs = [x for x in names if fine_grained_group(x) == "dog"]
    others = [x for x in names if fine_grained_group(x) != "dog"]
    hosts, templated, cut, others = _hard_photos(others, templates, template_size, seed)
    n = min(N_DEFAULT, len(dogs) + len(others)) if n is None else n
    dogs = dogs[:n]
    chosen = dogs + [others[i] for i in rng.choice(len(others), n - len(dogs), replace=False)]
    sources = {x: f"photos/{i % 7}/{x}" for i, x in enumerate(chosen)}
    for name, rel in sources.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos / name, out / rel)
    ctx = EditContext(lambda key: decode_image(photos / key))
    tmpls = sample_templates(np.random.default_rng([seed, 2]), templates, hosts)
    hard = {f"template {t.name}": set() for t in tmpls}
    template_rng, groups = np.random.default_rng([seed, 3]), []
    for k, name in enumerate(rng.choice(chosen, copied, replace=False)):
        image = decode_image(photos / name)
        group = {sources[name]}
        for c in range(int(rng.integers(1, 4))):
            chain = sample_chain(rng, *image.shape[:2], n_edits=(1, 2), kinds=EDIT_KINDS)
            rel = f"incoming/{(k + c) % 5}/img_{k:04d}_{c}.jpg"
            if tmpls and template_rng.random() < TEMPLATED_COPIES:
                template = tmpls[int(template_rng.integers(len(tmpls)))]
                chain = [template_step(template, template_rng)]
                hard[f"template {template.name}"].add(rel)
            _save(apply_chain(image, chain, ctx), out / rel)
            group.add(rel)
        groups.append(group)
    for i, (template, name) in enumerate(zip(np.repeat(tmpls, template_size), templated)):
        rel = f"incoming/{i % 5}/img_t{i:04d}.jpg"
        _save(apply_chain(decode_image(photos / name), [template_step(template, template_rng)], ctx), out / rel)
        hard[f"template {template.name}"].add(rel)
    for i, name in enumerate(cut):
        image = decode_image(photos / name)
        rels = [f"incoming/{(i + j) % 5}/img_c{i:04d}_{j}.jpg" for j in range(2)]
        for rel, box in zip(rels, crop_pair(template_rng, *image.shape[:2])):
            _save(apply_chain(image, [("crop", box)]), out / rel)
        hard[f"crop pair {i}"] = set(rels)
    return groups, hard


def _hard_photos(others: list[str], k: int, size: int, seed: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """Seeded draw of the photos the hard cases use, never written themselves -> (k background hosts,
    3 k size photos for the templates in sample_templates order, size photos to cut in two, the rest)."""
    if not k:
        return [], [], [], others
    need = k + 3 * k * size + size
    if need > len(others):
        raise SystemExit(f"{len(others)} photos (dogs aside) cannot give {3 * k} templates of {size} photos, "
                         f"{k} hosts and {size} crop pairs")
    order = [others[i] for i in np.random.default_rng([seed, 1]).permutation(len(others))]
    taken = set(order[:need])
    return order[:k], order[k : k + 3 * k * size], order[k + 3 * k * size : need], [x for x in others if x not in taken]


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=85)


def pairs_of(groups) -> set[frozenset]:
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(g), 2)}


def precision_recall(predicted: list, planted: list[set[str]], hard: dict[str, set[str]] | None = None) -> dict:
    """Pair precision and recall; with `hard`, the false pairs inside one hard case, by family."""
    pred, truth = pairs_of(predicted), pairs_of(planted)
    hit = len(pred & truth)
    out = {"pairs_predicted": len(pred), "pairs_true": len(truth), "precision": hit / max(1, len(pred)),
           "recall": hit / max(1, len(truth))}
    if hard:
        false = pred - truth
        out["false_pairs_by_case"] = {family: len(false & pairs_of(g for case, g in hard.items()
                                                                   if case.startswith(family)))
                                      for family in ("template screenshot", "template meme",
                                                     "template background", "crop pair")}
    return out


def timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc, time.perf_counter() - start


def run_copyscope(folder: Path, out: Path, args, *extra: str) -> tuple[list, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "copyscope.jobs.cli", "dedup", str(folder), "--out", str(out), "--model", args.model,
           "--quiet", "--device", "cpu", *(["--threshold", str(args.threshold)] if args.threshold is not None else []),
           *extra]
    _, seconds = timed(cmd, cwd=ROOT)
    return json.loads((out / "groups.json").read_text()), seconds


def against_index(folder: Path, work: Path, args, planted: list[set[str]], hard: dict[str, set[str]]
                  ) -> tuple[list, float, list[set[str]], dict[str, set[str]]]:
    """Index folder/photos, dedup folder/incoming with --index -> (groups, dedup seconds, planted and hard cases
    named as that dedup names them: "index:<id>" for a photo, paths relative to incoming/ for the rest)."""
    index = work / "photos_index"
    shutil.rmtree(index, ignore_errors=True)
    timed([sys.executable, "-m", "copyscope.jobs.cli", "index", str(folder / "photos"), "--out", str(index),
           "--model", args.model, "--quiet"], cwd=ROOT)
    groups, seconds = run_copyscope(folder / "incoming", work / "out", args, "--index", str(index))

    def renamed(path: str) -> str:
        top, rest = path.split("/", 1)
        return "index:" + os.path.splitext(rest)[0] if top == "photos" else rest

    return (groups, seconds, [{renamed(p) for p in g} for g in planted],
            {case: {renamed(p) for p in g} for case, g in hard.items()})


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
    p.add_argument("--n", type=int, default=None,
                   help=f"photos written whole (default {N_DEFAULT}, or what the half and --templates leave)")
    p.add_argument("--copied", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--templates", type=int, default=0, metavar="K", help="add the hard cases (module docstring)")
    p.add_argument("--template-size", type=int, default=TEMPLATE_SIZE, help="photos in each template, crop pairs")
    p.add_argument("--half", choices=("tune", "holdout"), default=None, help="only this half of the photos")
    p.add_argument("--model", default="sscd")
    p.add_argument("--threshold", type=float, default=None, help="copyscope's --threshold (default: its own)")
    p.add_argument("--immaculate", default=shutil.which("immaculate"), help="the peer's executable (none: skip)")
    p.add_argument("--against-index", action="store_true", help="dedup incoming/ against an index of photos/")
    p.add_argument("--peer-method", default="sscd")
    args = p.parse_args()
    work = Path(args.work)
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    planted, hard = build_folder(Path(args.photos), folder, args.n, args.copied, args.seed, args.templates,
                                 args.template_size, args.half)
    files = len(list_images(folder).entries)
    (work / "planted.json").write_text(json.dumps([sorted(g) for g in planted], indent=1))
    (work / "hard_cases.json").write_text(json.dumps({k: sorted(g) for k, g in hard.items()}, indent=1))
    print(f"folder: {files} files, {len(planted)} planted groups, {len(pairs_of(planted))} planted pairs, "
          f"{len(hard)} hard cases")
    if args.against_index:
        groups, seconds, planted, hard = against_index(folder, work, args, planted, hard)
        files = len(list_images(folder / "incoming").entries)
    else:
        groups, seconds = run_copyscope(folder, work / "out", args)
    results = {"copyscope": {"seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2),
                             **precision_recall(groups, planted, hard)}}
    results["copyscope"]["link_sweep"] = link_sweep(work / "out" / "pairs.csv", planted)
    print(json.dumps(results, indent=2), flush=True)
    if args.immaculate and not args.against_index:
        groups, seconds = run_immaculate(folder, args)
        results[f"immaculate --method {args.peer_method}"] = {
            "seconds": round(seconds, 2), "files_per_s": round(files / seconds, 2),
            **precision_recall(groups, planted, hard)}
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
