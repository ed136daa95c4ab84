"""The `copyscope` command line: parse, resolve device and config, call the pipeline, report."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from dataclasses import asdict

from copyscope.descriptors.errors import UserError
from copyscope.jobs.device import actor_device, resolve_device
from copyscope.jobs.examples import attach_examples
from copyscope.matching.index import INDEX_TYPES, IndexParams
from copyscope.matching.local_features import LOCAL_METHODS, LocalSpec
from copyscope.jobs.dedup import DEFAULT_ACT_THRESHOLD, DEFAULT_REVIEW_THRESHOLD, MIN_INLIERS
from copyscope.jobs.dedup_actions import ACTIONS
from copyscope.matching.grouping import KEEP_RULES
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.pipeline.bank_store import ROLES
from copyscope.pipeline.model_spec import ModelSpec, region_model_choice
from copyscope.matching.reranking import DEFAULT_SETTLE, RERANK_MODES, SCORE_NORMS, RerankOptions



def _settle(text: str) -> float | None:
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a score from 0 to 1, or 'off', not {text!r}")
    return value


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, or cuda[:N]")
    p.add_argument("--num-actors", type=int, default=None, help="model replicas (default: one per CPU/GPU)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per replica")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else local)")
    p.add_argument("--ray", default="auto", choices=("auto", "on", "off"),
                   help="run batch work on Ray: auto (for a few hundred images or more, or with an address), on, off")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _stored_features_args(p: argparse.ArgumentParser, methods: tuple[str, ...], calibration_default: str) -> None:
    """--local-features, --full-local-features, --calibration: what an index stores and scores with."""
    p.add_argument("--local-features", default="rootsift", choices=methods,
                   help="local features stored for verification at match time (default rootsift)")
    p.add_argument("--full-local-features", action="store_true",
                   help="store all 1000 keypoints as raw descriptors (~95 KB an image) instead of the compact default")
    p.add_argument("--calibration", default=None,
                   help=f"calibration JSON from benchmarks/calibrate.py (default: {calibration_default})")


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder of the service (its index cache, default database)")
    p.add_argument("--db", default=None, help="database URL: sqlite:///PATH (default DATA/copyscope.sqlite) or "
                   "postgresql://USER@HOST:PORT/NAME")


def _new_database_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sscd", help="model of a new database (an existing one keeps its own)")
    p.add_argument("--region-model", default="same", help="model that embeds uploads' region views, of a new "
                   "database: same (default) or sscd_distilled (faster, less accurate; see `index --region-model`)")


def _settings(args, device: str) -> EmbedSettings:
    return EmbedSettings(device=device, num_actors=args.num_actors, threads_per_actor=args.threads,
                         batch_size=args.batch_size, actor_device=actor_device(device))


def _device(args, model: str) -> str:
    """--device resolved for the runtime that runs `model` (onnxruntime or torch)."""
    from copyscope.descriptors import descriptor_backend

    return resolve_device(args.device, descriptor_backend(model))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="copyscope", description="Find edited copies of reference images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error (anywhere in the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="embed a folder of reference images and build a FAISS index")
    p.add_argument("ref_dir", nargs="?", default=None, help="folder of reference images (or --descriptors)")
    p.add_argument("--out", required=True, help="index folder (re-running the same command resumes)")
    p.add_argument("--model", default="sscd", help="sscd, sscd_distilled, sscd_torchscript, timm:<arch>")
    p.add_argument("--weights", default=None, help="local weights file (or 'imagenet' for packaged timm weights)")
    p.add_argument("--image-size", type=int, default=None, help="short side the model sees (default: model's)")
    p.add_argument("--index-type", default="flat", choices=INDEX_TYPES)
    _stored_features_args(p, (*LOCAL_METHODS, "none"), "the packaged one, when it fits")
    p.add_argument("--region-model", default="same",
                   help="model that embeds queries' region views: same (the index's model, default), or one of "
                        "the same descriptor space (sscd_distilled for sscd: matching twice as fast, less accurate)")
    p.add_argument("--whitening", default="collection", choices=("collection", "none"),
                   help="collection (default): whiten descriptors by the references' own covariance where a "
                        "calibration was fitted for it, so templated content stops looking alike; none: raw")
    p.add_argument("--descriptors", default=None,
                   help="Parquet file or folder of precomputed embeddings (columns id, embedding) instead of images")
    _embed_args(p)

    p = sub.add_parser("match", help="match a folder of query images against an index")
    p.add_argument("query_dir", nargs="?", default=None, help="folder of query images (or --descriptors)")
    p.add_argument("--index", default=None, help="index folder made by `copyscope index`")
    p.add_argument("--out", default=None, help="matches CSV: query_id,reference_id,score (with --data: optional, "
                   "one row per decision)")
    p.add_argument("--data", default=None, help="instead of --index: a service data folder; the images are a "
                   "backlog of uploads matched against its banks and recorded like `POST /v1/match`")
    p.add_argument("--db", default=None, help="with --data: the service database (default DATA/copyscope.sqlite)")
    p.add_argument("--banks", default=None, help="with --data: comma-separated banks (default: every enabled one)")
    p.add_argument("--k", type=int, default=10, help="candidates per query")
    p.add_argument("--rerank", default="full", choices=RERANK_MODES,
                   help="none: global scores; verify: + local verification; full: + region search (default)")
    p.add_argument("--background", default=None, help="index of background images for score normalisation")
    p.add_argument("--score-norm", default="stretch", choices=SCORE_NORMS,
                   help="how the background level normalises global scores: stretch (default) or subtract (SSCD: "
                        "score - beta * level)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the background level with subtract")
    p.add_argument("--ignore", default=None,
                   help="index of known frames whose matches do not count: app screenshots, meme templates, logos")
    p.add_argument("--regions", type=int, default=12, help="sub-regions searched per query with --rerank full")
    p.add_argument("--region-size", type=int, default=None,
                   help="short side region views are embedded at (default: the model's size, which the packaged "
                        "calibrations were fitted at; others are faster but not recalibrated)")
    p.add_argument("--verify-top", type=int, default=10, help="candidates verified per query")
    p.add_argument("--settle", type=_settle, default=DEFAULT_SETTLE, metavar="SCORE|off",
                   help=f"with --rerank full, a query whose whole image scores >= SCORE is decided without region "
                        f"search (default {DEFAULT_SETTLE}); off: search the regions of every query")
    p.add_argument("--no-second-look", dest="second_look", action="store_false",
                   help="do not verify again, closer, the best region view of a query with no candidate verified")
    p.add_argument("--explain", default=None, help="write every match's evidence as JSON lines here")
    p.add_argument("--descriptors", default=None,
                   help="Parquet file or folder of precomputed query embeddings (columns id, embedding); --rerank none")
    _embed_args(p)

    p = sub.add_parser("evaluate", help="DISC2021 metrics of a matches CSV, with a PR curve and an HTML report")
    p.add_argument("gt_csv", help="ground truth: query_id,reference_id (empty reference = no copy)")
    p.add_argument("pred_csv", help="predictions: query_id,reference_id,score")
    p.add_argument("--out", required=True, help="folder for metrics.json, pr_curve.png, report.html")
    p.add_argument("--meta", default=None, help="query_meta.csv, for recall@1 by edit kind")
    p.add_argument("--queries", default=None, help="query images (default: queries/ beside GT_CSV)")
    p.add_argument("--references", default=None, help="reference images (default: references/ beside GT_CSV)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("show", help="draw a query and a reference side by side with their verified matches")
    p.add_argument("query")
    p.add_argument("reference")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--local-features", default="rootsift", choices=LOCAL_METHODS)

    p = sub.add_parser("dedup", help="find exact and near duplicates in a folder, group them, act on the copies")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="folder for groups.json, pairs.csv, plan.csv, report.html, index/")
    p.add_argument("--model", default=None, help="default sscd (with --index: the index's model)")
    p.add_argument("--weights", default=None, help="local weights file of the model")
    p.add_argument("--index", default=None, help="also dedup against this reference index (references are kept)")
    p.add_argument("--ignore", default=None,
                   help="index of known frames whose matches link nothing: app screenshots, meme templates, logos")
    p.add_argument("--keep", default="largest", choices=KEEP_RULES, help="which file of a group is kept")
    p.add_argument("--action", default="report", choices=ACTIONS, help="report (default) touches nothing")
    p.add_argument("--act-threshold", type=float, default=DEFAULT_ACT_THRESHOLD,
                   help="least copy probability of every link between a copy and its keeper for --action to touch it")
    p.add_argument("--review-threshold", "--threshold", dest="review_threshold", type=float,
                   default=DEFAULT_REVIEW_THRESHOLD, help="least copy probability of a link: grouped, listed for "
                   "review in plan.csv (--threshold: the same)")
    p.add_argument("--min-inliers", type=int, default=MIN_INLIERS, help="least inliers of a link's geometric map")
    p.add_argument("--k", type=int, default=16, help="neighbours searched per image")
    p.add_argument("--index-type", default="flat", choices=INDEX_TYPES, help="index of the kNN self-join")
    p.add_argument("--move-to", default=None, help="where --action move puts copies (default OUT/moved)")
    p.add_argument("--yes", action="store_true", help="confirm --action delete")
    _stored_features_args(p, LOCAL_METHODS, "--index's, else the packaged one")
    _embed_args(p)

    bench = sub.add_parser("benchmark", help="build DISC2021-style benchmarks")
    bench_sub = bench.add_subparsers(dest="benchmark_command", required=True)
    p = bench_sub.add_parser("make", help="references, edited queries, background and ground truth from photos")
    p.add_argument("photos_dir")
    p.add_argument("--out", required=True, help="benchmark folder (must be empty or absent)")
    p.add_argument("--n-references", type=int, default=None, help="default: 40 %% of the photos")
    p.add_argument("--n-queries", type=int, default=None, help="default: 40 %% of the photos, half of them copies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--templates", type=int, default=0, metavar="K",
                   help="add K screenshot frames, K meme styles and K shared backgrounds, each on --template-size "
                        "photos: templated references, queries without a copy, and copies of plain references "
                        "put into them (default 0: none)")
    p.add_argument("--template-size", type=int, default=20, help="photos put into each template (default 20)")
    p.add_argument("--lookalikes", action="store_true",
                   help="add look-alike references: the other of two crops that do not overlap of every photo a "
                        "query starts from, and photos of the same fine-grained group (dogs, birds, snakes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("demo", help="the whole pipeline on photos that ship with the packages (about a minute)")
    p.add_argument("--out", default="copyscope-demo", help="folder to write (default ./copyscope-demo)")
    p.add_argument("--small", action="store_true", help="4 references and 4 queries (a quick check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else local)")

    p = sub.add_parser("serve", help="match uploads online against banks of known images (HTTP API, review page)")
    _service_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8321)
    _new_database_models(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    keys = sub.add_parser("keys", help="API keys of a service: create (printed once), list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="a new key, printed once (only its hash is stored)")
    _service_args(p)
    p.add_argument("--role", required=True, choices=ROLES, help="matcher: match and read its own results; "
                   "curator: also banks, items and reviews; admin: everything")
    p.add_argument("--name", required=True, help="who holds the key (shown in the audit log)")
    p = keys_sub.add_parser("list", help="every key: name, role, prefix, created, revoked")
    _service_args(p)
    p = keys_sub.add_parser("revoke", help="revoke a key by name (its requests get 401 from then on)")
    _service_args(p)
    p.add_argument("--name", required=True)

    banks = sub.add_parser("banks", help="banks of a service from the command line: import a folder, list")
    banks_sub = banks.add_subparsers(dest="banks_command", required=True)
    p = banks_sub.add_parser("import", help="add every image of a folder to a bank (content_id: its image id)")
    p.add_argument("folder")
    _service_args(p)
    p.add_argument("--bank", required=True, help="bank to add to (created with default thresholds if missing)")
    _new_database_models(p)
    _embed_args(p)
    p = banks_sub.add_parser("list", help="every bank with its item count")
    _service_args(p)

    p = sub.add_parser("doctor", help="versions, devices, Ray address and model files; the fix for what is missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    attach_examples(parser)
    return parser


def run_index(args) -> dict:
    from copyscope.jobs.index import index_embeddings, index_folder

    options = {"image_size": args.image_size} if args.image_size else {}
    spec = ModelSpec(args.model, args.weights, options)
    if (args.ref_dir is None) == (args.descriptors is None):
        raise UserError("give a folder of reference images, or --descriptors PATH (not both)")
    if args.descriptors:
        if args.region_model != "same":
            raise UserError("--region-model is for indexes that match images: drop it with --descriptors")
        return asdict(index_embeddings(args.descriptors, args.out, spec, index_type=args.index_type))
    device = _device(args, spec.name)
    summary = index_folder(args.ref_dir, args.out, spec, index_type=args.index_type, index_params=IndexParams(),
                           settings=_settings(args, device), calibration=_read_calibration(args.calibration),
                           local=_local_spec(args), region_model=region_model_choice(args.region_model, spec),
                           ray_address=args.ray_address, use_ray=_use_ray(args), progress=not args.quiet,
                           whitening=args.whitening == "collection")
    return asdict(summary)


def _read_calibration(path: str | None):
    """--calibration FILE -> FittedCalibration (None without the option)."""
    from copyscope.matching.scoring import FittedCalibration

    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return FittedCalibration.from_dict(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the calibration {path}: {e}") from e


def _local_spec(args) -> LocalSpec | None:
    """--local-features (and --full-local-features) -> what the index extracts and stores."""
    if args.local_features == "none":
        return None
    if args.full_local_features:
        return LocalSpec.uncompressed(args.local_features)
    return LocalSpec.for_method(args.local_features)


def _use_ray(args) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.ray]


def run_match(args) -> dict:
    from copyscope.jobs.match import match_embeddings_file, match_folder

    if (args.query_dir is None) == (args.descriptors is None):
        raise UserError("give a folder of query images, or --descriptors PATH (not both)")
    if args.data is not None:
        return _run_backlog(args)
    if args.index is None or args.out is None:
        raise UserError("give --index DIR and --out CSV (or --data DIR to match a backlog against service banks)")
    if args.descriptors:
        return asdict(match_embeddings_file(args.descriptors, args.index, args.out, k=args.k,
                                            background_dir=args.background))
    from copyscope.pipeline.index_files import read_manifest

    device = _device(args, read_manifest(args.index)["model"]["name"])
    summary = match_folder(args.query_dir, args.index, args.out, k=args.k, rerank=RerankOptions(
                               mode=args.rerank, regions=args.regions, region_size=args.region_size,
                               verify_top=args.verify_top,
                               score_norm=args.score_norm, beta=args.beta, settle=args.settle,
                               second_look=args.second_look),
                           background_dir=args.background, ignore_dir=args.ignore, explain_path=args.explain,
                           settings=_settings(args, device),
                           use_gpu=device.startswith("cuda") and gpu_search_available(),
                           ray_address=args.ray_address, use_ray=_use_ray(args), progress=not args.quiet)
    return asdict(summary)


def _run_backlog(args) -> dict:
    from copyscope.jobs.backlog import match_backlog

    if args.index is not None or args.descriptors is not None:
        raise UserError("--data matches a folder of images against the service's banks: drop --index/--descriptors")
    banks = [b.strip() for b in args.banks.split(",") if b.strip()] if args.banks else None
    return match_backlog(args.query_dir, args.data, args.db, banks=banks, out_csv=args.out,
                         settings=_settings(args, _device(args, "sscd")), ray_address=args.ray_address,
                         use_ray=_use_ray(args), progress=not args.quiet)


def run_serve(args) -> int:
    from copyscope.jobs.serve import serve

    return serve(args.data, args.db, args.host, args.port, model=args.model, log_level=args.log_level,
                 region_model=_region_name(args))


def _region_name(args) -> str | None:
    """--region-model of a new service database -> the name BankEngine.open takes (None: --model's)."""
    region = region_model_choice(args.region_model, ModelSpec(args.model))
    return region.name if region else None


def _store(args):
    """The service database of --data / --db, for commands that need no engine."""
    from copyscope.pipeline.bank_db import Database, default_url
    from copyscope.pipeline.bank_store import BankStore

    return BankStore(Database.connect(args.db or default_url(args.data)))


def run_keys(args):
    from copyscope.pipeline.bank_store import Actor

    store = _store(args)
    actor = Actor("cli", "admin")
    if args.keys_command == "create":
        print(store.create_key(actor, args.name, args.role))
        print(f"key {args.name!r} ({args.role}): shown once, store it now", file=sys.stderr)
        return 0
    if args.keys_command == "revoke":
        store.revoke_key(actor, args.name)
        return {"revoked": args.name}
    return {"keys": store.keys()}


def run_banks(args) -> dict:
    from copyscope.jobs.backlog import import_folder

    if args.banks_command == "import":
        return import_folder(args.folder, args.data, args.db, args.bank, model=args.model,
                             region_model=_region_name(args),
                             settings=_settings(args, _device(args, args.model)), ray_address=args.ray_address,
                             use_ray=_use_ray(args), progress=not args.quiet)
    store = _store(args)
    counts = store.items_per_bank()
    return {"banks": [b.to_json(items=counts.get(b.name, 0)) for b in store.banks()]}


def run_dedup(args) -> dict:
    from copyscope.jobs.dedup import DedupOptions, dedup_folder
    from copyscope.pipeline.index_files import read_manifest

    options = DedupOptions(keep=args.keep, action=args.action, review_threshold=args.review_threshold,
                           act_threshold=args.act_threshold, min_inliers=args.min_inliers, k=args.k,
                           index_type=args.index_type, move_to=args.move_to, yes=args.yes)
    model = args.model or (read_manifest(args.index)["model"]["name"] if args.index else "sscd")
    device = _device(args, model)
    spec = ModelSpec(args.model, args.weights) if args.model else None
    summary = dedup_folder(args.folder, args.out, spec, options=options, index_dir=args.index, ignore_dir=args.ignore,
                           settings=_settings(args, device), local=_local_spec(args),
                           calibration=_read_calibration(args.calibration),
                           ray_address=args.ray_address, use_ray=_use_ray(args), progress=not args.quiet)
    return asdict(summary)


def run_evaluate(args) -> dict:
    from copyscope.jobs.evaluate import evaluate

    return evaluate(args.gt_csv, args.pred_csv, args.out, meta_csv=args.meta, queries_dir=args.queries,
                    references_dir=args.references, progress=not args.quiet)


def run_benchmark_make(args) -> dict:
    from copyscope.jobs.benchmark import make_benchmark

    summary = make_benchmark(args.photos_dir, args.out, n_references=args.n_references, n_queries=args.n_queries,
                             seed=args.seed, progress=not args.quiet, templates=args.templates,
                             template_size=args.template_size, lookalikes=args.lookalikes)
    for failure in summary.failures:
        print(f"skipped {failure.path}: {failure.reason}", file=sys.stderr)
    return asdict(summary)


def run_show(args) -> dict:
    from copyscope.pipeline.reports.pair_drawing import show_pair

    v = show_pair(args.query, args.reference, args.out, method=args.local_features)
    return {"out": args.out, "inliers": v.inliers, "matches": v.matches, "inlier_ratio": round(v.inlier_ratio, 4),
            "query_coverage": round(v.query_coverage, 4), "reference_coverage": round(v.reference_coverage, 4),
            "mirrored": v.mirrored, "reason": v.reason}


def run_demo(args) -> int:
    from copyscope.jobs.demo import main as demo_main

    return demo_main(args)


def run_doctor(args) -> int:
    from copyscope.jobs.doctor import diagnose, format_report

    report = diagnose()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("copyscope")
    except PackageNotFoundError:
        return "unknown (not installed)"


def check_inputs(args) -> None:
    """Fail in one line, saying what to do, when an input folder, file or index does not exist."""
    from pathlib import Path

    def folder(path, what):
        if not Path(path).is_dir():
            raise UserError(f"no folder {path}: give a folder of {what}" if not Path(path).exists() else
                            f"{path} is a file: give a folder of {what}")

    def file(path, what):
        if not Path(path).is_file():
            raise UserError(f"no file {path}: give {what}")

    def index(path, option):
        if not (Path(path) / "manifest.json").is_file():
            problem = f"no index at {path}" if not Path(path).exists() else f"{path} is not an index (no manifest.json)"
            raise UserError(f"{problem}: build one with `copyscope index REF_DIR --out {path}`"
                            + (" --local-features none" if option == "--background" else "") + f", then pass {option}")

    command = args.command
    if command == "index" and args.ref_dir is not None:
        folder(args.ref_dir, "reference images")
    elif command in ("match", "dedup"):
        if command == "dedup":
            folder(args.folder, "images to dedup")
        elif args.query_dir is not None:
            folder(args.query_dir, "query images")
        for option in ("index", "background", "ignore"):  # match requires --index; the others are optional
            if getattr(args, option, None):
                index(getattr(args, option), f"--{option}")
    elif command == "evaluate":
        file(args.gt_csv, "a ground truth CSV (query_id,reference_id), e.g. BENCH/ground_truth.csv")
        file(args.pred_csv, "a matches CSV (query_id,reference_id,score) written by `copyscope match`")
        if args.meta:
            file(args.meta, "a query_meta.csv (query_id,kind,...), e.g. BENCH/query_meta.csv")
    elif command == "show":
        file(args.query, "a query image")
        file(args.reference, "a reference image")
    elif command == "benchmark":
        folder(args.photos_dir, "photos")
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} is not empty: give a new folder with --out")


def gpu_search_available() -> bool:
    from copyscope.matching.index import gpu_available

    return gpu_available()


COMMANDS = {"index": run_index, "match": run_match, "evaluate": run_evaluate, "benchmark": run_benchmark_make,
            "show": run_show, "dedup": run_dedup, "demo": run_demo, "doctor": run_doctor, "serve": run_serve,
            "keys": run_keys, "banks": run_banks}


def main(argv: list[str] | None = None) -> int:
    """Run one command; -> exit code. A UserError prints one line (its traceback too with --debug) and gives 1;
    any other exception is a bug and propagates with its traceback. A command returns its JSON summary (printed)
    or, having printed its own output, an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        check_inputs(args)
        summary = COMMANDS[args.command](args)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"copyscope {args.command}: error: {e}", file=sys.stderr)
        return 1
    if isinstance(summary, int):
        return summary
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
