"""`demo`: the main job end to end on photos that ship with the installed packages, in about a minute.

Writes into OUT (default ./copyscope-demo):
  photos/          scikit-image's sample photos (astronaut, coffee, chelsea, rocket, ...) and
                   matplotlib's grace_hopper, gray ones as RGB, long side at most 512 px
  bench/           a DISC2021-style benchmark made from them by `copyscope benchmark make`: references,
                   queries edited on the fly with the augment registry (about half are copies), ground truth
  index/           `copyscope index bench/references` (sscd, RootSIFT features)
  matches.csv      `copyscope match bench/queries --index index` (the default full re-ranking)
  eval/            `copyscope evaluate`: metrics.json, pr_curve.png, report.html
  dedup/           `copyscope dedup bench/queries --index index`: groups.json, pairs.csv, report.html
  demo.json        the headline numbers printed at the end

Every step runs through `copyscope.jobs.cli.main` exactly as typed on the command line, with the commands'
defaults (sscd, RootSIFT, full re-ranking; Ray only where a command's `--ray auto` picks it, and every Ray a
command starts is shut down by it), so no process outlives the demo. Running it again
replaces an earlier demo's folder; a non-empty folder that is not a demo's is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from copyscope.descriptors.errors import UserError

DEFAULT_OUT = "copyscope-demo"
MARKER = ".copyscope-demo"
MAX_SIDE = 512
# skimage.data functions of real photos (and textures), all shipped in the wheel; cat() repeats chelsea()
# and stereo_motorcycle() gives two views of one scene, of which only the left is used.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "stereo_motorcycle", "colorwheel", "logo", "camera", "coins", "moon", "page", "text", "clock",
                  "cell", "brick", "grass", "gravel")
SMALL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page", "clock", "brick")


@dataclass(frozen=True)
class DemoSize:
    photos: tuple[str, ...]
    n_references: int
    n_queries: int


FULL = DemoSize(SKIMAGE_PHOTOS + ("grace_hopper",), 10, 16)
SMALL = DemoSize(SMALL_PHOTOS, 4, 4)


@dataclass
class DemoSummary:
    out_dir: str
    photos: int
    references: int
    queries: int
    copies: int
    micro_ap: float
    recall_at_p90: float
    recall_at_1: float
    duplicates: int
    groups: int
    copies_grouped: int
    wrong_links: int
    reports: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def sample_photos(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{name: (H, W, 3) uint8} of the packaged sample photos named, long side at most MAX_SIDE."""
    from PIL import Image
    import skimage.data

    photos = {}
    for name in names:
        if name == "grace_hopper":
            from matplotlib import cbook

            with cbook.get_sample_data("grace_hopper.jpg") as f:
                image = np.asarray(Image.open(f).convert("RGB"))
        else:
            image = getattr(skimage.data, name)()
            image = image[0] if isinstance(image, tuple) else image
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.shape[2] == 4:  # RGBA on white
            alpha = image[..., 3:4].astype(np.float32) / 255
            image = (image[..., :3] * alpha + 255 * (1 - alpha)).round()
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
        pil.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        photos[name] = np.asarray(pil)
    return photos


def _prepare_out(out: Path) -> None:
    """Make `out` empty: create it, or clear an earlier demo's folder; refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: give a folder with --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UserError(f"{out} is not empty and holds no earlier demo: give a new folder with --out")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `copyscope demo`; the demo replaces this folder when run again\n")


def _cli(argv: list[str]) -> dict:
    """Run one `copyscope` command in this process; -> its JSON summary. A failed step raises UserError."""
    from copyscope.jobs.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc != 0:
        raise UserError(f"demo step `copyscope {' '.join(argv)}` failed (see the error above)")
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _ground_truth(path: Path) -> dict[str, str]:
    import csv

    with open(path, newline="") as f:
        return {row["query_id"]: row["reference_id"] for row in csv.DictReader(f)}


def _score_groups(groups: list[list[str]], truth: dict[str, str]) -> tuple[int, int]:
    """-> (queries grouped with the reference they copy, links that are wrong) for dedup's star groups."""
    right = wrong = 0
    for keeper, *members in groups:
        for member in members:
            query = Path(member).stem
            if keeper == f"index:{truth.get(query)}":
                right += 1
            else:  # linked to another reference or to a query: wrong unless both copy the same reference
                other = truth.get(Path(keeper).stem, keeper.removeprefix("index:"))
                wrong += not (truth.get(query) and truth.get(query) == other)
    return right, wrong


def run_demo(out_dir: str | os.PathLike = DEFAULT_OUT, *, small: bool = False, seed: int = 0,
             ray_address: str | None = None, log=print) -> DemoSummary:
    """Build, index, match, evaluate and dedup the demo benchmark in `out_dir` (layout in the module docstring).

    small: 10 photos, 4 references and 4 queries (for tests) instead of 21, 10 and 16.
    log: called with each progress line (print by default; a no-op silences the demo).
    """
    size = SMALL if small else FULL
    out = Path(out_dir)
    _prepare_out(out)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def step(name: str, argv: list[str]) -> dict:
        t = time.perf_counter()
        result = _cli(argv)
        seconds[name] = round(time.perf_counter() - t, 1)
        log(f"  {name:10s}{seconds[name]:5.1f} s  copyscope {' '.join(argv)}")
        return result

    from PIL import Image

    photos = sample_photos(size.photos)
    (out / "photos").mkdir()
    for name, image in photos.items():
        Image.fromarray(image).save(out / "photos" / f"{name}.png")
    seconds["photos"] = round(time.perf_counter() - start, 1)
    log(f"copyscope demo: {len(photos)} sample photos from scikit-image and matplotlib -> {_shown(out / 'photos')}")
    bench, index, matches = out / "bench", out / "index", out / "matches.csv"
    # Each command runs with its defaults, as typed: with `--ray auto` a batch this small runs in this process
    # and starts no Ray; --ray-address (or $RAY_ADDRESS) sends the batch work to that cluster instead.
    ray = ["--ray-address", ray_address] if ray_address else []
    b = step("benchmark", ["benchmark", "make", str(out / "photos"), "--out", str(bench), "--n-references",
                           str(size.n_references), "--n-queries", str(size.n_queries), "--seed", str(seed), "--quiet"])
    step("index", ["index", str(bench / "references"), "--out", str(index), "--quiet", *ray])
    step("match", ["match", str(bench / "queries"), "--index", str(index), "--out", str(matches), "--quiet", *ray])
    m = step("evaluate", ["evaluate", str(bench / "ground_truth.csv"), str(matches), "--out", str(out / "eval"),
                          "--meta", str(bench / "query_meta.csv"), "--quiet"])
    d = step("dedup", ["dedup", str(bench / "queries"), "--out", str(out / "dedup"), "--index", str(index),
                       "--quiet", *ray])
    groups = json.loads((out / "dedup" / "groups.json").read_text())
    right, wrong = _score_groups(groups, _ground_truth(bench / "ground_truth.csv"))
    seconds["total"] = round(time.perf_counter() - start, 1)
    summary = DemoSummary(
        out_dir=os.fspath(out), photos=len(photos), references=b["n_references"], queries=b["n_queries"],
        copies=b["n_positive_queries"], micro_ap=m["uAP"], recall_at_p90=m["recall_at_p90"],
        recall_at_1=m["recall_at_1"], duplicates=d["duplicates"], groups=d["groups"], copies_grouped=right,
        wrong_links=wrong, reports={"evaluate": os.fspath(out / "eval" / "report.html"),
                                    "dedup": os.fspath(out / "dedup" / "report.html")},
        seconds=seconds)
    (out / "demo.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def format_summary(s: DemoSummary) -> str:
    """The headline numbers and report paths, as the demo prints them."""
    return "\n".join([
        f"benchmark: {s.references} references, {s.queries} queries ({s.copies} edited copies of a reference, "
        f"{s.queries - s.copies} edits of photos in no reference)",
        f"match + evaluate: micro-AP {s.micro_ap:.3f}   recall@P90 {_num(s.recall_at_p90)}   "
        f"recall@1 {s.recall_at_1:.3f}",
        f"dedup: {s.duplicates} duplicates found in {s.groups} groups; {s.copies_grouped} of {s.copies} copies "
        f"grouped with their reference, {s.wrong_links} wrong links",
        "reports:",
        *(f"  {kind:9s}{_shown(path)}" for kind, path in s.reports.items()),
        f"done in {s.seconds['total']:.0f} s; everything is in {_shown(s.out_dir)}/ (demo.json: these numbers)",
    ])


def _num(value: float | None) -> str:
    return "n/a (precision 0.9 never reached)" if value is None else f"{value:.3f}"


def _shown(path: str) -> str:
    """`path` relative to the current folder when inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return f"./{p.relative_to(Path.cwd())}" if p != Path.cwd() else "."
    except ValueError:
        return os.fspath(p)


def main(args) -> int:
    """CLI entry (`copyscope demo`): run, print the summary; -> exit code."""
    summary = run_demo(args.out, small=args.small, seed=args.seed, ray_address=args.ray_address,
                       log=lambda line: print(line, flush=True))
    print(format_summary(summary), flush=True)
    sys.stdout.flush()
    return 0
