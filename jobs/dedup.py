"""`dedup`: find exact and near duplicates in a folder (and against a reference index), group them
around a keeper, write what was found and a plan, and carry the plan out.

OUT_DIR/
  index/           the folder's own index (jobs.index: incremental and resumable), with pixel digests
  groups.json      [[keeper, copy, ...], ...]: paths relative to the folder, references as "index:<id>"
  pairs.csv        a,b,score,verified,kind,global,inliers,coverage: exact pairs (to their keeper) and every candidate
                   pair (verified: min_inliers inliers and score >= review threshold, the pair links two files)
  plan.csv         one row per copy: what the action does to it (jobs.dedup_actions.PlanRow); "review" for a
                   copy reached through a link below the act threshold, which no action touches
  plan.state.json  the plan being carried out: action, folder, status ("pending" until every row ran)
  actions.csv      path,action,outcome of the last executed plan
  report.html      groups as thumbnails with the evidence of each link (drawings in links/)
  failures.csv     path,reason of the files that could not be read
  summary.json     counts of the last run
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from copyscope.descriptors.errors import UserError
from copyscope.jobs.dedup_actions import (ACTIONS, REFERENCE_PREFIX, REVIEW, PlanRow, execute_plan, read_plan,
                                          write_plan)
from copyscope.jobs.index import index_folder
from copyscope.matching.grouping import (FileInfo, Group, Link, exact_clusters, keeper_ranks, safe_members,
                                         star_groups)
from copyscope.matching.index import SearchIndex
from copyscope.matching.local_features import LocalSpec
from copyscope.matching.pairs import Pairs, Scored, content_crops, knn_pairs, score_pairs
from copyscope.matching.reranking import FEATURES, RerankOptions, packaged_calibration
from copyscope.matching.scoring import FittedCalibration
from copyscope.matching.shared_frames import discount_frames
from copyscope.matching.verification import Verification
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.decode import DecodeError, image_size
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.failures import read_failures_csv, write_failures_csv
from copyscope.pipeline.files import file_stamp, list_images, relative_path
from copyscope.pipeline.index_files import CATALOG
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.pipeline.ray_runtime import choose_runner
from copyscope.pipeline.reports.dedup_report import write_report
from copyscope.pipeline.verify_stage import verify_catalog_pairs, verify_stored

# A pair links two files when its geometric map has MIN_INLIERS inliers and its copy probability is
# at least DEFAULT_REVIEW_THRESHOLD. Chosen on planted copies and near misses from ../shared/photos
# (benchmarks/dedup_bench.py, seed 0): copies of different photos that share a screenshot frame or
# caption style reach up to 13 inliers at low scores; 12 inliers and 0.5 gave no false link there.
# An action touches a copy only through links of probability >= DEFAULT_ACT_THRESHOLD (a calibrated
# score: about 1 wrong link in 10 at worst); links in between are grouped and listed for review.
DEFAULT_REVIEW_THRESHOLD = 0.5
DEFAULT_ACT_THRESHOLD = 0.9
MIN_INLIERS = 12
# A keypoint shared with this many other images of the folder is a frame (matching.shared_frames): more than
# the copies one photo has in a folder (the match default, 3, counts a query's candidates instead).
DEDUP_BURST_IMAGES = 5


@dataclass(frozen=True)
class DedupOptions:
    """keep: keeper rule (grouping.KEEP_RULES). action: report, move, hardlink or delete (needs yes).
    review_threshold: least copy probability of a near-copy link (groups, pairs.csv's verified);
    act_threshold: least probability of every link between a copy and its keeper for the action to
    touch the copy (below it the plan row is "review"); 0 <= review <= act <= 1. min_inliers: least
    inliers of a link's geometric map. k: neighbours searched per image, in an index of `index_type`
    (matching.index.INDEX_TYPES: flat is exact, hnsw / ivfpq trade recall for speed on millions of
    images); floor: least global similarity of a candidate pair worth verifying. burst_images: other
    images a keypoint must map to for it to count as a shared frame. move_to: where move puts copies
    (default OUT_DIR/moved). report_groups: groups drawn in report.html."""

    keep: str = "largest"
    action: str = "report"
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD
    act_threshold: float = DEFAULT_ACT_THRESHOLD
    min_inliers: int = MIN_INLIERS
    k: int = 16
    index_type: str = "flat"
    floor: float = 0.15
    burst_images: int = DEDUP_BURST_IMAGES
    move_to: str | None = None
    yes: bool = False
    report_groups: int = 200

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise UserError(f"unknown action {self.action!r}; known: {', '.join(ACTIONS)}")
        if self.action == "delete" and not self.yes:
            raise UserError("delete removes files for good: pass --yes to confirm")
        if not 0.0 <= self.review_threshold <= self.act_threshold <= 1.0:
            raise UserError(f"thresholds must satisfy 0 <= review ({self.review_threshold}) <= act "
                            f"({self.act_threshold}) <= 1: a link safe to act on is also worth a review")


@dataclass(frozen=True)
class DedupSummary:
    files: int
    failed: int
    groups: int
    duplicates: int
    exact_duplicates: int
    bytes_reclaimable: int
    candidate_pairs: int
    action: str
    to_act: int = 0  # plan rows the action applies to
    to_review: int = 0  # plan rows reached through a link below the act threshold: never acted on
    outcomes: dict = field(default_factory=dict)
    resumed: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class _Table:
    """The folder's readable images: ids (N,), paths (N,) relative, vectors (N, D), digests (N,), and
    catalog_ids (N,) int64 of each in the folder's own index."""

    ids: list[str]
    paths: list[str]
    vectors: np.ndarray
    digests: list[str]
    catalog_ids: np.ndarray


def dedup_folder(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: ModelSpec | None = None,
    *,
    options: DedupOptions = DedupOptions(),
    index_dir: str | os.PathLike | None = None,
    ignore_dir: str | os.PathLike | None = None,
    settings: EmbedSettings = EmbedSettings(),
    local: LocalSpec = LocalSpec(),
    calibration: FittedCalibration | None = None,
    ray_address: str | None = None,
    use_ray: bool | None = None,
    progress: bool = True,
    on_row: Callable[[int], None] | None = None,
) -> DedupSummary:
    """Dedup `folder` into `out_dir` (see the module doc), then carry out `options.action`.

    spec: the model (default sscd; with index_dir, the reference index's model). ignore_dir: an index of
    known frames (app UIs, meme templates, logos) whose inliers do not link two files. A plan left pending
    by an interrupted run is finished first, without analysing again. on_row: crash hook for tests.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    state = _read_state(out)
    root = str(Path(folder).resolve())
    if state.get("status") == "pending":
        if state["action"] != options.action or state["folder"] != root:
            raise UserError(f"{out} holds an unfinished {state['action']} plan of {state['folder']}: finish it "
                             f"with --action {state['action']} on that folder, or delete {out / 'plan.state.json'}")
        summary = DedupSummary(**json.loads((out / "summary.json").read_text(encoding="utf-8")))
        outcomes = _act(folder, out, options, on_row, progress)
        return _finish(out, replace(summary, outcomes=outcomes, resumed=True), start)
    n_files = len(list_images(folder).entries)
    with choose_runner(n_files, settings, ray_address, use_ray) as runner:
        groups, pairs_rows, failed, files, verify = _analyse(folder, out, spec, options, index_dir, settings, local,
                                                            calibration, runner, progress, ignore_dir)
    rows = _plan_rows(folder, out, groups, options)
    _write_groups(out / "groups.json", groups)
    _write_pairs(out / "pairs.csv", pairs_rows)
    write_plan(out / "plan.csv", rows)
    summary = DedupSummary(
        files=files, failed=failed, groups=len(groups), duplicates=len(rows),
        exact_duplicates=sum(1 for g in groups for link in g.links if link.kind == "exact"),
        bytes_reclaimable=sum(r.bytes for r in rows if r.action != REVIEW),
        candidate_pairs=sum(1 for r in pairs_rows if r[4] == "near"), action=options.action,
        to_act=sum(1 for r in rows if r.action != REVIEW), to_review=sum(1 for r in rows if r.action == REVIEW))
    _write_json(out / "summary.json", asdict(summary))
    counts = {k: v for k, v in asdict(summary).items() if k not in ("outcomes", "resumed", "seconds")}
    write_report(out / "report.html", folder, groups, counts, verify=verify, max_groups=options.report_groups,
                 reference_prefix=REFERENCE_PREFIX, act_threshold=options.act_threshold, progress=progress)
    outcomes = {}
    if options.action != "report":
        _write_json(out / "plan.state.json", {"action": options.action, "folder": root, "status": "pending"})
        outcomes = _act(folder, out, options, on_row, progress)
    return _finish(out, replace(summary, outcomes=outcomes), start)


def _finish(out: Path, summary: DedupSummary, start: float) -> DedupSummary:
    summary = replace(summary, seconds=round(time.perf_counter() - start, 3))
    _write_json(out / "summary.json", asdict(summary))
    return summary


def _act(folder, out: Path, options: DedupOptions, on_row, progress: bool) -> dict:
    """Carry out plan.csv, record each outcome in actions.csv, mark the plan done -> counts of outcomes."""
    rows = read_plan(out / "plan.csv")
    outcomes = execute_plan(folder, rows, yes=options.yes, on_row=on_row, progress=progress)
    with atomic_write(out / "actions.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(("path", "action", "outcome"))
        w.writerows((r.path, r.action, o) for r, o in zip(rows, outcomes))
    _write_json(out / "plan.state.json", {"action": options.action, "folder": str(Path(folder).resolve()),
                                          "status": "done"})
    return dict(Counter(outcomes))


def _analyse(folder, out: Path, spec: ModelSpec | None, options: DedupOptions, index_dir, settings: EmbedSettings,
             local: LocalSpec, calibration: FittedCalibration | None, runner, progress: bool,
             ignore_dir=None
             ) -> tuple[list[Group], list[tuple], int, int, Callable[[str, str], Verification]]:
    """Index the folder, find exact and near pairs, group them -> groups, pairs.csv rows, failed, files,
    and a verifier of two folder paths from their stored local features (for drawing the links).
    Inliers that a shared frame explains (matching.shared_frames) do not link two files."""
    reference = CopyIndex.open(index_dir) if index_dir is not None else None
    spec, local = _model_of(spec, local, reference, index_dir)
    # crops of the closer look are region views: embedded by the model the calibration was fitted with
    region = reference.region_spec if reference is not None else None
    fitted = _calibration_of(spec, local, reference, calibration)  # before any image is embedded
    ignore = CopyIndex.open(ignore_dir) if ignore_dir is not None else None
    if ignore is not None:
        ignore.check_ignore_for(spec, local.to_dict())
    own_dir = out / "index"
    index_folder(folder, own_dir, spec, settings=settings, local=local, calibration=fitted, progress=progress,
                 pixel_hash=True, runner=runner, region_model=region)
    failures = read_failures_csv(own_dir / "failures.csv")
    write_failures_csv(out / "failures.csv", failures)
    own = CopyIndex.open(own_dir)
    calibration = own.calibration_for(RerankOptions()).calibration
    table = _read_table(folder, own)
    infos = _Infos(folder, table.paths)

    clusters = exact_clusters(table.digests)
    rep_of = np.arange(len(table.ids))
    for rows in clusters:
        best = rows[int(np.argmin(keeper_ranks([infos[r] for r in rows], options.keep)))]
        rep_of[rows] = best
    reps = np.flatnonzero(rep_of == np.arange(len(table.ids)))

    rep_index = SearchIndex.build(table.vectors[reps], None, options.index_type)
    found, rep_level = knn_pairs(table.vectors[reps], rep_index, options.k, options.floor, self_join=True,
                                 progress=progress)
    level = np.zeros(len(table.ids), np.float32)
    level[reps] = rep_level
    ignored = _ignored_points(table, reps, own, ignore, runner, local) if ignore is not None else {}
    near = Pairs(reps[found.a], reps[found.b], found.global_score)
    evidence = verify_catalog_pairs(runner, own.catalog, table.catalog_ids[near.a], table.catalog_ids[near.b],
                                    own_dir / CATALOG, local.to_dict())
    evidence = discount_frames(list(zip(near.a.tolist(), near.b.tolist())), evidence,
                               min_images=options.burst_images, ignored=ignored)
    near_level = np.maximum(level[near.a], level[near.b])
    folder_side = (lambda row: str(Path(folder) / table.paths[row]), lambda rows: table.vectors[rows])
    near = _looked_closer(score_pairs(near, evidence, near_level, calibration), evidence, near_level, calibration,
                          own, runner, options, (folder_side, folder_side))
    ref = Scored.empty()
    ref_paths: dict[int, str] = {}
    if reference is not None:
        found, _ = knn_pairs(table.vectors[reps], reference.search_index_in(None), options.k, options.floor,
                             self_join=False)  # raw descriptors, as the pairs within the folder
        found = Pairs(reps[found.a], found.b, found.global_score)
        evidence = verify_catalog_pairs(runner, own.catalog, table.catalog_ids[found.a], found.b,
                                        Path(index_dir) / CATALOG, local.to_dict())
        evidence = discount_frames(list(zip(found.a.tolist(), found.b.tolist())), evidence, sides=("query",),
                                   ignored=ignored)
        reference_side = (None, lambda ids: _stacked(reference.catalog.embeddings_of(ids.tolist()), ids))
        ref = _looked_closer(score_pairs(found, evidence, level[found.a], calibration), evidence, level[found.a],
                             calibration, own, runner, options, (folder_side, reference_side))
        ref_paths = {i: REFERENCE_PREFIX + name for i, name in reference.names().items()}
    groups = _groups(table, infos, rep_of, reps, near, ref, ref_paths, options)
    pair_rows = [(link.path, link.linked_to, 1.0, True, "exact", 1.0, 0, 1.0) for g in groups for link in g.links
                 if link.kind == "exact"]
    for scored, other in ((near, table.paths), (ref, ref_paths)):
        p, edges = scored.pairs, scored.edges(options.review_threshold, options.min_inliers)
        pair_rows += [(table.paths[a], other[b], round(float(s), 6), bool(e), "near", round(float(g), 6), int(n),
                       round(float(c), 4))
                      for a, b, s, e, g, n, c in zip(p.a, p.b, scored.score, edges, p.global_score, scored.inliers,
                                                     scored.coverage)]
    ids_of = dict(zip(table.paths, table.catalog_ids.tolist()))
    verifier = _stored_verifier(own.catalog, ids_of, local)
    return groups, pair_rows, len(failures), len(table.ids) + len(failures), verifier


def _looked_closer(scored: Scored, evidence: list[dict], level: np.ndarray, calibration, own: CopyIndex, runner,
                   options: DedupOptions, sides: tuple[tuple, tuple]) -> Scored:
    """Pairs with a verified map that score below the act threshold, scored again with their best view: the
    content the inliers span on either image, cropped and embedded, against the other image's descriptor. A
    photo inside a screenshot, a meme or on a background has a global descriptor far from its own (the
    region view `match` finds by its region search).

    sides: for the pairs' a and b, (node -> image path, or None where that side is not cropped: a reference
    index's images; (N,) nodes -> (N, D) descriptors), read only for the pairs looked at."""
    look = np.flatnonzero((scored.inliers >= options.min_inliers) & (scored.score < options.act_threshold))
    pair, side, boxes = content_crops(evidence, look)
    keep = np.array([path_of is not None for path_of, _ in sides])[side]
    pair, side, boxes = pair[keep], side[keep], boxes[keep]
    if not len(pair):
        return scored
    p = scored.pairs
    cropped, facing = np.where(side == 0, p.a[pair], p.b[pair]), np.where(side == 0, p.b[pair], p.a[pair])
    crops = own.embed_crops([(sides[s][0](int(v)), box) for s, v, box in zip(side, cropped, boxes)], runner)
    other = np.empty_like(crops)
    for s in (0, 1):  # the image facing a crop of side s is on side 1 - s
        if (side == s).any():
            other[side == s] = sides[1 - s][1](facing[side == s])
    best = p.global_score.astype(np.float32)
    np.maximum.at(best, pair, (crops * other).sum(axis=1))
    return score_pairs(p, evidence, level, calibration, best=best)


def _stacked(by_id: dict[int, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """{id: (D,) vector} -> (N, D) the vectors of `ids`, in order."""
    return np.stack([by_id[int(i)] for i in ids])


def _ignored_points(table: _Table, reps: np.ndarray, own: CopyIndex, ignore: CopyIndex, runner,
                    local: LocalSpec) -> dict[int, np.ndarray]:
    """{table row: (R, 2) points of its keypoints that map to a known frame of the ignore index}."""

    def verify(pairs: dict[int, list[int]]) -> dict[tuple[int, int], dict]:
        rows = [(row, ref) for row, refs in pairs.items() for ref in refs]
        evidence = verify_catalog_pairs(runner, own.catalog, table.catalog_ids[[row for row, _ in rows]],
                                        np.array([ref for _, ref in rows], np.int64), ignore.directory / CATALOG,
                                        local.to_dict())
        return dict(zip(rows, evidence))

    return ignore.frame_points(reps.tolist(), table.vectors[reps], verify)


def _stored_verifier(catalog, ids: dict[str, int], spec: LocalSpec) -> Callable[[str, str], Verification]:
    """verify(path_a, path_b) -> Verification of a over b from the local features in the catalog."""
    def verify(a: str, b: str) -> Verification:
        return verify_stored(catalog.features(ids[a]), catalog.features(ids[b]), spec)
    return verify


def _calibration_of(spec: ModelSpec, local: LocalSpec, reference: CopyIndex | None,
                    given: FittedCalibration | None) -> FittedCalibration:
    """The calibration that scores pairs, fitted on raw descriptors: the reference index's (fitted for its region
    model too; the packaged one for its settings when it whitens), else the one given, else the packaged one (a
    folder's own index embeds region views by `spec`)."""
    if reference is not None:
        fitted = reference.calibration_for(RerankOptions())
        if fitted.whitening is None:
            return _pair_calibration(fitted)
        region = reference.region_spec
        given = packaged_calibration(spec.name, local.to_dict(), region.name if region else None)
        if given is None:
            raise UserError(f"index {reference.directory} whitens its descriptors and no calibration without "
                            "whitening is packaged for its settings: dedup against an index made with "
                            "`copyscope index --whitening none`")
        return given
    fitted = given or packaged_calibration(spec.name, local.to_dict())
    if fitted is None:
        raise UserError(f"no calibration for model {spec.name!r} with these local features: fit one with "
                        "benchmarks/fit_calibration.py and pass it with --calibration")
    _pair_calibration(fitted).check(spec.name, local.to_dict(), RerankOptions().calibrated_as, FEATURES)  # raw
    return fitted


def _pair_calibration(fitted: FittedCalibration) -> FittedCalibration:
    """`fitted` if it scores pairs of one collection: over FEATURES, in that order (reranking.either_way_scores;
    such a pair has no query side, so no margin), else a UserError."""
    if tuple(fitted.features) != FEATURES:
        raise UserError(f"dedup scores pairs over the features {', '.join(FEATURES)} (in this order); this "
                        f"calibration takes {', '.join(fitted.features)}. Fit one with benchmarks/calibrate.py "
                        f"--features {','.join(FEATURES)} (or benchmarks/fit_calibration.py --whitening none)")
    return fitted


def _model_of(spec: ModelSpec | None, local: LocalSpec, reference: CopyIndex | None,
              index_dir) -> tuple[ModelSpec, LocalSpec]:
    """The model and local features to dedup with: the reference index's when there is one."""
    if reference is None:
        return spec or ModelSpec(), local
    local = reference.require_local_features("to dedup against it")
    if spec is not None and spec != reference.spec:
        raise UserError(f"index {index_dir} was made with model {reference.spec.name!r}, not {spec.name!r}")
    return reference.spec, local


def _read_table(folder, engine: CopyIndex) -> _Table:
    """The readable images of the folder, by name: ids, relative paths, vectors, digests, catalog ids."""
    paths = dict(list_images(folder).entries)
    catalog_ids, vectors = engine.catalog.embeddings(engine.dim)
    names, digests = engine.names(), engine.catalog.pixel_hashes()
    order = sorted(range(len(catalog_ids)), key=lambda i: names[int(catalog_ids[i])])
    keep = [i for i in order if names[int(catalog_ids[i])] in paths]
    ids = [names[int(catalog_ids[i])] for i in keep]
    return _Table(ids, [relative_path(folder, paths[i]) for i in ids], vectors[keep],
                  [digests[int(catalog_ids[i])] for i in keep], catalog_ids[keep])


class _Infos:
    """FileInfo of folder rows, read from disk on first use (only files with a link are ever looked at)."""

    def __init__(self, folder, paths: list[str]):
        self.folder, self.paths, self.cache = Path(folder), paths, {}

    def __getitem__(self, row: int) -> FileInfo:
        if row not in self.cache:
            path = self.folder / self.paths[row]
            st = os.stat(path)
            try:
                w, h = image_size(path)
            except DecodeError:
                w = h = 0
            self.cache[row] = FileInfo(self.paths[row], st.st_size, st.st_mtime_ns, w * h)
        return self.cache[row]


def _groups(table: _Table, infos: _Infos, rep_of: np.ndarray, reps: np.ndarray, own: Scored, ref: Scored,
            ref_paths: list[str], options: DedupOptions) -> list[Group]:
    """Star groups over the near-copy edges between exact-cluster representatives (and references),
    each representative expanded to its exact cluster."""
    n = len(table.ids)
    own_edge = own.edges(options.review_threshold, options.min_inliers)
    ref_edge = ref.edges(options.review_threshold, options.min_inliers)
    ref_nodes = np.unique(ref.pairs.b[ref_edge])
    # nodes: folder rows 0..n-1, then the references with an edge
    a = np.concatenate([own.pairs.a[own_edge], ref.pairs.a[ref_edge]])
    b = np.concatenate([own.pairs.b[own_edge], n + np.searchsorted(ref_nodes, ref.pairs.b[ref_edge])])
    scores = np.concatenate([own.score[own_edge], ref.score[ref_edge]])
    score = {(int(x), int(y)): float(s) for x, y, s in zip(a, b, scores)}
    linked = set(a.tolist()) | set(b.tolist())
    node_info = [infos[v] if v in linked else FileInfo(table.paths[v], 0, 0) for v in range(n)]
    node_info += [FileInfo(ref_paths[r], 0, 0, reference=True) for r in ref_nodes]
    ranks = keeper_ranks(node_info, options.keep)
    members_of = {int(r): [int(r)] for r in reps}
    for row in np.flatnonzero(rep_of != np.arange(n)):
        members_of[int(rep_of[row])].append(int(row))
    for rows in members_of.values():
        rows[1:] = sorted(rows[1:], key=lambda r: table.paths[r])

    def path(v: int) -> str:
        return table.paths[v] if v < n else node_info[v].path

    def expand(v: int, linked_to: int | None) -> tuple[list[str], list[Link]]:
        if v >= n:
            return [path(v)], []
        rows = members_of[v]
        links = [Link(table.paths[r], table.paths[v], 1.0, "exact") for r in rows[1:]]
        if linked_to is not None:
            link_score = score[(min(v, linked_to), max(v, linked_to))]
            links.insert(0, Link(table.paths[v], path(linked_to), link_score, "near"))
        return [table.paths[r] for r in rows], links

    groups, grouped = [], set()
    # a file no keeper took may join through a member by a link safe to act on; a reference never joins a
    # group as a member (it is never acted on)
    strength = np.where(b < n, scores, -np.inf)
    for star in star_groups(ranks, a, b, strength, join_at=options.act_threshold):
        members, links = expand(star.nodes[0], None)
        for v in star.nodes[1:]:
            more, more_links = expand(v, star.parent[v])
            members += more
            links += more_links
        groups.append(Group(members, links))
        grouped.update(star.nodes)
    groups += [Group(*expand(v, None)) for v, rows in members_of.items() if len(rows) > 1 and v not in grouped]
    return sorted(groups, key=lambda g: g.members[0])


def _plan_rows(folder, out: Path, groups: list[Group], options: DedupOptions) -> list[PlanRow]:
    """One row per copy in a group (references are never acted on); "review" where a link on the copy's
    path to its keeper is below the act threshold."""
    root = Path(folder).resolve()
    target = Path(options.move_to).resolve() if options.move_to else (out / "moved").resolve()
    if options.action == "move" and (target == root or root in target.parents):
        raise UserError(f"the move target {target} is inside the folder {root}: choose another with --move-to")
    rows = []
    for g in groups:
        keeper = g.members[0]
        keeper_path = None if keeper.startswith(REFERENCE_PREFIX) else root / keeper
        for p, safe in zip(g.members[1:], safe_members(g, options.act_threshold)[1:]):
            st = os.stat(root / p)
            shared = keeper_path is not None and os.path.samefile(root / p, keeper_path)
            action = options.action if safe else REVIEW
            rows.append(PlanRow(action, p, keeper, str(target / p) if action == "move" else "",
                                0 if shared else st.st_size, file_stamp(str(root / p)),
                                file_stamp(str(keeper_path)) if keeper_path else ""))
    return rows


def _write_groups(path: Path, groups: list[Group]) -> None:
    with atomic_write(path, "w") as f:
        json.dump([g.members for g in groups], f, indent=1)


def _write_pairs(path: Path, rows: list[tuple]) -> None:
    with atomic_write(path, "w") as f:
        w = csv.writer(f)
        w.writerow(("a", "b", "score", "verified", "kind", "global", "inliers", "coverage"))
        w.writerows(rows)


def _write_json(path: Path, obj: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def _read_state(out: Path) -> dict:
    try:
        return json.loads((out / "plan.state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
