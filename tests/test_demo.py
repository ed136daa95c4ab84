"""`copyscope demo --small` end to end in a subprocess: files written, numbers in range, no process left."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from copyscope.descriptors.errors import UserError
from copyscope.jobs import demo


def _processes_with(marker: str) -> list[int]:
    """PIDs of processes whose environment holds `marker` (Ray's raylet, GCS and workers inherit it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find stray processes")
def test_small_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    marker = f"COPYSCOPE_DEMO_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", marker.split("=")[0]: marker.split("=")[1]}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", "demo", "--small", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    for path in ("photos/astronaut.png", "bench/ground_truth.csv", "bench/query_meta.csv", "index/manifest.json",
                 "matches.csv", "eval/metrics.json", "eval/report.html", "eval/pr_curve.png", "dedup/groups.json",
                 "dedup/pairs.csv", "dedup/report.html", "demo.json", demo.MARKER):
        assert (out / path).is_file(), path
    assert len(list((out / "photos").glob("*.png"))) == len(demo.SMALL.photos)
    assert len(list((out / "bench" / "references").glob("*.jpg"))) == demo.SMALL.n_references
    assert len(list((out / "bench" / "queries").glob("*.jpg"))) == demo.SMALL.n_queries

    s = json.loads((out / "demo.json").read_text())
    assert (s["references"], s["queries"], s["copies"]) == (4, 4, 2)
    assert 0.5 <= s["micro_ap"] <= 1 and 0.5 <= s["recall_at_1"] <= 1
    assert s["recall_at_p90"] is None or 0 <= s["recall_at_p90"] <= 1
    assert 0 <= s["copies_grouped"] <= s["copies"] and s["wrong_links"] >= 0
    assert 0 <= s["duplicates"] <= s["queries"] and s["groups"] <= s["duplicates"]
    assert s["micro_ap"] == json.loads((out / "eval" / "metrics.json").read_text())["uAP"]
    assert len(json.loads((out / "dedup" / "groups.json").read_text())) == s["groups"]
    assert "<html" in (out / "eval" / "report.html").read_text().lower()

    stdout = run.stdout
    assert f"micro-AP {s['micro_ap']:.3f}" in stdout and "recall@P90" in stdout and "duplicates found" in stdout
    assert "./demo/eval/report.html" in stdout and "./demo/dedup/report.html" in stdout
    assert "Traceback" not in run.stderr

    deadline = time.monotonic() + 10  # Ray's processes exit within moments of ray.shutdown()
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with(marker) == [], "the demo left processes running"


def test_demo_replaces_its_own_folder_and_refuses_others(tmp_path):
    out = tmp_path / "demo"
    demo._prepare_out(out)
    (out / "index").mkdir()
    (out / "index" / "old").write_text("old")
    demo._prepare_out(out)
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        demo._prepare_out(other)
    assert (other / "keep.txt").read_text() == "mine"


def test_sample_photos_are_rgb_and_small():
    photos = demo.sample_photos(("astronaut", "camera", "logo", "stereo_motorcycle", "grace_hopper"))
    for name, image in photos.items():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8", name
        assert max(image.shape[:2]) <= demo.MAX_SIDE
    assert len(set(demo.FULL.photos)) == len(demo.FULL.photos)


def test_dedup_groups_scored_against_ground_truth():
    truth = {"Q1": "R1", "Q2": "R1", "Q3": "", "Q4": "R2"}
    groups = [["index:R1", "Q1.jpg", "Q2.jpg"], ["index:R2", "Q3.jpg"], ["Q4.jpg", "Q1.jpg"]]
    # Q1, Q2 right; Q3 (no copy) linked to R2 wrong; Q1 linked to Q4 (copies of different references) wrong.
    assert demo._score_groups(groups, truth) == (2, 2)
