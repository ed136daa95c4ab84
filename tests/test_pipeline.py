import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from copyscope.jobs.cli import main
from copyscope.pipeline.engine import CopyIndex
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.jobs.index import index_folder
from copyscope.pipeline.model_spec import ModelSpec
from copyscope.jobs.match import match_folder
from copyscope.matching.reranking import RerankOptions
from tests.badfiles import make_bad_corpus
from tests.photo_edits import make_copy_set

FAST = ModelSpec("sscd_distilled")
SETTINGS = EmbedSettings(num_actors=1, threads_per_actor=1, batch_size=4)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_index_and_match_rank_each_true_reference_first(tmp_path, ray_local):
    truth = make_copy_set(tmp_path)
    assert main(["index", str(tmp_path / "refs"), "--out", str(tmp_path / "idx"), "--model", "sscd",
                 "--num-actors", "1", "--threads", "1", "--quiet"]) == 0
    assert main(["match", str(tmp_path / "queries"), "--index", str(tmp_path / "idx"),
                 "--out", str(tmp_path / "m.csv"), "--k", "3", "--quiet"]) == 0
    rows = read_csv(tmp_path / "m.csv")
    assert list(rows[0]) == ["query_id", "reference_id", "score"]
    best = {}
    for r in rows:
        best.setdefault(r["query_id"], r["reference_id"])  # rows come best first
    assert {q: best[q] for q in truth} == truth
    per_query = {q: sum(r["query_id"] == q for r in rows) for q in best}
    assert max(per_query.values()) == 3 and "unrelated_camera" in per_query
    scores = [float(r["score"]) for r in rows if r["query_id"] == "astronaut_crop"]
    assert scores == sorted(scores, reverse=True)


def stored_vectors(index_dir) -> dict[str, np.ndarray]:
    """name -> descriptor of every reference in an index directory."""
    engine = CopyIndex.open(index_dir)
    ids, vectors = engine.catalog.embeddings(engine.dim)
    names = engine.names()
    engine.close()
    return {names[int(i)]: v for i, v in zip(ids, vectors)}


@pytest.mark.parametrize("use_ray", [False, True])
def test_bad_files_are_reported_and_everything_else_indexed(tmp_path, ray_local, use_ray):
    expected = make_bad_corpus(tmp_path / "ref")
    summary = index_folder(tmp_path / "ref", tmp_path / "idx", FAST, settings=SETTINGS, use_ray=use_ray,
                           progress=False)
    good = sorted(os.path.splitext(n)[0] for n, ok in expected.items() if ok)
    bad = sorted(n for n, ok in expected.items() if not ok)
    assert summary.indexed == len(good) and summary.failed == len(bad)
    failures = read_csv(tmp_path / "idx" / "failures.csv")
    assert sorted(f["path"] for f in failures) == bad and all(f["reason"] for f in failures)
    assert sorted(stored_vectors(tmp_path / "idx")) == good
    engine = CopyIndex.open(tmp_path / "idx")
    assert engine.manifest["model"]["name"] == "sscd_distilled"
    assert engine.manifest["descriptor"]["preprocess"]["size"] == 288
    again = index_folder(tmp_path / "ref", tmp_path / "idx", FAST, settings=SETTINGS, use_ray=use_ray,
                         progress=False)
    assert (again.added, again.updated, again.removed, again.failed) == (0, 0, 0, len(bad))  # nothing retried

    summary = match_folder(tmp_path / "ref", tmp_path / "idx", tmp_path / "m.csv", k=1, settings=SETTINGS,
                           rerank=RerankOptions(mode="none"), use_ray=use_ray, progress=False)
    assert (summary.matched, summary.failed) == (len(good), len(bad))
    rows = read_csv(tmp_path / "m.csv")
    assert {r["query_id"]: r["reference_id"] for r in rows} == {g: g for g in good}
    assert sorted(f["path"] for f in read_csv(tmp_path / "m.failures.csv")) == bad


def test_resume_after_crash_embeds_only_what_is_missing(tmp_path):
    make_copy_set(tmp_path)
    queries = tmp_path / "queries"  # 25 images, batches of 4

    class Crash(Exception):
        pass

    def crash_after_two(k, done=[]):
        done.append(k)
        if len(done) == 2:
            raise Crash

    with pytest.raises(Crash):
        index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, use_ray=False, progress=False,
                     on_batch=crash_after_two)
    kept = stored_vectors(tmp_path / "idx")
    assert len(kept) == 8  # two committed batches survive the crash
    resumed = index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, use_ray=False, progress=False)
    assert (resumed.added, resumed.unchanged, resumed.indexed) == (25 - 8, 8, 25)

    index_folder(queries, tmp_path / "fresh", FAST, settings=SETTINGS, use_ray=False, progress=False)
    a, b = stored_vectors(tmp_path / "idx"), stored_vectors(tmp_path / "fresh")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)
    again = index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, use_ray=False, progress=False)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)


def test_changed_file_is_embedded_again_under_its_id(tmp_path):
    make_copy_set(tmp_path)
    refs = tmp_path / "refs"
    index_folder(refs, tmp_path / "idx", FAST, settings=SETTINGS, use_ray=False, progress=False)
    before = CopyIndex.open(tmp_path / "idx").catalog.ids_of(["rocket"])
    target = refs / "rocket.jpg"
    target.write_bytes((refs / "coffee.jpg").read_bytes())
    os.utime(target, ns=(time.time_ns() + 10**9,) * 2)
    summary = index_folder(refs, tmp_path / "idx", FAST, settings=SETTINGS, use_ray=False, progress=False)
    assert (summary.updated, summary.added) == (1, 0)
    assert CopyIndex.open(tmp_path / "idx").catalog.ids_of(["rocket"]) == before
    vec = stored_vectors(tmp_path / "idx")
    assert vec["rocket"] @ vec["coffee"] > 0.99


def test_kill_9_then_same_command_resumes(tmp_path):
    make_copy_set(tmp_path)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "copyscope.jobs.cli", "index", str(tmp_path / "queries"), "--out", str(out),
           "--model", "sscd_distilled", "--batch-size", "2", "--num-actors", "1", "--threads", "1", "--ray", "on",
           "--quiet"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def committed() -> int:
        try:
            with sqlite3.connect(f"file:{out / 'catalog.sqlite'}?mode=ro", uri=True) as db:
                return db.execute("SELECT COUNT(*) FROM refs").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and committed() < 4:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = committed()
    assert 4 <= before < 25
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["unchanged"] >= before and summary["added"] == 25 - summary["unchanged"]
    assert summary["indexed"] == 25 and len(stored_vectors(out)) == 25
    assert "object store" not in result.stderr and "Progress bars" not in result.stderr  # Ray's noise stays out


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys, ray_local):
    assert main(["match", str(tmp_path), "--index", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 1
    assert "no folder" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--out", str(tmp_path / "i"), "--model", "nope"]) == 1
    assert "known: sscd" in capsys.readouterr().err
