import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from copyscope.jobs.cli import main
from copyscope.matching.index import SearchIndex
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


def test_bad_files_are_reported_and_everything_else_indexed(tmp_path, ray_local):
    expected = make_bad_corpus(tmp_path / "ref")
    summary = index_folder(tmp_path / "ref", tmp_path / "idx", FAST, settings=SETTINGS, shard_size=5,
                           progress=False)
    good = sorted(os.path.splitext(n)[0] for n, ok in expected.items() if ok)
    bad = sorted(n for n, ok in expected.items() if not ok)
    assert summary.indexed == len(good) and summary.failed == len(bad)
    failures = read_csv(tmp_path / "idx" / "failures.csv")
    assert sorted(f["path"] for f in failures) == bad and all(f["reason"] for f in failures)
    index = SearchIndex.load(tmp_path / "idx")
    assert sorted(index.ids) == good
    assert index.manifest["model"]["name"] == "sscd_distilled"
    assert index.manifest["descriptor"]["preprocess"]["size"] == 288

    summary = match_folder(tmp_path / "ref", tmp_path / "idx", tmp_path / "m.csv", k=1, settings=SETTINGS,
                           rerank=RerankOptions(mode="none"), progress=False)
    assert (summary.matched, summary.failed) == (len(good), len(bad))
    rows = read_csv(tmp_path / "m.csv")
    assert {r["query_id"]: r["reference_id"] for r in rows} == {g: g for g in good}
    assert sorted(f["path"] for f in read_csv(tmp_path / "m.failures.csv")) == bad


def test_resume_after_crash_recomputes_only_missing_shards(tmp_path, ray_local):
    make_copy_set(tmp_path)
    queries = tmp_path / "queries"  # 25 images -> 7 shards of 4

    class Crash(Exception):
        pass

    def crash_after_two(k, written=[]):
        written.append(k)
        if len(written) == 2:
            raise Crash

    with pytest.raises(Crash):
        index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, shard_size=4, progress=False,
                     on_shard_written=crash_after_two)
    assert not (tmp_path / "idx" / "manifest.json").exists()
    done = sorted((tmp_path / "idx" / "shards").glob("*.npz"))
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    # A torn shard (crash while a non-atomic writer wrote it) must be recomputed, not trusted.
    (tmp_path / "idx" / "shards" / "shard-000006.npz").write_bytes(b"PK\x03\x04 torn")

    resumed = index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, shard_size=4, progress=False)
    assert resumed.shards_total == 7 and resumed.shards_computed == 7 - len(done)
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps

    index_folder(queries, tmp_path / "fresh", FAST, settings=SETTINGS, shard_size=4, progress=False)
    a, b = SearchIndex.load(tmp_path / "idx"), SearchIndex.load(tmp_path / "fresh")
    assert a.ids == b.ids
    np.testing.assert_allclose(a.index.reconstruct_n(0, len(a)), b.index.reconstruct_n(0, len(b)), atol=1e-5)

    again = index_folder(queries, tmp_path / "idx", FAST, settings=SETTINGS, shard_size=4, progress=False)
    assert again.shards_computed == 0


def test_changed_file_invalidates_its_shard(tmp_path, ray_local):
    make_copy_set(tmp_path)
    refs = tmp_path / "refs"
    index_folder(refs, tmp_path / "idx", FAST, settings=SETTINGS, shard_size=2, progress=False)
    target = refs / "rocket.jpg"
    target.write_bytes((refs / "coffee.jpg").read_bytes())
    os.utime(target, ns=(time.time_ns() + 10**9,) * 2)
    summary = index_folder(refs, tmp_path / "idx", FAST, settings=SETTINGS, shard_size=2, progress=False)
    assert summary.shards_computed == 1
    index = SearchIndex.load(tmp_path / "idx")
    vec = index.index.reconstruct_n(0, len(index))
    row = {i: n for n, i in enumerate(index.ids)}
    assert vec[row["rocket"]] @ vec[row["coffee"]] > 0.99


def test_kill_9_then_same_command_resumes(tmp_path):
    make_copy_set(tmp_path)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "copyscope.jobs.cli", "index", str(tmp_path / "queries"), "--out", str(out),
           "--model", "sscd_distilled", "--shard-size", "2", "--batch-size", "2", "--num-actors", "1",
           "--threads", "1", "--quiet"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("*.npz"))) < 2:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npz")}
    assert 2 <= len(before) < 13
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["shards_total"] == 13 and summary["shards_computed"] <= 13 - len(before)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npz")}
    assert all(after[name] == stamp for name, stamp in before.items())
    assert summary["indexed"] == 25 and len(SearchIndex.load(out)) == 25


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys, ray_local):
    assert main(["match", str(tmp_path), "--index", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--out", str(tmp_path / "i"), "--model", "nope"]) == 1
    assert "known: sscd" in capsys.readouterr().err
