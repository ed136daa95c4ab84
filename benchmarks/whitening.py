"""How the collection whitening ranks candidates, before any verification: raw against whitened descriptors.

    .venv/bin/python benchmarks/whitening.py BENCH [BENCH ...] --index-of BENCH=IDX ... [--priors 0,64,128,256]

For each benchmark (made by `copyscope benchmark make`; IDX: any index of the benchmark's model, used for its
model only) the queries are embedded with their region views as `match` embeds them, the references as whole
images. A pair's score is its best view's cosine stretched by the query's background level (the `match` rule);
the top 10 references of each query are ranked over all queries: micro-AP, recall at precision 0.9 and
recall@1, raw and whitened by a whitening fitted on the benchmark's references with each prior
(matching.whitening). "fitted on N" fits on N random references only and searches all of them: a whitening
fitted when the collection was smaller. Use tuning-half benchmarks (benchmarks/halves.py) to choose.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from copyscope.matching.metrics import compute_metrics
from copyscope.matching.reranking import RerankOptions
from copyscope.matching.scoring import stretch, tail_level
from copyscope.matching.whitening import WhiteningSpec, fit_whitening
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.files import list_images
from copyscope.pipeline.runners import LocalRunner


def embedded(engine: CopyIndex, folder: Path, regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V,) image name and (V,) view number of every view, (V, D) descriptors."""
    views = engine.embed_queries(list_images(folder).entries, LocalRunner(), regions=regions, local=False).by_name
    names = np.array([n for n, rows in views.items() for _ in rows])
    numbers = np.array([int(v) for rows in views.values() for v, _, _ in rows])
    return names, numbers, np.stack([vec for rows in views.values() for _, _, vec in rows]).astype(np.float32)


def ranked(queries, views, query_vectors, references, reference_vectors, truth: dict[str, str], transform=None,
           k: int = 10) -> tuple[float, float, float]:
    """micro-AP, recall at precision 0.9 and recall@1 of the best-view scores (see the module doc)."""
    if transform is not None:
        query_vectors, reference_vectors = transform(query_vectors), transform(reference_vectors)
    sims = query_vectors @ reference_vectors.T
    names, row = np.unique(queries, return_inverse=True)
    best = np.full((len(names), len(references)), -np.inf, np.float32)
    np.maximum.at(best, row, sims)
    whole = np.full_like(best, -np.inf)
    whole[row[views == 0]] = sims[views == 0]
    rerank = RerankOptions()
    level = tail_level(-np.sort(-whole, axis=1)[:, :rerank.background_skip + rerank.background_k],
                       rerank.background_skip)
    score = stretch(best, level)
    top = np.argsort(-score, axis=1)[:, :k]
    m = compute_metrics(np.repeat(names, top.shape[1]), references[top].ravel(),
                        np.take_along_axis(score, top, 1).ravel(), list(truth), list(truth.values()))
    return m.uap, m.recall_at_p90, m.recall_at_1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+")
    parser.add_argument("--index-of", nargs="+", required=True, help="BENCH=IDX: an index giving the model")
    parser.add_argument("--priors", default="0,64,128,256")
    parser.add_argument("--subsets", default="50,100", help="fit on this many random references too")
    args = parser.parse_args()
    index_of = dict(item.split("=", 1) for item in args.index_of)
    for bench in args.benchmarks:
        engine = CopyIndex.open(index_of[bench])
        with open(Path(bench) / "ground_truth.csv", newline="") as f:
            truth = {r["query_id"]: r["reference_id"] for r in csv.DictReader(f)}
        q, v, qx = embedded(engine, Path(bench) / "queries", RerankOptions().regions)
        r, _, rx = embedded(engine, Path(bench) / "references", 0)
        rows = [("raw", ranked(q, v, qx, r, rx, truth))]
        for prior in (int(p) for p in args.priors.split(",")):
            spec = WhiteningSpec(prior=prior)
            rows.append((f"whitened, prior {prior}", ranked(q, v, qx, r, rx, truth, fit_whitening(rx, spec))))
            for n in (int(s) for s in args.subsets.split(",") if s):
                pick = np.random.default_rng(0).choice(len(rx), min(n, len(rx)), replace=False)
                rows.append((f"whitened, prior {prior}, fitted on {len(pick)}",
                             ranked(q, v, qx, r, rx, truth, fit_whitening(rx[pick], spec))))
        print(f"{bench}: {len(r)} references, {len(set(q))} queries")
        for name, (uap, r90, r1) in rows:
            print(f"  {name:40s} uAP {uap:.3f}  R@P90 {r90:.3f}  R@1 {r1:.3f}")


if __name__ == "__main__":
    main()
