"""Build a DISC2021-style copy-detection benchmark from a folder of photos.

Layout written to `out_dir`:
    references/R000000.jpg ...   photos a query may copy
    queries/Q00000.jpg ...       edited photos: about half copy a reference, the rest copy a
                                 photo found nowhere in the benchmark
    background/B000000.jpg ...   photos in neither set (for whitening, score normalisation)
    ground_truth.csv             query_id,reference_id (empty reference: no copy)
    query_meta.csv               query_id,kind,transforms (the edit chain as JSON, with params)
    references_meta.csv          reference_id,kind,template,lookalike_of,transforms (only with templates
                                 or look-alikes)

The photos are split (seeded) into references, sources of queries without a copy, hosts (the
unrelated photos that copies are pasted into or overlaid with; never written, so no query holds a
reference by accident) and background. Names follow a shuffled order and reveal nothing. Every
photo passes once through JPEG at `QUALITY` before use, so a copy is an edit of the reference file
exactly as written. The same photos and seed give the same bytes in every file, whether queries
are rendered in this process or by the Ray stage (used when Ray is running, or with use_ray=True).

Hard cases, off by default (the files are then exactly those of a build without them):
- templates=K: K screenshot frames, K meme styles and K shared backgrounds (pipeline/augment/templates.py),
  each put on `template_size` photos. These 3 K template_size photos and K background hosts (never
  written) are drawn first; the other roles split the photos left, so their default sizes shrink in
  proportion. Of a template's own photos the first half (rounded up) are written as references of
  kind `template_<family>`, the rest become queries of that kind without a copy; and TEMPLATE_POSITIVES
  references that no other query copies are put into each template as queries of that kind whose copy
  is that plain reference. A templated query adds one of TEMPLATE_EXTRA_EDITS.
- lookalikes: each photo a query copies or starts from (not the templates' own) is cut into two crops
  that do not overlap (crop_pair): crop A is what the reference is written as (kind `plain_crop`; its
  copies edit that file) or what a query without a copy starts from (its chain begins with that crop),
  crop B is written as a reference of kind `lookalike_crop`; and each such photo in a fine-grained
  group (dogs, birds, snakes) moves the next photo of its group from the background to the references
  (kind `lookalike_class`), while there is one.
With either, references take their names from one seeded shuffle of all of them, and
references_meta.csv gives each one's kind (`plain` for a photo written whole), template name, the
reference (or, for a photo without one, the query) a look-alike looks like, and the edit chain that
made it from its photo ([] for a photo written whole).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from copyscope.descriptors.errors import UserError
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.augment import Chain, chain_shape, sample_chain
from copyscope.pipeline.augment.stage import PhotoPool, apply_chains_local, apply_chains_ray, encode_jpeg
from copyscope.pipeline.augment.templates import (
    Template, crop_pair, fine_grained_group, sample_templates, template_step,
)
from copyscope.pipeline.decode import DecodeError
from copyscope.pipeline.failures import Failure
from copyscope.pipeline.files import list_images

QUALITY = 90
QUERY_KINDS = ("crop", "geometric", "overlay", "paste", "screenshot", "meme", "photometric", "mixed")
# Edits that may follow a query's dominant edit, as re-shares add them.
EXTRA_EDITS = ("flip", "rescale", "color_jitter", "blur", "jpeg", "grayscale", "sharpen", "crop", "pad", "text",
               "emoji")
REFERENCE_FRACTION, QUERY_FRACTION, HOST_FRACTION = 0.4, 0.4, 0.1
TEMPLATE_SIZE = 20  # photos put into each template (the default of template_size)
TEMPLATE_POSITIVES = 2  # references put into each template as copied queries
TEMPLATE_EXTRA_EDITS = ("rescale", "jpeg")  # a templated query is re-shared with one of these
# Render-pool keys of reference files as written (a photo id, a relative path, never starts with "/").
_WRITTEN = "/references/"


@dataclass(frozen=True)
class Split:
    """Photo ids by role. positives: the references that get a copied query (a subset)."""

    references: list[str]
    positives: list[str]
    negatives: list[str]
    hosts: list[str]
    background: list[str]


@dataclass(frozen=True)
class BenchmarkSummary:
    """Counts of what was written. n_hosts: the photos paste and overlay queries use (not the hosts of
    shared backgrounds); reference_kinds: references by kind (references_meta.csv); n_templates: the
    templates used (3 K, less any whose background host fails to decode)."""

    out_dir: str
    n_references: int
    n_queries: int
    n_positive_queries: int
    n_background: int
    n_hosts: int
    kinds: dict[str, int]
    failures: list[Failure] = field(default_factory=list)
    reference_kinds: dict[str, int] = field(default_factory=dict)
    n_templates: int = 0


@dataclass(frozen=True)
class Reference:
    """A reference to write: `photo` as it is (chain None) or edited by `chain` (a crop, a template);
    kind, template and `of` (the photo a look-alike looks like): its row of references_meta.csv."""

    photo: str
    kind: str
    template: str = ""
    chain: Chain | None = None
    of: str = ""


def split_photos(ids: list[str], n_references: int | None = None, n_queries: int | None = None,
                 seed: int = 0) -> Split:
    """Seeded split of `ids` by role; defaults: 40 % references, 40 % queries (half of them
    copies), 10 % hosts, the rest background. Raises ValueError when the counts do not fit."""
    n = len(ids)
    n_ref = round(REFERENCE_FRACTION * n) if n_references is None else n_references
    n_q = round(QUERY_FRACTION * n) if n_queries is None else n_queries
    n_pos, n_hosts = n_q // 2, max(1, round(HOST_FRACTION * n))
    n_neg = n_q - n_pos
    if min(n_ref, n_q) < 0 or n_pos > n_ref or n_ref + n_neg + n_hosts > n:
        raise UserError(f"{n} photos cannot give {n_ref} references, {n_q} queries ({n_pos} copies, "
                         f"{n_neg} without) and {n_hosts} host photos")
    rng = np.random.default_rng([seed, 0])
    order = [ids[i] for i in rng.permutation(n)]
    refs, rest = order[:n_ref], order[n_ref:]
    positives = [refs[i] for i in sorted(rng.choice(n_ref, size=n_pos, replace=False))]
    return Split(refs, positives, rest[:n_neg], rest[n_neg : n_neg + n_hosts], rest[n_neg + n_hosts :])


def sample_query_chain(rng: np.random.Generator, kind: str, height: int, width: int,
                       other_keys: list[str]) -> Chain:
    """Edit chain of a query of `kind`: its dominant edit then 1-3 of EXTRA_EDITS;
    "mixed": 3-4 edits of any kind."""
    if kind == "mixed":
        return sample_chain(rng, height, width, (3, 4), None, other_keys)
    if kind not in QUERY_KINDS:
        raise KeyError(f"unknown query kind {kind!r}; known: {', '.join(QUERY_KINDS)}")
    chain = sample_chain(rng, height, width, (1, 1), [kind], other_keys)
    return chain + sample_chain(rng, *chain_shape(chain, height, width), (1, 3), EXTRA_EDITS)


def reserve_template_photos(ids: list[str], k: int, size: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded draw, before the split, of the photos templates=k needs -> (ids left for split_photos,
    k background hosts, 3 k size photos to put into templates); (ids, [], []) when k is 0."""
    if not k:
        return ids, [], []
    need = k * (3 * size + 1)
    if need >= len(ids):
        raise UserError(f"{len(ids)} photos cannot give {3 * k} templates of {size} photos and {k} hosts "
                        f"and leave any for the other roles")
    order = [ids[i] for i in np.random.default_rng([seed, 5]).permutation(len(ids))]
    return sorted(order[need:]), order[:k], order[k:need]


def make_benchmark(photos_dir: str | os.PathLike, out_dir: str | os.PathLike, *, n_references: int | None = None,
                   n_queries: int | None = None, seed: int = 0, progress: bool = True,
                   use_ray: bool | None = None, templates: int = 0, template_size: int = TEMPLATE_SIZE,
                   lookalikes: bool = False) -> BenchmarkSummary:
    """Write the benchmark (layout and hard cases in the module docstring) into `out_dir`, which must
    be empty or absent. Photos that fail to decode are left out and listed in the summary's failures.
    use_ray: None renders edited images with Ray if it is running, else in this process."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"benchmark folder {os.fspath(out)!r} is not empty")
    if templates < 0 or template_size < 2:
        raise UserError(f"templates must be >= 0 and template_size >= 2, got {templates} and {template_size}")
    listing = list_images(photos_dir)
    paths = dict(listing.entries)
    ids, template_hosts, template_photos = reserve_template_photos(sorted(paths), templates, template_size, seed)
    split = split_photos(ids, n_references, n_queries, seed)
    failures = list(listing.failures)
    sizes = _decoded_sizes(split.references + split.background + split.hosts + split.negatives + template_hosts
                           + template_photos, paths, failures)
    hosts = [h for h in split.hosts if h in sizes]
    drawn = sample_templates(np.random.default_rng([seed, 6]), templates, template_hosts)
    members = dict(zip((t.name for t in drawn), _template_members(split, template_photos, template_size, sizes, seed)))
    tmpls = [t for t in drawn if t.params.get("other") in sizes or "other" not in t.params]  # hosts that decode
    copied = split.positives + [p for t in tmpls for p in members[t.name]["positives"]]
    crops = _crop_pairs(copied + split.negatives, sizes, seed) if lookalikes else {}
    references, background = _plan_references(split, tmpls, members, copied, crops, sizes, lookalikes, seed)
    names = _reference_names(references, shuffle=bool(templates or lookalikes), seed=seed)
    written = _write_references([(r, n) for r, n in zip(references, names) if r.photo in sizes], out / "references",
                                paths, template_hosts, failures, progress, use_ray)
    bg_ids = _write_photos([(p, f"B{i:06d}") for i, p in enumerate(background) if p in sizes], out / "background",
                           paths, failures, progress)
    ref_ids = {ref.photo: name for ref, name in zip(references, names)
               if name in written and ref.kind in ("plain", "plain_crop")}
    queries = _plan_queries(split, tmpls, members, ref_ids, crops, sizes, hosts, seed)
    pool_paths = paths | {_WRITTEN + r: os.fspath(out / "references" / f"{r}.jpg") for r in ref_ids.values()}
    done = _render(queries, pool_paths, hosts + template_hosts, out / "queries", failures, progress, use_ray, "query")
    queries = [q for q in queries if q["id"] in done]
    written_refs = [(name, ref) for ref, name in zip(references, names) if name in written]
    _write_csvs(out, queries, _reference_rows(written_refs, ref_ids, queries) if templates or lookalikes else None)
    return BenchmarkSummary(os.fspath(out), len(written), len(queries), sum(bool(q["reference"]) for q in queries),
                            len(bg_ids), len(hosts), dict(Counter(q["kind"] for q in queries)), failures,
                            dict(Counter(ref.kind for _, ref in written_refs)), len(tmpls))


def _reference_rows(written: list[tuple[str, Reference]], ref_ids: dict[str, str], queries: list[dict]) -> list[tuple]:
    """Rows (reference_id, kind, template, lookalike_of, transforms) of references_meta.csv, by id;
    lookalike_of: the reference of the photo looked like, else its query without a copy."""
    query_of = {q["source"]: q["id"] for q in queries if not q["reference"]}
    return sorted((name, r.kind, r.template, ref_ids.get(r.of) or query_of.get(r.of, "") if r.of else "",
                   json.dumps(r.chain or [])) for name, r in written)


def _template_members(split: Split, photos: list[str], size: int, sizes: dict, seed: int) -> list[dict]:
    """For the i-th template (in sample_templates order): its "references", "negatives" (photos of
    photos[i size : (i + 1) size] that decode) and "positives" (references without a query of their own)."""
    copied = set(split.positives)
    spare = [r for r in split.references if r in sizes and r not in copied]
    spare = [spare[i] for i in np.random.default_rng([seed, 7]).permutation(len(spare))]
    out = []
    for i in range(len(photos) // size):
        own = [p for p in photos[i * size : (i + 1) * size] if p in sizes]
        half = (len(own) + 1) // 2
        out.append({"references": own[:half], "negatives": own[half:],
                    "positives": spare[i * TEMPLATE_POSITIVES : (i + 1) * TEMPLATE_POSITIVES]})
    return out


def _crop_pairs(photos: list[str], sizes: dict[str, tuple[int, int]], seed: int) -> dict[str, tuple[dict, dict]]:
    """{photo: (crop A, crop B) params} of the photos that decode (crop_pair, seeded)."""
    rng = np.random.default_rng([seed, 8])
    return {p: crop_pair(rng, *sizes[p]) for p in photos if p in sizes and max(sizes[p]) >= 2}


def _plan_references(split: Split, tmpls: list[Template], members: dict[str, dict], copied: list[str],
                     crops: dict, sizes: dict, lookalikes: bool, seed: int) -> tuple[list[Reference], list[str]]:
    """(the references to write, split's own first in their order; the background photos left)."""
    refs = [Reference(p, "plain_crop", chain=[("crop", crops[p][0])]) if p in crops else Reference(p, "plain")
            for p in split.references]
    background = split.background
    if lookalikes:
        refs += [Reference(p, "lookalike_crop", chain=[("crop", crops[p][1])], of=p) for p in copied + split.negatives
                 if p in crops]
        mates = _classmates([p for p in copied + split.negatives if p in sizes],
                            [b for b in background if b in sizes])
        refs += [Reference(mate, "lookalike_class", of=p) for p, mate in mates]
        background = [b for b in background if b not in {mate for _, mate in mates}]
    rng = np.random.default_rng([seed, 9])
    refs += [Reference(p, t.kind, t.name, [template_step(t, rng)])
             for t in tmpls for p in members[t.name]["references"]]
    return refs, background


def _classmates(photos: list[str], pool: list[str]) -> list[tuple[str, str]]:
    """(photo, class-mate): for each of `photos` in a fine-grained group, in order, the next unused
    photo of `pool` in that group, while there is one."""
    free: dict[str, list[str]] = {}
    for p in pool:
        if group := fine_grained_group(p):
            free.setdefault(group, []).append(p)
    return [(p, free[g].pop(0)) for p, g in zip(photos, map(fine_grained_group, photos)) if g and free.get(g)]


def _reference_names(references: list[Reference], shuffle: bool, seed: int) -> list[str]:
    """R<position> of each reference: its position in the list, or in a seeded shuffle of it."""
    order = np.random.default_rng([seed, 3]).permutation(len(references)) if shuffle else range(len(references))
    names = [""] * len(references)
    for i, j in enumerate(order):
        names[j] = f"R{i:06d}"
    return names


def _write_references(named: list[tuple[Reference, str]], folder: Path, paths: dict[str, str], others: list[str],
                      failures: list[Failure], progress: bool, use_ray: bool | None) -> set[str]:
    """Write each (reference, name): whole photos re-encoded, edited ones rendered; -> the names written."""
    whole = [(r.photo, n) for r, n in named if r.chain is None]
    written = set(_write_photos(whole, folder, paths, failures, progress).values())
    rows = [{"id": n, "source": r.photo, "chain": json.dumps(r.chain)} for r, n in named if r.chain is not None]
    return written | _render(rows, paths, others, folder, failures, progress, use_ray, "reference")


def _decoded(ids: list[str], paths: dict[str, str], failures: list[Failure], desc: str = "",
             progress: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """(photo id, (H, W, 3) uint8) of each photo that decodes; the others become failures."""
    pool = PhotoPool(paths)
    for pid in tqdm(ids, desc=desc, disable=not progress):
        try:
            yield pid, pool.load(pid)
        except DecodeError as e:
            failures.append(Failure(paths[pid], e.reason))


def _decoded_sizes(ids: list[str], paths: dict[str, str], failures: list[Failure]) -> dict[str, tuple[int, int]]:
    return {pid: image.shape[:2] for pid, image in _decoded(ids, paths, failures)}


def _write_photos(named: list[tuple[str, str]], folder: Path, paths: dict[str, str], failures: list[Failure],
                  progress: bool) -> dict[str, str]:
    """Re-encode each (photo id, name) as folder/<name>.jpg -> {photo id: name} of those written
    (photos that fail to decode become failures)."""
    folder.mkdir(parents=True, exist_ok=True)
    name_of, names = dict(named), {}
    for pid, image in _decoded(list(name_of), paths, failures, folder.name, progress):
        names[pid] = name_of[pid]
        with atomic_write(folder / f"{names[pid]}.jpg") as f:
            f.write(encode_jpeg(image, QUALITY))
    return names


def _plan_queries(split: Split, tmpls: list[Template], members: dict[str, dict], ref_ids: dict[str, str],
                  crops: dict, sizes: dict[str, tuple[int, int]], hosts: list[str], seed: int) -> list[dict]:
    """Rows {"id", "source", "reference", "kind", "chain"} in a shuffled order: the split's copies and
    queries without a copy (kinds balanced), then the templated ones. A copy of a reference written as
    a crop edits that file (source _WRITTEN + its id); a query without a copy starts with its crop A."""
    rng = np.random.default_rng([seed, 1])
    positives = [p for p in split.positives if p in ref_ids]
    negatives = [p for p in split.negatives if p in sizes]
    planned = [(p, ref_ids[p], k, None) for p, k in zip(positives, _balanced_kinds(rng, len(positives)))]
    planned += [(p, "", k, None) for p, k in zip(negatives, _balanced_kinds(rng, len(negatives)))]
    for t in tmpls:
        planned += [(p, ref_ids[p], t.kind, t) for p in members[t.name]["positives"] if p in ref_ids]
        planned += [(p, "", t.kind, t) for p in members[t.name]["negatives"]]
    queries = []
    for i, j in enumerate(rng.permutation(len(planned))):
        photo, reference, kind, template = planned[j]
        source, prefix, shape = _query_source(photo, reference, crops, sizes)
        chain_rng = np.random.default_rng([seed, 2, i])
        if template is None:
            chain = prefix + sample_query_chain(chain_rng, kind, *shape, hosts)
        else:
            step = template_step(template, chain_rng)
            chain = prefix + [step] + sample_chain(chain_rng, *chain_shape([step], *shape), (1, 1),
                                                   TEMPLATE_EXTRA_EDITS)
        queries.append({"id": f"Q{i:05d}", "source": source, "reference": reference, "kind": kind,
                        "chain": json.dumps(chain)})
    return queries


def _query_source(photo: str, reference: str, crops: dict, sizes: dict) -> tuple[str, Chain, tuple[int, int]]:
    """(render-pool key, chain prefix, (h, w) after the prefix) of a query of `photo`: a copy of a
    reference written as crop A edits that file; a query without a copy of a cropped photo starts
    with its crop A; any other query edits the photo."""
    if photo not in crops:
        return photo, [], sizes[photo]
    crop_a = [("crop", crops[photo][0])]
    shape = chain_shape(crop_a, *sizes[photo])
    return (_WRITTEN + reference, [], shape) if reference else (photo, crop_a, shape)


def _balanced_kinds(rng: np.random.Generator, n: int) -> list[str]:
    kinds = [QUERY_KINDS[i % len(QUERY_KINDS)] for i in range(n)]
    return [kinds[i] for i in rng.permutation(n)]


def _render(rows: list[dict], paths: dict[str, str], others: list[str], folder: Path, failures: list[Failure],
            progress: bool, use_ray: bool | None, label: str) -> set[str]:
    """Render each row {"id", "source", "chain"} (sources re-encoded once, _WRITTEN ones as they are)
    into folder/<id>.jpg; -> the ids written (a failed one becomes a failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not rows:
        return set()
    needed = {r["source"] for r in rows} | set(others)
    rows = [{k: r[k] for k in ("id", "source", "chain")} for r in rows]
    run = apply_chains_ray if (_ray_running() if use_ray is None else use_ray) else apply_chains_local
    results = run(rows, {k: paths[k] for k in needed}, reencode=QUALITY, quality=QUALITY,
                  as_written=[k for k in needed if k.startswith(_WRITTEN)])
    source_of, written = {r["id"]: r["source"] for r in rows}, set()
    for r in tqdm(results, total=len(rows), desc=folder.name, disable=not progress):
        rid = str(r["id"])
        if r["error"]:
            failures.append(Failure(paths[source_of[rid]], f"{label} {rid}: {r['error']}"))
            continue
        with atomic_write(folder / f"{rid}.jpg") as f:
            f.write(bytes(r["jpeg"]))
        written.add(rid)
    return written


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


def _write_csvs(out: Path, queries: list[dict], references: list[tuple] | None) -> None:
    """ground_truth.csv, query_meta.csv and, unless references is None, references_meta.csv."""
    with atomic_write(out / "ground_truth.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(("query_id", "reference_id"))
        w.writerows((q["id"], q["reference"]) for q in queries)
    with atomic_write(out / "query_meta.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(("query_id", "kind", "transforms"))
        w.writerows((q["id"], q["kind"], q["chain"]) for q in queries)
    if references is not None:
        with atomic_write(out / "references_meta.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(("reference_id", "kind", "template", "lookalike_of", "transforms"))
            w.writerows(references)
