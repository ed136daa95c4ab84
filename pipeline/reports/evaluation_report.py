"""The evaluation's pr_curve.png and self-contained report.html: the metrics, the precision-recall curve,
the reliability table and curve of probability scores, recall@1 by edit kind, the misses and the
highest-scoring false positives as embedded thumbnails.

The job (`copyscope.jobs.evaluate`) computes the metrics and picks the examples; this module draws them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

from copyscope.matching.metrics import Metrics
from copyscope.pipeline.atomic import atomic_write
from copyscope.pipeline.files import find_image
from copyscope.pipeline.reports.html import esc, page, png_data_uri, thumbnail_data_uri

MAX_EXAMPLES = 50


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


def write_report(out_dir: str | os.PathLike, summary: dict, metrics: Metrics, misses: list[Miss],
                 false_positives: list[FalsePositive], *, queries_dir: str | os.PathLike,
                 references_dir: str | os.PathLike, sources: dict[str, object], progress: bool = True) -> None:
    """Write out_dir/pr_curve.png and out_dir/report.html (atomically).

    summary: the metrics as in metrics.json; misses: all of them (the first MAX_EXAMPLES shown);
    false_positives: the ones to show, highest first. sources: {label: file} named at the top of the
    page, e.g. {"ground truth": gt_csv, "predictions": pred_csv}. A missing or unreadable image shows
    as a placeholder with the reason.
    """
    out_dir = Path(out_dir)
    curve_png = plot_pr_curve(metrics)
    with atomic_write(out_dir / "pr_curve.png", "wb") as f:
        f.write(curve_png)
    images = ImageFolders(Path(queries_dir), Path(references_dir))
    images.load(needed_images(misses, false_positives), progress)
    body = "<h1>Copy-detection evaluation</h1>" + _sources_note(sources, summary) + "".join([
        _metrics_table(summary),
        f'<img src="{png_data_uri(curve_png)}" alt="precision-recall curve">',
        _reliability_section(summary, metrics),
        _kind_table(summary),
        _misses_section(misses, images),
        _false_positives_section(false_positives, int(np.sum(~metrics.is_true)), images),
    ])
    with atomic_write(out_dir / "report.html", "w") as f:
        f.write(page("copyscope evaluation", body))


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


def plot_reliability(bins: list[dict], ece: float) -> bytes:
    """PNG of observed precision against mean score per non-empty bin (summary["reliability"]), with the diagonal."""
    fig = Figure(figsize=(6.4, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="perfect calibration")
    ax.plot([b["mean_score"] for b in shown], [b["precision"] for b in shown], "o-", lw=1.5,
            label=f"ECE = {ece:.4f}")
    for b in shown:
        ax.annotate(str(b["count"]), (b["mean_score"], b["precision"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=8, color="grey")
    ax.set(xlim=(0, 1.06), ylim=(0, 1.02), xlabel="mean score in bin", ylabel="observed precision (share correct)",
           title="Reliability: precision against score, predictions per bin annotated")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def needed_images(misses: list[Miss], false_positives: list[FalsePositive]) -> list[tuple[str, str]]:
    """(folder kind, image id) of every thumbnail the report shows, without repeats."""
    needed = []
    for m in misses[:MAX_EXAMPLES]:
        needed += [("queries", m.query_id), ("references", m.reference_id)]
        needed += [("references", m.wrong_reference_id)] if m.wrong_reference_id is not None else []
    for fp in false_positives:
        needed += [("queries", fp.query_id), ("references", fp.reference_id)]
    return list(dict.fromkeys(needed))


class ImageFolders:
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
        label = f"<figcaption>{esc(image_id)}{caption}</figcaption>"
        uri = self.uris.get((kind, image_id))
        if uri is None:
            problem, detail = self.problems[kind, image_id]
            return f'<figure><div class="missing" title="{esc(detail)}">{esc(problem)}</div>{label}</figure>'
        return f'<figure><img src="{uri}" alt="{esc(kind)} {esc(image_id)}">{label}</figure>'


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _metrics_table(summary: dict) -> str:
    keys = ("uAP", "recall_at_p90", "threshold_at_p90", "recall_at_1", "recall_at_10",
            "num_predictions", "num_positives", "predictions_for_unknown_queries")
    shown = {k: "precision 0.9 not reached" if summary[k] is None else _fmt(summary[k]) for k in keys}
    rows = "".join(f'<tr><th>{esc(k)}</th><td class="num">{esc(v)}</td></tr>' for k, v in shown.items())
    return f"<h2>Metrics</h2><table>{rows}</table>"


def _cell(value) -> str:
    """A table cell's text: a dash for None (an empty bin, nothing accepted)."""
    return "&ndash;" if value is None else esc(_fmt(value))


def _reliability_section(summary: dict, metrics: Metrics) -> str:
    """The reliability table, curve, ECE and precision/recall at fixed scores; or why there are none."""
    head = "<h2>Reliability of the scores</h2>"
    if summary["reliability"] is None:
        lo, hi = metrics.curve.thresholds[-1], metrics.curve.thresholds[0]
        return (f'{head}<p class="warn">No reliability table: scores range from {lo:.6g} to {hi:.6g}, outside 0..1, '
                "so they are raw similarities, not probabilities. Match with a calibrated reranking "
                "(--rerank verify or full) to get copy probabilities.</p>")
    rows = "".join(f'<tr><td>{b["lo"]:.2f} &ndash; {b["hi"]:.2f}</td><td class="num">{b["count"]}</td>'
                   f'<td class="num">{_cell(b["mean_score"])}</td><td class="num">{_cell(b["precision"])}</td></tr>'
                   for b in summary["reliability"])
    points = "".join(f'<tr><th>score &ge; {esc(t)}</th><td class="num">{p["count"]}</td>'
                     f'<td class="num">{_cell(p["precision"])}</td><td class="num">{_cell(p["recall"])}</td></tr>'
                     for t, p in summary["at_threshold"].items())
    png = plot_reliability(summary["reliability"], summary["ece"])
    return (f'{head}<p class="note">A score is read as the probability that the pair is a copy: in a well '
            f"calibrated bin the share of correct predictions equals the mean score. Expected calibration "
            f"error (ECE, the count-weighted mean gap) = {summary['ece']:.4f}.</p>"
            f"<table><tr><th>score bin</th><th>predictions</th><th>mean score</th><th>observed precision</th></tr>"
            f"{rows}</table>"
            f'<img src="{png_data_uri(png)}" alt="reliability curve">'
            f"<table><tr><th>accepted</th><th>predictions</th><th>precision</th><th>recall</th></tr>{points}</table>")


def _kind_table(summary: dict) -> str:
    if "recall_at_1_by_kind" not in summary:
        return ""
    at = summary.get("recall_at_threshold_by_kind")
    thresholds = list(next(iter(at.values()))) if at else []
    rows = "".join(
        f'<tr><td>{esc(k)}</td><td class="num">{esc(_fmt(r))}</td>'
        + "".join(f'<td class="num">{esc(_fmt(at[k][t]))}</td>' for t in thresholds)
        + f'<td class="num">{summary["positives_by_kind"][k]}</td></tr>'
        for k, r in summary["recall_at_1_by_kind"].items()
    )
    heads = "".join(f"<th>recall at score &ge; {esc(t)}</th>" for t in thresholds)
    return (f"<h2>Recall by edit kind</h2><table><tr><th>kind</th><th>recall@1</th>{heads}"
            f"<th>queries with a copy</th></tr>{rows}</table>")


def _shown(n: int) -> str:
    return f'<p class="note">{n} in all' + (f", the first {MAX_EXAMPLES} shown.</p>" if n > MAX_EXAMPLES else ".</p>")


def _misses_section(misses: list[Miss], images: ImageFolders) -> str:
    rows = []
    for m in misses[:MAX_EXAMPLES]:
        truth = "never predicted" if m.true_rank is None else f"rank {m.true_rank + 1}, score {m.true_score:.6g}"
        wrong = (images.figure("references", m.wrong_reference_id, f"<br>score {m.wrong_score:.6g}")
                 if m.wrong_reference_id is not None else '<div class="missing">no other candidate</div>')
        true_ref = images.figure("references", m.reference_id, "<br>" + esc(truth))
        rows.append(f"<tr><td>{images.figure('queries', m.query_id, '')}</td><td>{true_ref}</td><td>{wrong}</td></tr>")
    return (f"<h2>Misses</h2><p class=\"note\">Queries with a copy whose top-1 prediction is wrong or absent, "
            f"the most confident wrong candidates first.</p>{_shown(len(misses))}"
            f"<table><tr><th>query</th><th>true reference</th><th>top wrong candidate</th></tr>{''.join(rows)}</table>")


def _false_positives_section(false_positives: list[FalsePositive], total: int, images: ImageFolders) -> str:
    rows = []
    for fp in false_positives:
        truth = ("query has no copy" if not fp.true_reference_ids
                 else "true: " + ", ".join(fp.true_reference_ids))
        rows.append(f"<tr><td>{images.figure('queries', fp.query_id, '<br>' + esc(truth))}</td>"
                    f"<td>{images.figure('references', fp.reference_id, '')}</td>"
                    f'<td class="num">{fp.score:.6g}</td></tr>')
    return (f"<h2>Highest-scoring false positives</h2>{_shown(total)}"
            f"<table><tr><th>query</th><th>predicted reference</th><th>score</th></tr>{''.join(rows)}</table>")


def _sources_note(sources: dict[str, object], summary: dict) -> str:
    files = ", ".join(f"{esc(label)} {esc(path)}" for label, path in sources.items() if path is not None)
    note = f'<p class="note">{files}</p>'
    if summary["num_predictions"] and summary["predictions_for_unknown_queries"] == summary["num_predictions"]:
        note += '<p class="warn">No predicted query is listed in the ground truth: do the ids match?</p>'
    return note
