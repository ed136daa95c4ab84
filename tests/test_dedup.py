import csv
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from copyscope.descriptors.errors import UserError
from copyscope.jobs.cli import main
from copyscope.jobs.dedup import DedupOptions, dedup_folder
from copyscope.pipeline.embedding import EmbedSettings
from copyscope.jobs.index import index_folder
from copyscope.matching.local_features import LocalSpec
from copyscope.matching.reranking import FEATURES, MATCH_FEATURES, packaged_calibration
from copyscope.matching.scoring import Calibration
from copyscope.pipeline.model_spec import ModelSpec


def _save(path: Path, image: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, **kwargs)


def make_dedup_folder(root: Path) -> list[set[str]]:
    """Write the folder -> the planted groups (sets of paths relative to root).

    astronaut: a lossless copy in another format, a crop, a captioned re-encode; coffee: grey and
    half-size re-encodes. Near misses: two non-overlapping halves of hubble_deep_field, and
    unrelated photos. Bad files: a text file and an empty file with image names.
    """
    astronaut, coffee, hubble = data.astronaut(), data.coffee(), data.hubble_deep_field()
    h, w = astronaut.shape[:2]
    captioned = astronaut.copy()
    cv2.putText(captioned, "COPY", (w // 8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 0), 8)
    grey = cv2.cvtColor(cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    _save(root / "astronaut.png", astronaut)
    _save(root / "sub" / "astronaut_again.bmp", astronaut)
    _save(root / "sub" / "deeper" / "astronaut_crop.jpg", astronaut[h // 8: h * 7 // 8, w // 6: w * 5 // 6],
          quality=80)
    _save(root / "astronaut_caption.jpg", captioned, quality=70)
    _save(root / "coffee.jpg", coffee, quality=92)
    _save(root / "coffee_grey.jpg", grey, quality=75)
    _save(root / "sub" / "coffee_small.webp", cv2.resize(coffee, (coffee.shape[1] // 2, coffee.shape[0] // 2),
                                                          interpolation=cv2.INTER_AREA), quality=80)
    half = hubble.shape[1] // 2
    _save(root / "hubble_left.jpg", hubble[:, :half - 20], quality=90)
    _save(root / "hubble_right.jpg", hubble[:, half + 20:], quality=90)
    _save(root / "chelsea.jpg", data.chelsea(), quality=90)
    _save(root / "rocket.tif", data.rocket())
    _save(root / "camera.gif", data.camera())
    (root / "notes.jpg").write_text("not an image")
    (root / "sub" / "empty.png").write_bytes(b"")
    return [{"astronaut.png", "sub/astronaut_again.bmp", "sub/deeper/astronaut_crop.jpg", "astronaut_caption.jpg"},
            {"coffee.jpg", "coffee_grey.jpg", "sub/coffee_small.webp"}]


SPEC = ModelSpec("sscd_distilled")
SETTINGS = EmbedSettings(num_actors=1, threads_per_actor=1, batch_size=4)


class Crash(RuntimeError):
    pass


def run(folder, out, **options):
    return dedup_folder(folder, out, SPEC, options=DedupOptions(**options), settings=SETTINGS, progress=False)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def files_under(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(folder) for f in fs}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("dedup")
    folder = root / "photos"
    truth = make_dedup_folder(folder)
    summary = run(folder, root / "out")
    return folder, root / "out", truth, summary


def test_planted_groups_found_and_near_misses_kept_apart(planted):
    folder, out, truth, summary = planted
    groups = json.loads((out / "groups.json").read_text())
    assert sorted(map(set, groups), key=min) == sorted(truth, key=min)
    by_first = {g[0]: g for g in groups}
    assert "sub/astronaut_again.bmp" in by_first  # largest: most pixels, then most bytes (BMP > PNG)
    assert "coffee.jpg" in by_first  # the full-size original, not the half-size copy
    assert summary.groups == 2 and summary.duplicates == 5 and summary.exact_duplicates == 1
    assert (summary.to_act, summary.to_review) == (5, 0)
    assert summary.files == 14 and summary.failed == 2
    sizes = {p: os.path.getsize(folder / p) for g in groups for p in g[1:]}
    assert summary.bytes_reclaimable == sum(sizes.values())


def test_pairs_and_plan_describe_the_links(planted):
    folder, out, truth, _ = planted
    pairs = read_csv(out / "pairs.csv")
    exact = [(p["a"], p["b"]) for p in pairs if p["kind"] == "exact"]
    assert exact == [("astronaut.png", "sub/astronaut_again.bmp")]
    linked = {frozenset((p["a"], p["b"])) for p in pairs if p["verified"] == "True"}
    assert frozenset(("hubble_left.jpg", "hubble_right.jpg")) not in linked  # same subject, no copy
    assert all(any({p["a"], p["b"]} <= g for g in truth) for p in pairs if p["verified"] == "True")
    plan = read_csv(out / "plan.csv")
    assert {r["action"] for r in plan} == {"report"}  # every link scores >= the act threshold 0.9
    assert sorted(r["path"] for r in plan) == sorted(p for g in truth for p in g
                                                     if p not in ("sub/astronaut_again.bmp", "coffee.jpg"))


def test_bad_files_are_listed_not_fatal(planted):
    _, out, _, _ = planted
    failures = {r["path"]: r["reason"] for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"notes.jpg", "sub/empty.png"}
    assert all(failures.values())


def test_report_marks_keepers_and_draws_links(planted):
    _, out, _, _ = planted
    page = (out / "report.html").read_text()
    assert page.count("<b>keeper</b>") == 2
    assert page.count('alt="inliers"') == 4  # one drawing per near link; the exact link says so
    assert "identical pixels" in page
    assert len(list((out / "links").glob("*.jpg"))) == 4


def test_move_interrupted_then_rerun_finishes_the_plan(planted, tmp_path):
    source, _, truth, _ = planted
    folder = tmp_path / "photos"
    shutil.copytree(source, folder)
    before = files_under(folder)
    with pytest.raises(Crash):
        dedup_folder(folder, tmp_path / "out", SPEC, options=DedupOptions(action="move"), settings=SETTINGS,
                     progress=False, on_row=lambda i: (_ for _ in ()).throw(Crash()) if i == 1 else None)
    assert json.loads((tmp_path / "out" / "plan.state.json").read_text())["status"] == "pending"
    with pytest.raises(ValueError, match="unfinished move plan"):
        run(folder, tmp_path / "out", action="hardlink")
    with pytest.raises(ValueError, match="unfinished move plan"):
        run(source, tmp_path / "out", action="move")  # another folder
    summary = run(folder, tmp_path / "out", action="move")
    assert summary.resumed and summary.outcomes == {"already done": 2, "done": 3}
    moved = files_under(tmp_path / "out" / "moved")
    kept = files_under(folder)
    assert set(moved) == {p for g in truth for p in g} - {"sub/astronaut_again.bmp", "coffee.jpg"}
    assert moved | kept == before and not set(moved) & set(kept)  # every file in one place, intact


def test_hardlink_and_delete_through_the_job(planted, tmp_path):
    source, _, _, _ = planted
    folder = tmp_path / "photos"
    shutil.copytree(source, folder)
    summary = run(folder, tmp_path / "out", action="hardlink")
    assert summary.outcomes == {"done": 5}
    assert os.path.samefile(folder / "coffee_grey.jpg", folder / "coffee.jpg")
    with pytest.raises(ValueError, match="--yes"):
        DedupOptions(action="delete")
    summary = run(folder, tmp_path / "out2", action="delete", yes=True)
    assert summary.bytes_reclaimable == 0  # hard links to their keeper already free nothing
    assert not (folder / "coffee_grey.jpg").exists() and (folder / "coffee.jpg").exists()


@pytest.mark.parametrize("reference_model", [SPEC, ModelSpec("sscd")])  # sscd: an index that whitens
def test_dedup_against_a_reference_index_keeps_references(tmp_path, ray_local, reference_model):
    refs, folder = tmp_path / "refs", tmp_path / "photos"
    refs.mkdir(), folder.mkdir()
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(refs / "astronaut.png")
    Image.fromarray(data.rocket()).save(refs / "rocket.png")
    Image.fromarray(astronaut[60:460, 80:440]).save(folder / "crop.jpg", quality=85)
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(folder / "flipped.jpg", quality=85)
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    index_folder(refs, tmp_path / "index", reference_model, settings=SETTINGS, progress=False)
    summary = dedup_folder(folder, tmp_path / "out", options=DedupOptions(action="move"), index_dir=tmp_path / "index",
                           settings=SETTINGS, progress=False)
    groups = json.loads((tmp_path / "out" / "groups.json").read_text())
    assert groups == [["index:astronaut", "flipped.jpg", "crop.jpg"]]  # copies by rank: the flip has more pixels
    assert summary.outcomes == {"done": 2}
    assert sorted(os.listdir(folder)) == ["coffee.jpg"] and len(os.listdir(refs)) == 2


def test_cli_dedup_prints_a_summary(tmp_path, capsys, ray_local):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.chelsea()).save(folder / "cat.png")
    Image.fromarray(data.chelsea()).save(folder / "cat_copy.png")
    Image.fromarray(data.rocket()).save(folder / "rocket.jpg")
    code = main(["dedup", str(folder), "--out", str(tmp_path / "out"), "--model", "sscd_distilled", "--device", "cpu",
                 "--num-actors", "1", "--threads", "1", "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert summary["groups"] == 1 and summary["duplicates"] == 1 and summary["exact_duplicates"] == 1
    assert main(["dedup", str(folder), "--out", str(tmp_path / "o2"), "--action", "delete", "--quiet"]) == 1
    assert "--yes" in capsys.readouterr().err


def test_empty_folder_gives_typed_empty_outputs(tmp_path, ray_local):
    (tmp_path / "photos").mkdir()
    summary = run(tmp_path / "photos", tmp_path / "out")
    assert (summary.files, summary.groups, summary.duplicates) == (0, 0, 0)
    assert json.loads((tmp_path / "out" / "groups.json").read_text()) == []
    assert read_csv(tmp_path / "out" / "plan.csv") == [] and read_csv(tmp_path / "out" / "pairs.csv") == []


def constant_calibration(path: Path, probability: float) -> Path:
    """A calibration file for SPEC that gives every verified pair the same copy probability."""
    fitted = packaged_calibration(SPEC.name, LocalSpec().to_dict())
    weights = (0.0,) * len(fitted.calibration.weights)
    fitted = dataclasses.replace(fitted, calibration=Calibration(weights, math.log(probability / (1 - probability))))
    path.write_text(json.dumps(fitted.to_dict()))
    return path


def cli_dedup(folder, out, *args):
    return main(["dedup", str(folder), "--out", str(out), "--model", SPEC.name, "--device", "cpu", "--num-actors", "1",
                 "--threads", "1", "--quiet", *map(str, args)])


def test_links_below_the_act_threshold_are_grouped_but_never_acted_on(planted, tmp_path, capsys):
    source, _, truth, _ = planted
    folder, out = tmp_path / "photos", tmp_path / "out"
    shutil.copytree(source, folder)
    calibration = constant_calibration(tmp_path / "calibration.json", 0.7)  # every near link scores 0.7
    # act threshold 0.6: every link may be acted on (here: reported)
    assert cli_dedup(folder, out, "--calibration", calibration, "--act-threshold", 0.6, "--threshold", 0.5) == 0
    assert {r["action"] for r in read_csv(out / "plan.csv")} == {"report"}
    assert json.loads((out / "summary.json").read_text())["to_act"] == 5
    before = files_under(folder)
    # act threshold 0.9 (default), review 0.5: the near links are for review, the exact copy is deleted
    assert cli_dedup(folder, out, "--calibration", calibration, "--review-threshold", 0.5, "--action", "delete",
                     "--yes") == 0
    groups = json.loads((out / "groups.json").read_text())
    assert sorted(map(set, groups), key=min) == sorted(truth, key=min)  # review links still group
    plan = {r["path"]: r["action"] for r in read_csv(out / "plan.csv")}
    assert plan == {"astronaut.png": "delete", "sub/deeper/astronaut_crop.jpg": "review",
                    "astronaut_caption.jpg": "review", "coffee_grey.jpg": "review", "sub/coffee_small.webp": "review"}
    outcomes = {r["path"]: r["outcome"] for r in read_csv(out / "actions.csv")}
    assert outcomes["astronaut.png"] == "done" and outcomes["coffee_grey.jpg"] == "review: not acted on"
    after = files_under(folder)
    assert set(before) - set(after) == {"astronaut.png"}
    assert all(after[p] == before[p] for p in after)  # the review copies are untouched
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["to_act"], summary["to_review"], summary["duplicates"]) == (1, 4, 5)
    assert summary["outcomes"] == {"done": 1, "review: not acted on": 4}
    assert summary["bytes_reclaimable"] == len(before["astronaut.png"])  # review copies free nothing
    page = (out / "report.html").read_text()
    assert page.count('<figure class="review">') == 4 and page.count('<span class="review">review</span> ') == 4
    assert page.count('<span class="act">act</span> astronaut.png') == 1
    capsys.readouterr()


@pytest.mark.parametrize("review, act", [(0.95, 0.9), (-0.1, 0.9), (0.5, 1.5), (math.nan, 0.9)])
def test_bad_thresholds_are_a_user_error(review, act, tmp_path, capsys):
    with pytest.raises(UserError, match="0 <= review"):
        DedupOptions(review_threshold=review, act_threshold=act)
    assert cli_dedup(tmp_path, tmp_path / "out", "--review-threshold", review, "--act-threshold", act) == 1
    assert "0 <= review" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _screenshot_of(photo: np.ndarray, side: int) -> np.ndarray:
    """A phone screenshot: a header bar, the photo shrunk to side x side over another picture, captions."""
    canvas = np.full((900, 640, 3), 245, np.uint8)
    canvas[:90] = (40, 90, 160)
    cv2.putText(canvas, "Photos  12:41", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    canvas[100:740] = cv2.cvtColor(cv2.resize(data.camera(), (640, 640)), cv2.COLOR_GRAY2RGB)
    for y in range(780, 880, 60):
        cv2.putText(canvas, "liked by someone and 12 others", (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (30, 30, 30), 2)
    canvas[120:120 + side, 60:60 + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


def test_a_photo_inside_a_screenshot_is_scored_by_its_content(tmp_path, monkeypatch):
    """The screenshot's global descriptor is far from the photo's (cosine about 0.2); the content its inliers
    span, cropped and embedded, is the photo: the link is safe to act on only with that closer look."""
    import copyscope.jobs.dedup as dedup_job

    folder = tmp_path / "photos"
    _save(folder / "astronaut.png", data.astronaut())
    _save(folder / "shot.jpg", _screenshot_of(data.astronaut(), 220), quality=85)
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field"):
        _save(folder / f"{name}.jpg", getattr(data, name)(), quality=90)

    def link_score(out):
        rows = [r for r in read_csv(out / "pairs.csv") if {r["a"], r["b"]} == {"astronaut.png", "shot.jpg"}]
        return float(rows[0]["score"]), json.loads((out / "groups.json").read_text())

    run(folder, tmp_path / "out")
    score, groups = link_score(tmp_path / "out")
    assert score >= DedupOptions().act_threshold
    assert sorted(map(sorted, groups)) == [["astronaut.png", "shot.jpg"]]
    monkeypatch.setattr(dedup_job, "_looked_closer", lambda scored, *args: scored)
    run(folder, tmp_path / "plain")
    without, _ = link_score(tmp_path / "plain")
    assert without < DedupOptions().act_threshold <= score


def test_a_screenshot_of_a_reference_is_scored_by_its_content(tmp_path, monkeypatch):
    """Against a reference index only the folder's side is cropped (the index keeps no image paths)."""
    import copyscope.jobs.dedup as dedup_job

    refs, folder = tmp_path / "refs", tmp_path / "photos"
    _save(refs / "astronaut.png", data.astronaut())
    _save(refs / "rocket.png", data.rocket())
    _save(folder / "shot.jpg", _screenshot_of(data.astronaut(), 220), quality=85)
    _save(folder / "coffee.jpg", data.coffee(), quality=90)
    index_folder(refs, tmp_path / "index", SPEC, settings=SETTINGS, progress=False)

    def link_score(out):
        dedup_folder(folder, out, options=DedupOptions(), index_dir=tmp_path / "index", settings=SETTINGS,
                     progress=False)
        (row,) = [r for r in read_csv(out / "pairs.csv") if {r["a"], r["b"]} == {"shot.jpg", "index:astronaut"}]
        return float(row["score"]), json.loads((out / "groups.json").read_text())

    score, groups = link_score(tmp_path / "out")
    assert score >= DedupOptions().act_threshold
    assert groups == [["index:astronaut", "shot.jpg"]]
    monkeypatch.setattr(dedup_job, "_looked_closer", lambda scored, *args: scored)
    without, _ = link_score(tmp_path / "plain")
    assert without < DedupOptions().act_threshold <= score


@pytest.mark.parametrize("features", [FEATURES[::-1], MATCH_FEATURES])
def test_a_calibration_dedup_cannot_score_in_order_is_a_clear_error(features, tmp_path, capsys):
    fitted = packaged_calibration(SPEC.name, LocalSpec().to_dict())
    calibration = Calibration((0.5,) * len(features), 0.0)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(dataclasses.replace(fitted, calibration=calibration, features=features,
                                                   reverse=calibration).to_dict()))
    (tmp_path / "photos").mkdir()
    assert cli_dedup(tmp_path / "photos", tmp_path / "out", "--calibration", path) == 1
    assert "dedup scores pairs over the features" in capsys.readouterr().err
