"""The engine: one index directory opened in memory, changed in place, matched against.

    engine = CopyIndex.open("idx")                     # or CopyIndex.create("idx", ModelSpec("sscd"))
    engine.add_images([("cat", "photos/cat.jpg")])     # embed + local features, stored under a new int64 id
    engine.remove(["old"])                             # gone from FAISS and the feature store at once
    result = engine.match([("upload", "upload.jpg")])  # calibrated scores and evidence, best first
    engine.save()

INDEX_DIR holds catalog.sqlite (pipeline.catalog: every reference's id, name, file stamp, descriptor and
packed local features: the source of truth), index.faiss (the FAISS index over the catalog, rebuilt from it
when stale), whitening.npz (the PCA whitening fitted on the references, matching.whitening, when the
calibration was fitted for one: refitted when the catalog has grown or shrunk by a quarter) and manifest.json
(pipeline.index_files: model, preprocessing, local-feature settings, index type, whitening, calibration).
Batch work goes through a runner (pipeline.runners): in process by default, on Ray when a job passes a
RayRunner; matching one image in process starts no Ray.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from copyscope.descriptors import PreprocessCfg
from copyscope.descriptors.errors import UserError
from copyscope.matching.candidates import SAME_PHOTO_COSINE, QueryViews, candidates_of, top_per_query
from copyscope.matching.compact_features import compact
from copyscope.matching.index import INDEX_TYPES, MIN_IVFPQ_VECTORS, IndexParams, SearchIndex
from copyscope.matching.local_features import LocalFeatures, LocalSpec
from copyscope.matching.reranking import (
    MATCH_FEATURES, RerankOptions, directional_scores, packaged_calibration, pair_features, query_background_level,
)
from copyscope.matching.scoring import FittedCalibration
from copyscope.matching.shared_frames import DUPLICATE_COSINE, INLIERS, discount_frames, duplicate_groups, inlier_points
from copyscope.matching.whitening import Whitening, WhiteningSpec, fit_whitening
from copyscope.pipeline.catalog import Catalog, Change, Reference
from copyscope.pipeline.failures import Failure
from copyscope.pipeline.files import file_stamp
from copyscope.pipeline.index_files import (
    CATALOG, FAISS_FILE, is_index_dir, load_faiss, load_trained, load_whitening, read_manifest, save_faiss,
    write_manifest,
)
from copyscope.pipeline.model_spec import ModelSpec, check_region_model, distinct_region_model
from copyscope.pipeline.runners import LocalRunner
from copyscope.pipeline.second_look import (
    NEIGHBOURS, SECOND_LOOK_INLIERS, box_features, collection_frames, looks_to_take, second_looks,
)
from copyscope.pipeline.stages import PrepareOptions, row_local_features
from copyscope.pipeline.verify_stage import verify_through


IGNORE_CANDIDATES = 5  # images of an ignore index verified against each query


@dataclass(frozen=True)
class MatchResult:
    """Output rows, grouped by query and best first: query (R,) and reference (R,) names, reference_id (R,)
    int64, score (R,) float, reverse_score (R,) float or None (rerank "none"), explain (R,) dicts with
    every row's evidence; queries: names of the queries matched; failures: queries that could not be read."""

    query: list[str]
    reference: list[str]
    reference_id: np.ndarray
    score: np.ndarray
    reverse_score: np.ndarray | None
    explain: list[dict]
    queries: list[str]
    failures: list[Failure] = field(default_factory=list)
    verified_pairs: int = 0

    def __len__(self) -> int:
        return len(self.query)


@dataclass(frozen=True)
class EmbeddedQueries:
    """views: every view of every query; local: each query's whole-image local features; by_name: query ->
    [(view number, (4,) box, (D,) descriptor)], what `views` is built from; paths: query -> its file (for a
    second look, pipeline.second_look)."""

    views: QueryViews
    local: dict[str, LocalFeatures]
    failures: list[Failure]
    by_name: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def with_regions(self, names: Sequence[str], regions: EmbeddedQueries, dim: int) -> EmbeddedQueries:
        """These queries among `names`, each with its region views added from a regions-only pass."""
        by_name = {n: self.by_name[n] + regions.by_name.get(n, []) for n in names if n in self.by_name}
        return EmbeddedQueries(_query_views(by_name, dim), {n: self.local[n] for n in by_name if n in self.local},
                               regions.failures, by_name, self.paths)


class CopyIndex:
    """References (descriptors + local features + stable ids) in memory over an index directory."""

    def __init__(self, directory: str | os.PathLike, manifest: dict, catalog: Catalog, use_gpu: bool = False):
        self.directory, self.manifest, self.catalog = Path(directory).resolve(), manifest, catalog
        self._use_gpu = use_gpu
        self._names: dict[int, str] | None = None
        self._search: SearchIndex | None = None
        self._synced = -1  # the catalog generation the in-memory FAISS index reflects (-1: none yet)
        self._provisional = False  # an exact flat stand-in while an ivfpq index is too small to train
        self._copy: tuple | None = None  # (catalog generation, whitening, flat SearchIndex): search_index_in

    # ---------------------------------------------------------------- open / create / save
    @classmethod
    def create(cls, directory: str | os.PathLike, spec: ModelSpec = ModelSpec(), *,
               local: LocalSpec | None = LocalSpec(), index_type: str = "flat", params: IndexParams | None = None,
               calibration: FittedCalibration | None = None, pixel_hash: bool = False,
               region_model: ModelSpec | None = None, whitening: bool = True) -> CopyIndex:
        """A new, empty index directory (refuses one that holds an index already). calibration: default the
        packaged one when it was fitted for this model, region model and local-feature setting (with the
        default whitening when `whitening` and one was fitted for it, else without), else none. The index
        whitens its descriptors as its calibration was fitted (none: raw descriptors).
        region_model: another model of the same descriptor space that embeds queries' region views (a
        distilled student: `sscd_distilled` for `sscd`), resized as the model resizes; None: the model itself."""
        if index_type not in INDEX_TYPES:
            raise UserError(f"unknown index type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise UserError(f"{directory} is a file: give a folder for the index")
        if is_index_dir(directory) or (directory / CATALOG).exists():
            raise UserError(f"{directory} already holds an index (or the catalog of one whose manifest is lost): "
                            "open it, or choose another folder")
        local_dict = local.to_dict() if local else None
        region = distinct_region_model(spec, region_model)
        region_name = region.name if region else None
        calibration = calibration or (whitening and packaged_calibration(
            spec.name, local_dict, region_name, WhiteningSpec().to_dict())) or packaged_calibration(
            spec.name, local_dict, region_name)
        if calibration is not None:
            calibration.check(spec.name, local_dict, calibration.score_norm, MATCH_FEATURES, region_name,
                              calibration.whitening)
        descriptor = spec.build(num_threads=1)
        if region is not None:
            check_region_model(descriptor, region)
        manifest = {"model": spec.to_dict(), "region_model": region.to_dict() if region else None,
                    "descriptor": descriptor.spec(), "local": local_dict,
                    "pixel_hash": pixel_hash, "index_type": index_type,
                    "params": (params or IndexParams()).__dict__, "faiss": None,
                    "whitening": calibration.whitening if calibration else None,
                    "calibration": calibration.to_dict() if calibration else None}
        directory.mkdir(parents=True, exist_ok=True)
        engine = cls(directory, manifest, Catalog(directory / CATALOG, method=local.method if local else None))
        engine.save()
        return engine

    @classmethod
    def open(cls, directory: str | os.PathLike, *, use_gpu: bool = False) -> CopyIndex:
        """Open an index directory; its FAISS index is loaded, or rebuilt from the catalog when stale."""
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"no index at {directory}: build one with `copyscope index REF_DIR --out {directory}`")
        manifest = read_manifest(directory)
        if not (directory / CATALOG).is_file():
            raise UserError(f"{directory / CATALOG} is missing: the index directory is incomplete; rebuild it")
        local = manifest["local"]
        engine = cls(directory, manifest, Catalog(directory / CATALOG, method=local["method"] if local else None),
                     use_gpu)
        generation = engine.catalog.generation
        engine._search = load_faiss(directory, manifest, generation, use_gpu)
        engine._synced = generation
        if engine._search is None:
            engine._rebuild(load_trained(directory, manifest))
            manifest["faiss"] = None  # what is on disk is not this index: the next save writes it whole
        return engine

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, spec: ModelSpec, **create_options) -> CopyIndex:
        """Open `directory` if it holds an index made with `spec` and the same settings, else create it.
        whitening=True allows a raw index (one whose calibration was fitted raw); False refuses a whitened one."""
        if not is_index_dir(directory):
            return cls.create(directory, spec, **create_options)
        engine = cls.open(directory)
        local = create_options.get("local", LocalSpec())
        region = distinct_region_model(spec, create_options.get("region_model"))
        wanted = {"model": spec.to_dict(), "local": local.to_dict() if local else None,
                  "index_type": create_options.get("index_type", "flat"),
                  "region_model": region.to_dict() if region else None}
        for key, value in wanted.items():
            if engine.manifest.get(key) != value:  # an index made before region models has none: the model's
                raise UserError(f"{directory} was built with {key} {engine.manifest.get(key)!r}, not {value!r}: "
                                "use another --out, or delete the folder to rebuild it")
        if not create_options.get("whitening", True) and engine.manifest.get("whitening") is not None:
            raise UserError(f"{directory} whitens its descriptors (its calibration was fitted so), not raw as asked: "
                            "use another --out, or delete the folder to rebuild it")
        return engine

    def save(self) -> None:
        """Write index.faiss (when it changed since it was written) and then manifest.json, both atomically.
        An ivfpq index too small to train is not written: it is rebuilt from the catalog on open."""
        search = self.search_index()
        saved = self.manifest["faiss"]
        if search is None or self._provisional:
            self.manifest["faiss"] = None
        elif not saved or saved.get("generation") != self._synced or not (self.directory / FAISS_FILE).is_file():
            self.manifest["faiss"] = save_faiss(self.directory, search, self._synced) | {
                "params": search.params.__dict__}
        write_manifest(self.directory, self.manifest)

    def close(self) -> None:
        self.catalog.close()

    # ---------------------------------------------------------------- what it holds
    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.manifest["model"])

    @property
    def region_spec(self) -> ModelSpec | None:
        """The model that embeds queries' region views (None: `spec`, as in indexes made before it existed)."""
        region = self.manifest.get("region_model")
        return ModelSpec.from_dict(region) if region else None

    def _check_calibration(self, calibration: FittedCalibration, score_norm: str) -> None:
        region = self.region_spec
        calibration.check(self.spec.name, self.manifest["local"], score_norm, MATCH_FEATURES,
                          region.name if region else None, self.manifest.get("whitening"))

    @property
    def dim(self) -> int:
        return int(self.manifest["descriptor"]["preprocess"]["dim"])

    @property
    def local(self) -> LocalSpec | None:
        return LocalSpec(**self.manifest["local"]) if self.manifest["local"] else None

    @property
    def calibration(self) -> FittedCalibration | None:
        c = self.manifest["calibration"]
        return FittedCalibration.from_dict(c) if c else None

    def set_calibration(self, calibration: FittedCalibration) -> None:
        """Store a calibration after checking it was fitted for this index's models and local features."""
        self._check_calibration(calibration, calibration.score_norm)
        self.manifest["calibration"] = calibration.to_dict()

    def __len__(self) -> int:
        return len(self.catalog)

    def require_local_features(self, what_for: str) -> LocalSpec:
        """The index's LocalSpec; a UserError saying what to do when it stores no local features."""
        if self.local is None:
            raise UserError(f"index {self.directory} stores no local features: re-index it with local features "
                            f"{what_for}")
        return self.local

    def names(self) -> dict[int, str]:
        """id -> name of every reference (cached until the next change)."""
        if self._names is None:
            self._names = self.catalog.names()
        return self._names

    def search_index(self) -> SearchIndex | None:
        """The FAISS index over the catalog (None while the catalog is empty and no index was built)."""
        if self._search is None and len(self.catalog):
            self._rebuild(None)
        return self._search

    def refit_whitening(self) -> None:
        """Fit the whitening of a flat index again on the references held now, and rebuild it with it. A batch
        `index` that changed anything ends with it, so that the index equals a fresh index of the same references
        however it grew. Nothing for an index that does not whiten, nor for ivfpq and HNSW, whose rebuild
        retrains: they refit when the whitening is outgrown only."""
        if self.manifest.get("whitening") is not None and self.manifest["index_type"] == "flat" and len(self.catalog):
            self._rebuild(None, refit=True)
            self.manifest["faiss"] = None  # the saved index is another one now: the next save writes this one

    def _rebuild(self, trained: SearchIndex | None, refit: bool = False) -> None:
        """The FAISS index from every catalog row (into `trained`, an emptied ivfpq index, when given); refit: with
        a whitening fitted anew."""
        generation = self.catalog.generation
        ids, vectors = self.catalog.embeddings(self.dim)
        kind, params = self.manifest["index_type"], IndexParams(**self.manifest["params"])
        trainable = kind != "ivfpq" or len(ids) >= MIN_IVFPQ_VECTORS
        self._provisional = not trainable
        whitening = self._whitening_for(vectors, trained, refit)
        if trained is not None and trained.whitening is whitening:
            trained.add(vectors, ids)
            self._search = trained
        else:
            self._search = SearchIndex.build(vectors, ids, kind if trainable else "flat", params=params,
                                             use_gpu=self._use_gpu, whitening=whitening)
        self._synced = generation

    def _whitening_for(self, vectors: np.ndarray, trained: SearchIndex | None, refit: bool) -> Whitening | None:
        """The whitening to rebuild with: the saved one while the catalog has not outgrown it (unless `refit`),
        else one fitted on the (N, D) catalog `vectors`; None for an index whose calibration was fitted without."""
        spec = self.manifest.get("whitening")
        if spec is None:
            return None
        saved = trained.whitening if trained is not None else load_whitening(self.directory, self.manifest)
        if saved is not None and not saved.outgrown(len(vectors)) and not refit:
            return saved
        return fit_whitening(vectors, WhiteningSpec(**spec))

    def _apply(self, change: Change, vectors: np.ndarray | None = None) -> None:
        """Bring the FAISS index up to a catalog write: in place when this engine made every change since
        the index was built, else (another process wrote too) rebuilt from the catalog."""
        self._names = None
        if self._search is None:
            return
        whitening = self._search.whitening
        if change.generation != self._synced + 1 or (self._provisional and len(self.catalog) >= MIN_IVFPQ_VECTORS) \
                or (whitening is not None and whitening.outgrown(len(self.catalog))):
            self._search = None  # rebuilt on next use (whitening fitted again when outgrown)
            self._synced = -1
            return
        self._search.remove(change.replaced)
        if vectors is not None:
            self._search.add(vectors, change.ids)
        self._synced = change.generation

    # ---------------------------------------------------------------- change in place
    def add(self, refs: Sequence[Reference]) -> list[int]:
        """Store references computed elsewhere (a replaced name keeps its id) -> their ids."""
        names = [r.name for r in refs]
        if len(set(names)) != len(names):
            raise UserError(f"a name is given twice: {sorted(n for n in set(names) if names.count(n) > 1)[:5]}")
        for r in refs:
            if np.shape(r.embedding) != (self.dim,) or not np.all(np.isfinite(r.embedding)):
                raise UserError(f"embedding of {r.name!r} must be {self.dim} finite float32 values, "
                                f"got shape {np.shape(r.embedding)}")
            if (r.local is None) != (self.manifest["local"] is None):
                raise UserError(f"{r.name!r}: this index {'stores' if self.manifest['local'] else 'has no'} "
                                "local features")
        if not refs:
            return []
        spec = self.local
        if spec is not None:
            refs = [dataclasses.replace(r, local=compact(r.local, spec)) for r in refs]
        self.search_index()  # built before the write, so the write can be applied in place
        change = self.catalog.put(refs)
        self._apply(change, np.stack([np.asarray(r.embedding, np.float32) for r in refs]))
        return change.ids

    def remove(self, names: Iterable[str]) -> int:
        """Remove references by name (unknown names are ignored) -> how many were removed."""
        self.search_index()
        change = self.catalog.delete(list(names))
        if change.generation != self._synced:
            self._apply(change)
        return len(change.ids)

    def record_failures(self, failures: Sequence[tuple[str, str, str]]) -> None:
        """(name, stamp, reason) of files that could not be read; an earlier version of them is removed."""
        if failures:
            self.search_index()
            self._apply(self.catalog.put_failures(failures))

    def prepare_options(self, regions: int = 0, local: bool = True, pixel_hash: bool = False,
                        region_size: int | None = None) -> PrepareOptions:
        """What the prepare stage makes of each image for this index (its preprocessing, its local features)."""
        cfg = PreprocessCfg.from_dict(self.manifest["descriptor"]["preprocess"])
        return PrepareOptions(cfg.to_dict(), regions=regions, region_size=region_size,
                              local=self.local if local else None, pixel_hash=pixel_hash)

    def references(self, images: Sequence[tuple[str, str]], runner=None, *,
                   stamps: dict[str, str] | None = None) -> Iterator[tuple[list[Reference], list[tuple[str, str, str]]]]:
        """Embed (name, path) images -> per batch, (references to store, (name, stamp, reason) failures).

        stamps: name -> file stamp (default: read now)."""
        runner = runner or LocalRunner()
        rows = [{"id": n, "path": p, "stamp": (stamps or {}).get(n) or file_stamp(p)} for n, p in images]
        prepare = self.prepare_options(pixel_hash=bool(self.manifest["pixel_hash"]))
        method = self.local.method if self.local else None
        for batch in runner.embed(rows, self.spec, prepare):
            refs, failed = [], []
            for i, (name, stamp, error) in enumerate(zip(batch["id"], batch["stamp"], batch["error"])):
                if error:
                    failed.append((str(name), str(stamp), str(error)))
                    continue
                local = row_local_features(batch, i, method) if method else None
                digest = str(batch["pixel_hash"][i]) if prepare.pixel_hash else ""
                refs.append(Reference(str(name), str(stamp), batch["embedding"][i], local, digest))
            yield refs, failed

    def add_images(self, images: Sequence[tuple[str, str]], runner=None, *, stamps: dict[str, str] | None = None,
                   on_batch: Callable[[int], None] | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Embed (name, path) images and store them batch by batch (a killed job keeps every committed batch)
        -> how many were stored; unreadable files are recorded as failures.

        stamps: name -> file stamp (default: read now). on_batch(n): called after each committed batch.
        progress(n): called with the number of images of each batch."""
        stored = 0
        for batch_no, (refs, failed) in enumerate(self.references(images, runner, stamps=stamps)):
            self.add(refs)
            self.record_failures(failed)
            stored += len(refs)
            if on_batch:
                on_batch(batch_no)
            if progress:
                progress(len(refs) + len(failed))
        return stored

    # ---------------------------------------------------------------- match
    def embed_queries(self, images: Sequence[tuple[str, str]], runner, *, regions: int, local: bool,
                      progress: Callable[[int], None] | None = None, whole: bool = True,
                      full_size: bool = False, region_size: int | None = None) -> EmbeddedQueries:
        """(name, path) images -> every view's descriptor and the whole image's local features.

        whole=False: only the region views (a cascade's second pass). full_size: decode at full size even
        without regions, so that a first pass without them sees the pixels a pass with them would. region_size:
        the short side of region views (None: the model's)."""
        prepare = dataclasses.replace(self.prepare_options(regions=regions, local=local, region_size=region_size),
                                      whole=whole, full_size=full_size)
        views: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        features: dict[str, LocalFeatures] = {}
        failures = []
        rows = [{"id": n, "path": p} for n, p in images]
        for batch in runner.embed(rows, self.spec, prepare, self.region_spec):
            for i, (name, view) in enumerate(zip(batch["id"], batch["view"])):
                name = str(name)
                if batch["error"][i]:
                    failures.append(Failure(str(batch["path"][i]), str(batch["error"][i])))
                    continue
                views.setdefault(name, []).append((int(view), batch["box"][i], batch["embedding"][i]))
                if view == 0 and prepare.local:
                    features[name] = row_local_features(batch, i, prepare.local.method)
            if progress:
                progress(len(set(batch["id"].tolist())))
        return EmbeddedQueries(_query_views(views, self.dim), features, failures, views,
                               {n: str(p) for n, p in images if n in views})

    def embed_crops(self, crops: Sequence[tuple[str, np.ndarray]], runner) -> np.ndarray:
        """(path, (4,) box as fractions of the image's width and height) crops -> (N, D) float32 descriptors,
        each crop embedded as a region view (zeros where its image cannot be decoded); each image is decoded
        once, however many of its crops are asked for."""
        of_path: dict[str, list[int]] = {}
        for i, (path, _) in enumerate(crops):
            of_path.setdefault(path, []).append(i)
        wanted = list(of_path.values())
        rows = [{"id": j, "path": path, "boxes": np.asarray([crops[i][1] for i in idx], np.float32)}
                for j, (path, idx) in enumerate(of_path.items())]
        out = np.zeros((len(crops), self.dim), np.float32)
        prepare = dataclasses.replace(self.prepare_options(local=False), whole=False)
        for batch in runner.embed(rows, self.spec, prepare, self.region_spec):
            for row, view, error, vector in zip(batch["id"], batch["view"], batch["error"], batch["embedding"]):
                if not error:
                    out[wanted[int(row)][int(view) - 1]] = vector
        return out

    def check_background(self, background: CopyIndex) -> None:
        for key in ("model", "descriptor"):
            if background.manifest[key] != self.manifest[key]:
                raise UserError(f"background index {background.directory} was made with another {key} than the "
                                f"reference index: {background.manifest[key]} != {self.manifest[key]}")

    def search_index_in(self, whitening: Whitening | None) -> SearchIndex | None:
        """This index's descriptors searched in the space of `whitening` (None: raw descriptors): its own FAISS
        index when it whitens by that already, else a flat copy of the catalog's descriptors whitened by it (kept
        while neither changes). A background index is searched in the space of the index it serves; a dedup
        searches a reference index raw."""
        search = self.search_index()
        if search is None or search.whitening is whitening:
            return search
        generation = self.catalog.generation
        if self._copy is None or self._copy[0] != generation or self._copy[1] is not whitening:
            ids, vectors = self.catalog.embeddings(self.dim)
            self._copy = (generation, whitening, SearchIndex.build(vectors, ids, whitening=whitening))
        return self._copy[2]

    def check_ignore_for(self, spec: ModelSpec, local: dict | None) -> None:
        """UserError unless this index can serve as an ignore bank for images of `spec` with `local` features."""
        if self.spec != spec or self.manifest["local"] != local:
            raise UserError(f"ignore index {self.directory} was made with another model or other local features "
                            f"({self.spec.name}, {self.manifest['local']}) than the images it is checked against "
                            f"({spec.name}, {local}); build it with the same options (`copyscope index TEMPLATES "
                            "--out DIR`, same --model and local features)")

    def match(self, images: Sequence[tuple[str, str]], runner=None, *, k: int = 10,
              rerank: RerankOptions = RerankOptions(), background: CopyIndex | None = None,
              ignore: CopyIndex | None = None, progress: Callable[[str, int], None] | None = None) -> MatchResult:
        """(name, path) queries -> at most k references a query, best first, with calibrated scores.

        rerank "none": the global inner product (normalised by the background level when a background index
        is given). Otherwise the calibrated probability that the query is a copy of the reference
        (matching.reranking), which needs the index's local features and a calibration fitted for them;
        inliers explained by a shared frame do not count (matching.shared_frames): those of query keypoints
        that map to many candidates, and those that map to an image of the `ignore` index (known app
        frames, meme templates, logos)."""
        calibration = self._check_match(k, rerank, background, ignore)  # before any embedding
        runner = runner or LocalRunner()
        if rerank.mode == "full" and rerank.settle is not None and rerank.regions:
            return self._cascade(images, runner, k, rerank, background, calibration, progress, ignore)
        queries = self.embed_queries(images, runner, regions=rerank.regions if rerank.mode == "full" else 0,
                                     local=rerank.mode != "none", progress=_stage(progress, "embed"),
                                     region_size=rerank.region_size)
        return self._match_embedded(queries, runner, k, rerank, background, calibration, progress, ignore)

    def _cascade(self, images: Sequence[tuple[str, str]], runner, k: int, rerank: RerankOptions,
                 background: CopyIndex | None, calibration, progress, ignore: CopyIndex | None) -> MatchResult:
        """Full re-ranking in two passes: whole images first; a query whose best score is >= rerank.settle is
        decided there, the others get their regions embedded (one batch pass) and are matched again over
        every view, their first-pass verifications reused. An undecided query's result equals the one-pass
        result; a decided one's lacks candidates that its regions alone would have found, and its margins
        count no rival found only by a region."""
        first = self.embed_queries(images, runner, regions=0, local=True, full_size=True,
                                   progress=_stage(progress, "embed"))
        verified: dict[tuple[str, int], dict] = {}
        early = self._match_embedded(first, runner, k, rerank, background, calibration, progress, ignore, verified)
        best: dict[str, float] = {}
        for q, score in zip(early.query, early.score):
            best[q] = max(best.get(q, 0.0), float(score))
        rest = [(n, p) for n, p in images if n in first.by_name and best.get(n, 0.0) < rerank.settle]
        if not rest:
            return early
        regions = self.embed_queries(rest, runner, regions=rerank.regions, local=False, whole=False,
                                     progress=_stage(progress, "regions"), region_size=rerank.region_size)
        late = self._match_embedded(first.with_regions([n for n, _ in rest], regions, self.dim), runner, k, rerank,
                                    background, calibration, progress, ignore, verified)
        return _merged(early, late, first.failures + regions.failures, len(verified))

    def match_embeddings(self, names: Sequence[str], vectors: np.ndarray, *, k: int = 10,
                         background: CopyIndex | None = None) -> MatchResult:
        """Queries embedded elsewhere: N names, (N, D) float32 -> global-score matches (rerank "none")."""
        rerank = RerankOptions(mode="none")
        self._check_match(k, rerank, background)
        n = len(names)
        views = QueryViews(list(names), np.arange(n, dtype=np.int64), np.zeros((n, 4), np.int32),
                           np.asarray(vectors, np.float32), np.arange(n, dtype=np.int64))
        return self._match_embedded(EmbeddedQueries(views, {}, []), None, k, rerank, background, None, None)

    def _check_match(self, k: int, rerank: RerankOptions, background: CopyIndex | None,
                     ignore: CopyIndex | None = None):
        """UserError for a match that cannot run -> the Calibration it scores with (None for rerank "none")."""
        if k < 1:
            raise UserError(f"k must be >= 1, got {k}")
        if background is not None:
            self.check_background(background)
        if ignore is not None:
            ignore.check_ignore_for(self.spec, self.manifest["local"])
        return self.calibration_for(rerank) if rerank.mode != "none" else None

    def _match_embedded(self, queries: EmbeddedQueries, runner, k: int, rerank: RerankOptions,
                        background: CopyIndex | None, calibration,
                        progress: Callable[[str, int], None] | None, ignore: CopyIndex | None = None,
                        verified: dict[tuple[str, int], dict] | None = None) -> MatchResult:
        """Search, verify and score queries whose views are embedded (see `match`). verified: (query, id) ->
        evidence of pairs verified already (reused, and completed with the pairs verified here)."""
        views, search = queries.views, self.search_index()
        if search is None or len(search) == 0 or not views.ids:
            return self._result([], views, None, {}, [], np.empty(0), None, queries.failures, None)
        # one search serves the candidates (top k_c of every view) and the level (top k_l of the whole views)
        k_c, k_l = max(k, rerank.verify_top), rerank.background_skip + rerank.background_k
        scores, rows = search.search(views.vectors, max(k_c, k_l))
        cands = candidates_of(views, scores[:, :k_c], rows[:, :k_c])
        bg = background.search_index_in(search.whitening) if background is not None else None
        level = query_background_level(views, scores[views.full], bg, rerank)
        evidence: list[dict] = [{} for _ in range(len(cands.query))]
        version = None  # (P,) the photo each candidate is a version of, for the margin
        if rerank.mode != "none":
            chosen = top_per_query(cands.query, cands.best_score, rerank.verify_top)
            found = self._verify(views, cands, chosen, queries.local, runner, rerank, _stage(progress, "verify"),
                                 {} if verified is None else verified)
            ignored = self._ignored_points(views, queries.local, ignore, runner, rerank) if ignore else {}
            vectors = self.catalog.embeddings_of(np.unique(cands.reference).tolist())  # one read for both groupings
            keys = list(found)
            found = dict(zip(keys, discount_frames(keys, [found[key] for key in keys], sides=("query",),
                                                   ignored=ignored, partner_of=self._partners(keys, vectors))))
            if rerank.second_look and queries.paths:
                found |= self._second_look(views, cands, chosen, found, queries, runner, rerank, vectors, ignored)
            for p in range(len(cands.query)):  # the chosen pairs, and those a second look verified
                evidence[p] = found.get((views.ids[cands.query[p]], int(cands.reference[p])), {})
            every = [(views.ids[q], int(r)) for q, r in zip(cands.query, cands.reference)]
            partner = self._partners(every, vectors, SAME_PHOTO_COSINE)
            version = np.array([partner.get(key, key[1]) for key in every], np.int64)
        features = pair_features(cands, level, evidence, rerank, version)
        if rerank.mode == "none":
            score = features["best_view"] if background is not None else cands.best_score.astype(np.float64)
            reverse = None
        else:
            score, reverse = directional_scores(features, calibration)
        keep = top_per_query(cands.query, score, k)
        keep = keep[np.lexsort((-score[keep], cands.query[keep]))]
        return self._result(keep, views, cands, features, evidence, score, reverse, queries.failures, level)

    @staticmethod
    def _partners(pairs: list[tuple[str, int]], vectors: dict[int, np.ndarray],
                  min_cosine: float = DUPLICATE_COSINE) -> dict[tuple[str, int], int]:
        """(query, reference id) pairs and {id: (D,) descriptor} -> the partner each counts as: per query, its
        candidates that are versions of one photo (shared_frames.duplicate_groups at `min_cosine`) count as one,
        the smallest id. For frame keypoints (DUPLICATE_COSINE) and for the margin's rivals
        (candidates.SAME_PHOTO_COSINE)."""
        by_query: dict[str, list[int]] = {}
        for q, r in pairs:
            by_query.setdefault(q, []).append(r)
        out = {}
        for q, refs in by_query.items():
            refs = [r for r in refs if r in vectors]
            group = duplicate_groups(refs, np.stack([vectors[r] for r in refs]), min_cosine) if refs else {}
            out.update({(q, r): group[r] for r in refs})
        return out

    def calibration_for(self, rerank: RerankOptions) -> FittedCalibration:
        """The index's calibration, checked against this use (UserError when it has none, or does not fit)."""
        self.require_local_features("to verify matches, or match with --rerank none")
        calibration = self.calibration
        if calibration is None:
            region = f" (region views by {self.region_spec.name!r})" if self.region_spec else ""
            raise UserError(f"index {self.directory} has no calibration for model {self.spec.name!r}{region} with "
                            "these local features: fit one with benchmarks/fit_calibration.py and pass it to "
                            "`copyscope index --calibration FILE`, or match with --rerank none")
        self._check_calibration(calibration, rerank.calibrated_as)
        return calibration

    def frame_points(self, names: Sequence, vectors: np.ndarray,
                     verify: Callable[[dict], dict[tuple, dict]]) -> dict:
        """This index as an ignore bank (known frames): (N,) image names and (N, D) descriptors, and
        verify({name: [ids in this index]}) -> {(name, id): evidence} -> {name: (R, 2) points of the image's
        keypoints that are inliers to one of its IGNORE_CANDIDATES nearest images here}."""
        index = self.search_index()
        if index is None or not len(index) or not len(names):
            return {}
        _, ids = index.search(vectors, IGNORE_CANDIDATES)
        found = verify({name: [int(i) for i in row if i >= 0] for name, row in zip(names, ids)})
        by_name: dict = {}
        for (name, _), e in found.items():
            by_name.setdefault(name, []).append(e)
        return {name: inlier_points(evidences) for name, evidences in by_name.items()}

    @staticmethod
    def _ignored_points(views: QueryViews, local: dict[str, LocalFeatures], ignore: CopyIndex, runner,
                        rerank: RerankOptions) -> dict[str, np.ndarray]:
        """{query: (R, 2) points of its keypoints that map to a known frame of the `ignore` index}."""
        named = [(q, v) for q, v in zip(views.ids, views.full) if q in local]
        return ignore.frame_points([q for q, _ in named], views.vectors[[v for _, v in named]],
                                   lambda pairs: verify_through(runner, pairs, local, ignore.directory / CATALOG,
                                                                ignore.manifest["local"], rerank.geometry))

    def _verify(self, views: QueryViews, cands, chosen: np.ndarray, local: dict[str, LocalFeatures], runner,
                rerank: RerankOptions, progress, verified: dict[tuple[str, int], dict]) -> dict[tuple[str, int], dict]:
        """Evidence of the chosen pairs: those in `verified` as they are, the others verified now (and added
        to `verified`)."""
        wanted = [(views.ids[cands.query[p]], int(cands.reference[p])) for p in chosen]
        pairs: dict[str, list[int]] = {}
        for q, r in wanted:
            if (q, r) not in verified:
                pairs.setdefault(q, []).append(r)
        verified.update(verify_through(runner, pairs, local, self.directory / CATALOG, self.manifest["local"],
                                       rerank.geometry, progress))
        return {pair: verified[pair] for pair in wanted}

    def _second_look(self, views: QueryViews, cands, chosen: np.ndarray, found: dict[tuple[str, int], dict],
                     queries: EmbeddedQueries, runner, rerank: RerankOptions, vectors: dict[int, np.ndarray],
                     ignored: dict[str, np.ndarray]) -> dict[tuple[str, int], dict]:
        """The evidence of second looks (pipeline.second_look) that replaces the first (or adds to it): each query
        with no candidate verified has its best region view described closer and verified against its
        candidates found by region views."""
        spec = self.local
        looks = looks_to_take(views, cands, chosen, found, rerank.verify_top)
        sizes = {q: f.image_size for q, f in queries.local.items()}
        boxes = {q: box for q, (box, _) in looks.items()}
        local = box_features(queries.paths, boxes, sizes, spec, self.prepare_options().max_pixels)
        pairs = {q: refs for q, (_, refs) in looks.items() if q in local}
        boxed = verify_through(runner, pairs, local, self.directory / CATALOG, self.manifest["local"],
                               rerank.geometry)
        keys = list(boxed)
        boxed = dict(zip(keys, discount_frames(keys, [boxed[key] for key in keys], sides=("query",),
                                               ignored=ignored, partner_of=self._partners(keys, vectors))))
        raised = sorted({r for (_, r), e in boxed.items() if e["inliers"] >= SECOND_LOOK_INLIERS})
        return second_looks(found, boxed, self.shared_frames(raised, rerank.geometry), boxes) if raised else {}

    def shared_frames(self, ids: list[int], geometry: str = "homography") -> dict[int, np.ndarray]:
        """Reference ids -> {id: (R, 2) points of its keypoints that frame other references of this index}
        (pipeline.second_look.collection_frames, among its NEIGHBOURS nearest)."""
        vectors = self.catalog.embeddings_of(ids)
        ids = [i for i in ids if i in vectors]
        if not ids:
            return {}
        _, rows = self.search_index().search(np.stack([vectors[i] for i in ids]), NEIGHBOURS + 1)
        near = {i: [int(n) for n in row if n >= 0 and n != i][:NEIGHBOURS] for i, row in zip(ids, rows.tolist())}
        return collection_frames(near, self.catalog.features, self.local, geometry,
                                 lambda pairs: self._partners(pairs, self.catalog.embeddings_of(set(near) | {
                                     n for others in near.values() for n in others})))

    def _result(self, keep, views: QueryViews, cands, features, evidence, score, reverse,
                failures: list[Failure], level: np.ndarray | None) -> MatchResult:
        keep = np.asarray(keep, np.int64)
        names = self.names()
        explain = []
        for p in keep:
            row = {"query_id": views.ids[cands.query[p]], "reference_id": names[int(cands.reference[p])],
                   "score": float(score[p]), "reverse_score": None if reverse is None else float(reverse[p]),
                   "best_view_score": float(cands.best_score[p]),
                   "whole_image_score": float(cands.whole_score[p]) if np.isfinite(cands.whole_score[p]) else None,
                   "best_view_box": views.view_box[cands.view[p]].tolist(),
                   "background_level": float(level[cands.query[p]])}
            shown = {key: value for key, value in evidence[p].items() if key != INLIERS}
            explain.append(row | {name: float(features[name][p]) for name in MATCH_FEATURES if name in features}
                           | shown)
        return MatchResult(
            query=[e["query_id"] for e in explain], reference=[e["reference_id"] for e in explain],
            reference_id=cands.reference[keep] if cands is not None else np.empty(0, np.int64),
            score=np.asarray(score, np.float64)[keep] if len(keep) else np.empty(0),
            reverse_score=None if reverse is None else reverse[keep], explain=explain, queries=list(views.ids),
            failures=failures, verified_pairs=sum(bool(e) for e in evidence))


def _merged(early: MatchResult, late: MatchResult, failures: list[Failure], verified_pairs: int) -> MatchResult:
    """The rows of `early` for queries `late` does not cover, and all of `late`, grouped by query, best first."""
    redone = set(late.queries)
    rows = [(r, i) for r in (early, late) for i in range(len(r)) if r is late or r.query[i] not in redone]
    rows.sort(key=lambda t: (t[0].query[t[1]], -t[0].score[t[1]]))
    reverse = None if early.reverse_score is None else np.array([r.reverse_score[i] for r, i in rows])
    return MatchResult(query=[r.query[i] for r, i in rows], reference=[r.reference[i] for r, i in rows],
                       reference_id=np.array([r.reference_id[i] for r, i in rows], np.int64),
                       score=np.array([r.score[i] for r, i in rows], np.float64), reverse_score=reverse,
                       explain=[r.explain[i] for r, i in rows], queries=sorted(set(early.queries) | redone),
                       failures=failures, verified_pairs=verified_pairs)


def _query_views(by_name: dict[str, list[tuple[int, np.ndarray, np.ndarray]]], dim: int) -> QueryViews:
    """query -> [(view number, box, descriptor)] -> QueryViews, queries by name and views by number
    (the whole image, view 0, first in each query's run)."""
    names = sorted(by_name)
    flat = [(q, box, emb) for q, n in enumerate(names) for _, box, emb in sorted(by_name[n], key=lambda t: t[0])]
    view_query = np.array([q for q, _, _ in flat], np.int64)
    whole = np.searchsorted(view_query, np.arange(len(names)))
    vectors = np.stack([e for _, _, e in flat]) if flat else np.empty((0, dim), np.float32)
    boxes = np.stack([b for _, b, _ in flat]) if flat else np.empty((0, 4), np.int32)
    return QueryViews(names, view_query, boxes, vectors, whole)


def _stage(progress: Callable[[str, int], None] | None, stage: str) -> Callable[[int], None] | None:
    """progress(stage, n) -> a callback of n alone for one stage (None stays None)."""
    return (lambda n: progress(stage, n)) if progress else None
