"""Evaluate predictions against a ground truth: metrics.json, pr_curve.png and a self-contained report.html.

The report shows the metrics, the precision-recall curve, recall@1 by edit kind (with query
metadata), the misses (queries with a copy whose top-1 is wrong or absent) and the highest-scoring
false positives, as thumbnails embedded in the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

from copyscope.matching.metrics import Metrics, compute_metrics, recall_at_k_by_group
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.formats import GroundTruth, Matches, read_ground_truth, read_matches, read_query_meta

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
THUMB_SIZE = 160
MAX_EXAMPLES = 50
UNKNOWN_KIND = "unknown"


def evaluate(
    gt_csv: str | os.PathLike,
    pred_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    meta_csv: str | os.PathLike | None = None,
    queries_dir: str | os.PathLike | None = None,
    references_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score `pred_csv` against `gt_csv` and write metrics.json, pr_curve.png and report.html to out_dir.

    meta_csv: query metadata (`query_id,kind,transforms`), adds recall@1 by kind; queries with a copy
        that it does not list fall under "unknown".
    queries_dir, references_dir: image folders for the thumbnails, by default `queries/` and
        `references/` beside gt_csv. A missing or unreadable image shows as a placeholder.
    Returns the metrics as written to metrics.json: uAP, recall_at_p90, threshold_at_p90 (None when
    precision 0.9 is never reached), recall_at_1, recall_at_10, num_predictions, num_positives,
    predictions_for_unknown_queries (predictions whose query the ground truth does not list; they
    count as false positives), and with meta_csv recall_at_1_by_kind and positives_by_kind.
    Raises FormatError for a malformed CSV, ValueError for a ground truth without any copy.
    """
    gt, preds = read_ground_truth(gt_csv), read_matches(pred_csv)
    metrics = compute_metrics(preds.query_ids, preds.reference_ids, preds.scores, gt.query_ids, gt.reference_ids)
    summary = metrics.as_dict()
    summary["predictions_for_unknown_queries"] = int(np.sum(~np.isin(preds.query_ids, gt.query_ids)))
    if meta_csv is not None:
        summary.update(_by_kind(metrics, gt, read_query_meta(meta_csv)))

    out_dir = Path(out_dir)
    with atomic_write(out_dir / "metrics.json", "w") as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write("\n")
    curve_png = plot_pr_curve(metrics)
    with atomic_write(out_dir / "pr_curve.png", "wb") as f:
        f.write(curve_png)

    gt_dir = Path(gt_csv).parent
    images = _ImageFolders(Path(gt_dir / "queries" if queries_dir is None else queries_dir),
                           Path(gt_dir / "references" if references_dir is None else references_dir))
    misses = find_misses(metrics, gt, preds)
    false_positives = find_false_positives(metrics, gt, preds, MAX_EXAMPLES)
    images.load(_needed_images(misses, false_positives), progress)
    page = _page(_sources_note(gt_csv, pred_csv, meta_csv, summary), [
        _metrics_table(summary),
        f'<img src="data:image/png;base64,{base64.b64encode(curve_png).decode("ascii")}" alt="precision-recall curve">',
        _kind_table(summary),
        _misses_section(misses, images),
        _false_positives_section(false_positives, int(np.sum(~metrics.is_true)), images),
    ])
    with atomic_write(out_dir / "report.html", "w") as f:
        f.write(page)
    return summary


def _by_kind(metrics: Metrics, gt: GroundTruth, kinds: dict[str, str]) -> dict:
    """recall@1 and the number of true pairs per edit kind of the query."""
    labels = [kinds.get(q, UNKNOWN_KIND) for q in gt.query_ids[gt.has_copy].tolist()]
    groups = recall_at_k_by_group(metrics.gt_ranks, labels, k=1)
    return {
        "recall_at_1_by_kind": {k: r for k, (r, _) in groups.items()},
        "positives_by_kind": {k: n for k, (_, n) in groups.items()},
    }


def plot_pr_curve(metrics: Metrics) -> bytes:
    """PNG of precision against recall, with precision 0.9 and the operating point there marked."""
    fig = Figure(figsize=(6.4, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curve = metrics.curve
    ax.plot(curve.recalls, curve.precisions, lw=1.5, label=f"uAP = {metrics.uap:.4f}")
    ax.axhline(0.9, ls="--", lw=1, color="grey", label="precision 0.9")
    if metrics.threshold_at_p90 is not None:
        ax.plot([metrics.recall_at_p90], [0.9], "o", color="C3",
                label=f"recall {metrics.recall_at_p90:.4f} at score >= {metrics.threshold_at_p90:.6g}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=f"Precision-recall, {metrics.num_predictions} predictions ranked together")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------- examples for the report


@dataclass(frozen=True)
class Miss:
    """A true pair whose reference is not alone at the top of its query's predictions."""

    query_id: str
    reference_id: str
    true_rank: int | None  # 0-based, ties worst-first; None when never predicted
    true_score: float | None
    wrong_reference_id: str | None  # best-scoring other candidate of the query, None if none
    wrong_score: float | None


@dataclass(frozen=True)
class FalsePositive:
    query_id: str
    reference_id: str
    score: float
    true_reference_ids: tuple[str, ...]  # the query's copies, empty when it has none


def _top_two_by_query(preds: Matches) -> dict[str, tuple[int, ...]]:
    """{query_id: indices of its best and second-best predictions (by score)}."""
    codes = np.unique(preds.query_ids, return_inverse=True)[1]
    order = np.lexsort((-preds.scores, codes))
    starts = np.flatnonzero(np.diff(codes[order], prepend=-1) != 0)
    ends = np.append(starts[1:], len(order))
    return {str(preds.query_ids[order[s]]): tuple(order[s: min(s + 2, e)].tolist()) for s, e in zip(starts, ends)}


def find_misses(metrics: Metrics, gt: GroundTruth, preds: Matches) -> list[Miss]:
    """Every true pair with rank > 0, the most confidently wrong first (highest wrong score)."""
    top = _top_two_by_query(preds)
    misses = []
    pairs = zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist(),
                metrics.gt_predictions.tolist(), metrics.gt_ranks.tolist())
    for query_id, reference_id, true_i, rank in pairs:
        if rank == 0:
            continue
        found = true_i >= 0
        wrong = [i for i in top.get(query_id, ()) if preds.reference_ids[i] != reference_id][:1]
        misses.append(Miss(
            query_id, reference_id,
            rank if found else None, float(preds.scores[true_i]) if found else None,
            str(preds.reference_ids[wrong[0]]) if wrong else None, float(preds.scores[wrong[0]]) if wrong else None,
        ))
    misses.sort(key=lambda m: (m.wrong_score is None, -(m.wrong_score or 0.0), m.query_id))
    return misses


def find_false_positives(metrics: Metrics, gt: GroundTruth, preds: Matches, limit: int) -> list[FalsePositive]:
    """The `limit` highest-scoring false predictions, highest first (ties in file order)."""
    copies: dict[str, list[str]] = {}
    for q, r in zip(gt.query_ids[gt.has_copy].tolist(), gt.reference_ids[gt.has_copy].tolist()):
        copies.setdefault(q, []).append(r)
    wrong = np.flatnonzero(~metrics.is_true)
    wrong = wrong[np.argsort(-preds.scores[wrong], kind="stable")[:limit]]
    return [
        FalsePositive(str(preds.query_ids[i]), str(preds.reference_ids[i]), float(preds.scores[i]),
                      tuple(copies.get(str(preds.query_ids[i]), ())))
        for i in wrong.tolist()
    ]


def _needed_images(misses: list[Miss], false_positives: list[FalsePositive]) -> list[tuple[str, str]]:
    """(folder kind, image id) of every thumbnail the report shows, without repeats."""
    needed = []
    for m in misses[:MAX_EXAMPLES]:
        needed += [("queries", m.query_id), ("references", m.reference_id)]
        needed += [("references", m.wrong_reference_id)] if m.wrong_reference_id is not None else []
    for fp in false_positives:
        needed += [("queries", fp.query_id), ("references", fp.reference_id)]
    return list(dict.fromkeys(needed))


# ---------------------------------------------------------------- thumbnails


def find_image(folder: Path, image_id: str) -> Path | None:
    """The file of `image_id` (a path relative to folder, without extension), trying IMAGE_EXTENSIONS."""
    root = os.path.normpath(folder)
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        path = os.path.normpath(os.path.join(root, image_id + ext))
        if path.startswith(root + os.sep) and os.path.isfile(path):
            return Path(path)
    return None


def thumbnail_data_uri(path: Path, size: int = THUMB_SIZE) -> str:
    """A JPEG thumbnail, longest side `size`, as a `data:` URI. Raises OSError/ValueError if unreadable."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _ImageFolders:
    """Thumbnails of query and reference images by id; a missing or unreadable one gets a reason."""

    def __init__(self, queries_dir: Path, references_dir: Path):
        self.folders = {"queries": queries_dir, "references": references_dir}
        self.uris: dict[tuple[str, str], str] = {}
        self.problems: dict[tuple[str, str], tuple[str, str]] = {}  # (label, detail)

    def load(self, keys: list[tuple[str, str]], progress: bool) -> None:
        for kind, image_id in tqdm(keys, desc="thumbnails", unit="img", disable=not progress):
            path = find_image(self.folders[kind], image_id)
            if path is None:
                self.problems[kind, image_id] = ("image not found", f"no file for this id in {self.folders[kind]}")
                continue
            try:
                self.uris[kind, image_id] = thumbnail_data_uri(path)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                self.problems[kind, image_id] = ("unreadable image", f"{type(e).__name__}: {e}")

    def figure(self, kind: str, image_id: str, caption: str) -> str:
        label = f"<figcaption>{_esc(image_id)}{caption}</figcaption>"
        uri = self.uris.get((kind, image_id))
        if uri is None:
            problem, detail = self.problems[kind, image_id]
            return f'<figure><div class="missing" title="{_esc(detail)}">{_esc(problem)}</div>{label}</figure>'
        return f'<figure><img src="{uri}" alt="{_esc(kind)} {_esc(image_id)}">{label}</figure>'


# ---------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:0;width:168px;text-align:center}
figure img{max-width:160px;max-height:160px}
figcaption{font-size:12px;word-break:break-all}
.missing{width:160px;height:120px;margin:auto;background:#eee;color:#888;display:flex;
align-items:center;justify-content:center;font-size:12px;overflow:hidden}
.note{color:#666;font-size:14px}
.warn{color:#a40}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _metrics_table(summary: dict) -> str:
    keys = ("uAP", "recall_at_p90", "threshold_at_p90", "recall_at_1", "recall_at_10",
            "num_predictions", "num_positives", "predictions_for_unknown_queries")
    shown = {k: "precision 0.9 not reached" if summary[k] is None else _fmt(summary[k]) for k in keys}
    rows = "".join(f'<tr><th>{_esc(k)}</th><td class="num">{_esc(v)}</td></tr>' for k, v in shown.items())
    return f"<h2>Metrics</h2><table>{rows}</table>"


def _kind_table(summary: dict) -> str:
    if "recall_at_1_by_kind" not in summary:
        return ""
    rows = "".join(
        f'<tr><td>{_esc(k)}</td><td class="num">{_esc(_fmt(r))}</td>'
        f'<td class="num">{summary["positives_by_kind"][k]}</td></tr>'
        for k, r in summary["recall_at_1_by_kind"].items()
    )
    return (f"<h2>Recall@1 by edit kind</h2><table><tr><th>kind</th><th>recall@1</th>"
            f"<th>queries with a copy</th></tr>{rows}</table>")


def _shown(n: int) -> str:
    return f'<p class="note">{n} in all' + (f", the first {MAX_EXAMPLES} shown.</p>" if n > MAX_EXAMPLES else ".</p>")


def _misses_section(misses: list[Miss], images: _ImageFolders) -> str:
    rows = []
    for m in misses[:MAX_EXAMPLES]:
        truth = "never predicted" if m.true_rank is None else f"rank {m.true_rank + 1}, score {m.true_score:.6g}"
        wrong = (images.figure("references", m.wrong_reference_id, f"<br>score {m.wrong_score:.6g}")
                 if m.wrong_reference_id is not None else '<div class="missing">no other candidate</div>')
        true_ref = images.figure("references", m.reference_id, "<br>" + _esc(truth))
        rows.append(f"<tr><td>{images.figure('queries', m.query_id, '')}</td><td>{true_ref}</td><td>{wrong}</td></tr>")
    return (f"<h2>Misses</h2><p class=\"note\">Queries with a copy whose top-1 prediction is wrong or absent, "
            f"the most confident wrong candidates first.</p>{_shown(len(misses))}"
            f"<table><tr><th>query</th><th>true reference</th><th>top wrong candidate</th></tr>{''.join(rows)}</table>")


def _false_positives_section(false_positives: list[FalsePositive], total: int, images: _ImageFolders) -> str:
    rows = []
    for fp in false_positives:
        truth = ("query has no copy" if not fp.true_reference_ids
                 else "true: " + ", ".join(fp.true_reference_ids))
        rows.append(f"<tr><td>{images.figure('queries', fp.query_id, '<br>' + _esc(truth))}</td>"
                    f"<td>{images.figure('references', fp.reference_id, '')}</td>"
                    f'<td class="num">{fp.score:.6g}</td></tr>')
    return (f"<h2>Highest-scoring false positives</h2>{_shown(total)}"
            f"<table><tr><th>query</th><th>predicted reference</th><th>score</th></tr>{''.join(rows)}</table>")


def _sources_note(gt_csv, pred_csv, meta_csv, summary: dict) -> str:
    files = f"ground truth {_esc(gt_csv)}, predictions {_esc(pred_csv)}" + (
        f", query metadata {_esc(meta_csv)}" if meta_csv is not None else "")
    note = f'<p class="note">{files}</p>'
    if summary["num_predictions"] and summary["predictions_for_unknown_queries"] == summary["num_predictions"]:
        note += '<p class="warn">No predicted query is listed in the ground truth: do the ids match?</p>'
    return note


def _page(note: str, sections: list[str]) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>copyscope evaluation</title>'
        f"<style>{_STYLE}</style></head><body><h1>Copy-detection evaluation</h1>{note}"
        f"{''.join(sections)}</body></html>\n"
    )
