import os

import pytest

from copyscope.jobs.dedup_actions import PlanRow, execute_plan, read_plan, write_plan
from copyscope.matching.grouping import Group, Link, link_is_safe, safe_members
from copyscope.pipeline.files import file_stamp


class Crash(RuntimeError):
    pass


def make_folder(root):
    """keeper.jpg plus four copies, two of them nested -> plan rows for `action`."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "keeper.jpg").write_bytes(b"K" * 100)
    copies = ["c1.jpg", "a/c2.jpg", "a/b/c3.jpg", "a/c4.jpg"]
    for i, p in enumerate(copies):
        (root / p).write_bytes(bytes([i]) * (10 + i))
    return copies


def plan(root, copies, action, target=None):
    return [PlanRow(action, p, "keeper.jpg", str(target / p) if target else "", 10 + i, file_stamp(str(root / p)),
                    file_stamp(str(root / "keeper.jpg"))) for i, p in enumerate(copies)]


def crash_at(n):
    def hook(i):
        if i == n:
            raise Crash(f"killed after row {i}")
    return hook


def snapshot(*folders):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for folder in folders for d, _, files in os.walk(folder) for f in files}


def test_plan_round_trip(tmp_path):
    rows = plan(tmp_path, ["x,y.jpg", 'q"uote.jpg'], "move", tmp_path / "t")
    write_plan(tmp_path / "plan.csv", rows)
    assert read_plan(tmp_path / "plan.csv") == rows


def test_report_touches_nothing(tmp_path):
    root = tmp_path / "in"
    copies = make_folder(root)
    before = snapshot(root)
    assert execute_plan(root, plan(root, copies, "report")) == ["skipped: report only"] * 4
    assert snapshot(root) == before


def test_move_interrupted_half_way_then_rerun_finishes(tmp_path):
    root, target = tmp_path / "in", tmp_path / "moved"
    copies = make_folder(root)
    contents = {p: (root / p).read_bytes() for p in copies}
    rows = plan(root, copies, "move", target)
    with pytest.raises(Crash):
        execute_plan(root, rows, on_row=crash_at(1))
    assert not (root / copies[0]).exists() and (target / copies[0]).exists()
    assert (root / copies[2]).exists()
    outcomes = execute_plan(root, rows)
    assert outcomes == ["already done", "already done", "done", "done"]
    assert sorted(os.listdir(root)) == ["a", "keeper.jpg"]
    for p in copies:  # relative paths kept, no byte lost
        assert (target / p).read_bytes() == contents[p]


def test_hardlink_interrupted_then_rerun(tmp_path):
    root = tmp_path / "in"
    copies = make_folder(root)
    rows = plan(root, copies, "hardlink")
    with pytest.raises(Crash):
        execute_plan(root, rows, on_row=crash_at(0))
    assert execute_plan(root, rows) == ["already done", "done", "done", "done"]
    for p in copies:
        assert os.path.samefile(root / p, root / "keeper.jpg")
    assert not [f for _, _, fs in os.walk(root) for f in fs if f.startswith(".")]


def test_delete_needs_yes_and_is_idempotent(tmp_path):
    root = tmp_path / "in"
    copies = make_folder(root)
    rows = plan(root, copies, "delete")
    with pytest.raises(ValueError, match="--yes"):
        execute_plan(root, rows)
    assert all((root / p).exists() for p in copies)
    with pytest.raises(Crash):
        execute_plan(root, rows, yes=True, on_row=crash_at(1))
    assert execute_plan(root, rows, yes=True) == ["already done", "already done", "done", "done"]
    assert snapshot(root) == {"keeper.jpg": b"K" * 100}


@pytest.mark.parametrize("action", ["move", "hardlink", "delete"])
def test_changed_file_is_never_touched(tmp_path, action):
    root, target = tmp_path / "in", tmp_path / "moved"
    copies = make_folder(root)
    rows = plan(root, copies, action, target if action == "move" else None)
    (root / copies[1]).write_bytes(b"edited after planning, longer")
    outcomes = execute_plan(root, rows, yes=True)
    assert outcomes[1] == "skipped: changed since planning"
    assert (root / copies[1]).read_bytes() == b"edited after planning, longer"
    assert outcomes.count("done") == 3


def test_hardlink_skips_when_keeper_changed(tmp_path):
    root = tmp_path / "in"
    copies = make_folder(root)
    rows = plan(root, copies, "hardlink")
    (root / "keeper.jpg").write_bytes(b"new keeper")
    assert set(execute_plan(root, rows)) == {"skipped: keeper changed since planning"}
    assert (root / copies[0]).read_bytes() == bytes([0]) * 10


def test_review_rows_are_never_acted_on(tmp_path):
    root = tmp_path / "in"
    copies = make_folder(root)
    rows = plan(root, copies[:2], "delete") + plan(root, copies[2:], "review")
    assert execute_plan(root, rows, yes=True) == ["done", "done", "review: not acted on", "review: not acted on"]
    assert not (root / copies[0]).exists() and (root / copies[2]).exists() and (root / copies[3]).exists()
    write_plan(tmp_path / "plan.csv", rows)
    assert [r.action for r in read_plan(tmp_path / "plan.csv")] == ["delete", "delete", "review", "review"]


def test_a_copy_is_safe_only_when_every_link_to_its_keeper_is():
    # K keeper; A near 0.95 (act); B near 0.7 (review); A2 exact copy of A; B2 exact copy of B; K2 exact copy of K
    group = Group(["K", "A", "A2", "B", "B2", "K2"],
                  [Link("A", "K", 0.95, "near"), Link("A2", "A", 1.0, "exact"), Link("B", "K", 0.7, "near"),
                   Link("B2", "B", 1.0, "exact"), Link("K2", "K", 1.0, "exact")])
    assert safe_members(group, 0.9) == [True, True, True, False, False, True]
    assert safe_members(group, 0.7) == [True] * 6  # a score equal to the threshold is enough
    assert safe_members(group, 1.0) == [True, False, False, False, False, True]  # exact links always count
    assert link_is_safe(Link("x", "y", 0.0, "exact"), 1.0) and not link_is_safe(Link("x", "y", 0.89, "near"), 0.9)
