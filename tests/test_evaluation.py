import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import skimage.data
from PIL import Image

from copyscope.jobs.evaluate import evaluate
from copyscope.pipeline.files import find_image
from copyscope.pipeline.formats import FormatError

ODD_ID = "Q4 <b>&\"'"  # ids may hold any character; this one has no image


def save(path, array, size=96):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    im.thumbnail((size, size))
    im.save(path)


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture
def bench(tmp_path):
    """BENCH/ground_truth.csv, queries/, references/, predictions and query metadata.

    Ranked predictions: Q5-R4 0.95 F, Q1-R1 0.9 T, Q2-R5 0.8 F, Q2-R2 0.7 T, sub/Q3-R3 0.6 T, X-R1 0.3 F;
    4 true pairs (Q4's copy is never predicted) -> uAP = (1/2 + 2/4 + 3/5) / 4 = 0.4.
    """
    b = tmp_path / "BENCH"
    save(b / "queries" / "Q1.jpg", skimage.data.astronaut()[50:400, 100:450])
    save(b / "queries" / "Q2.png", skimage.data.coffee()[::-1])
    save(b / "queries" / "sub" / "Q3.webp", skimage.data.chelsea())
    save(b / "references" / "R1.jpg", skimage.data.astronaut())
    save(b / "references" / "R2.JPG", skimage.data.coffee())
    save(b / "references" / "R3.jpg", skimage.data.chelsea())
    save(b / "references" / "R5.bmp", skimage.data.rocket())
    (b / "references" / "R4.jpg").write_bytes(b"not an image")
    write_csv(b / "ground_truth.csv", ["query_id", "reference_id"],
              [["Q1", "R1"], ["Q2", "R2"], ["sub/Q3", "R3"], [ODD_ID, "R4"], ["Q5", ""]])
    write_csv(tmp_path / "pred.csv", ["query_id", "reference_id", "score"],
              [["Q1", "R1", 0.9], ["Q2", "R5", 0.8], ["Q2", "R2", 0.7], ["sub/Q3", "R3", 0.6],
               ["Q5", "R4", 0.95], ["X", "R1", 0.3]])
    write_csv(tmp_path / "meta.csv", ["query_id", "kind", "transforms"],
              [["Q1", "crop", "[]"], ["Q2", "flip", "[]"], ["sub/Q3", "crop", "[]"], ["Q5", "distractor", "[]"]])
    return tmp_path


def run(bench, **kwargs):
    return evaluate(bench / "BENCH" / "ground_truth.csv", bench / "pred.csv", bench / "out", progress=False, **kwargs)


def test_metrics_json_holds_the_hand_computed_metrics(bench):
    summary = run(bench)
    assert summary == json.loads((bench / "out" / "metrics.json").read_text())
    calibration = {k: summary.pop(k) for k in ("reliability", "ece", "at_threshold")}
    assert summary == {
        "uAP": pytest.approx(0.4), "recall_at_p90": 0.0, "threshold_at_p90": None,
        "recall_at_1": 0.5, "recall_at_10": 0.75, "num_predictions": 6, "num_positives": 4,
        "predictions_for_unknown_queries": 1,
    }
    # bins: 0.3 F | 0.6 T | 0.7 T | 0.8 F | 0.9 T, 0.95 F (mean 0.925, precision 0.5)
    assert [b["count"] for b in calibration["reliability"]] == [0, 0, 0, 1, 0, 0, 1, 1, 1, 2]
    assert calibration["reliability"][9] == {"lo": 0.9, "hi": 1.0, "count": 2, "mean_score": pytest.approx(0.925),
                                             "precision": 0.5}
    assert calibration["ece"] == pytest.approx((0.3 + 0.4 + 0.3 + 0.8 + 2 * 0.425) / 6)
    assert calibration["at_threshold"] == {
        "0.5": {"precision": 0.6, "recall": 0.75, "count": 5},
        "0.9": {"precision": 0.5, "recall": 0.25, "count": 2},
        "0.99": {"precision": None, "recall": 0.0, "count": 0},
    }


def test_report_shows_the_reliability_table_and_curve(bench):
    run(bench)
    section = (bench / "out" / "report.html").read_text().split("<h2>Reliability of the scores</h2>")[1]
    section = section.split("<h2>")[0]
    assert "ECE" in section and "0.4417" in section
    assert section.count("<tr>") == 1 + 10 + 1 + 3  # bins, then the fixed thresholds
    assert 'alt="reliability curve"' in section and "data:image/png;base64," in section


def test_raw_similarities_get_no_reliability_and_the_report_says_why(bench):
    write_csv(bench / "pred.csv", ["query_id", "reference_id", "score"], [["Q1", "R1", 1.7], ["Q2", "R2", -0.2]])
    summary = run(bench)
    assert json.loads((bench / "out" / "metrics.json").read_text()) == summary
    assert (summary["reliability"], summary["ece"], summary["at_threshold"]) == (None, None, None)
    assert summary["uAP"] == pytest.approx(0.5)
    page = (bench / "out" / "report.html").read_text()
    assert "outside 0..1" in page and "not probabilities" in page and 'alt="reliability curve"' not in page


def test_recall_by_kind_from_meta(bench):
    summary = run(bench, meta_csv=bench / "meta.csv")
    assert summary["recall_at_1_by_kind"] == {"crop": 1.0, "flip": 0.0, "unknown": 0.0}
    assert summary["positives_by_kind"] == {"crop": 2, "flip": 1, "unknown": 1}
    # crop: Q1 0.9 and sub/Q3 0.6; flip: Q2 0.7; unknown: Q4, never predicted
    assert summary["recall_at_threshold_by_kind"] == {"crop": {"0.5": 1.0, "0.9": 0.5, "0.99": 0.0},
                                                      "flip": {"0.5": 1.0, "0.9": 0.0, "0.99": 0.0},
                                                      "unknown": {"0.5": 0.0, "0.9": 0.0, "0.99": 0.0}}
    section = (bench / "out" / "report.html").read_text().split("<h2>Recall by edit kind</h2>")[1].split("<h2>")[0]
    assert section.count("<tr>") == 1 + 3 and "recall at score &ge; 0.9" in section


def test_raw_similarities_get_no_recall_by_kind_at_thresholds(bench):
    write_csv(bench / "pred.csv", ["query_id", "reference_id", "score"], [["Q1", "R1", 1.7], ["Q2", "R2", -0.2]])
    summary = run(bench, meta_csv=bench / "meta.csv")
    assert summary["recall_at_threshold_by_kind"] is None and summary["recall_at_1_by_kind"]["crop"] == 0.5
    assert "recall at score" not in (bench / "out" / "report.html").read_text()


def test_pr_curve_is_a_png(bench):
    run(bench)
    with Image.open(bench / "out" / "pr_curve.png") as im:
        assert im.format == "PNG" and im.width > 300


def test_report_shows_misses_and_false_positives_with_thumbnails(bench):
    run(bench)
    page = (bench / "out" / "report.html").read_text()
    misses, fps = page.split("<h2>Misses</h2>")[1].split("<h2>Highest-scoring false positives</h2>")
    # the confident miss (Q2, beaten by R5 at 0.8) before the never-predicted one
    assert misses.index("Q2") < misses.index("R5") < misses.index("Q4 &lt;b&gt;&amp;&quot;&#x27;")
    assert "score 0.8" in misses and "rank 2, score 0.7" in misses and "never predicted" in misses
    assert fps.index("R4") < fps.index("R5") < fps.index("0.3") and "query has no copy" in fps
    assert "sub/Q3" not in page.split("<h2>Misses</h2>")[1]  # a hit is neither a miss nor a false positive
    # shown: Q2, R2 (.JPG), R5 (.bmp), R1 found; Q4, Q5, X have no image; R4 (twice) is not an image
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="([^"]+)">', page)
    assert sorted(thumbs) == ["queries Q2", "queries Q2", "references R1", "references R2", "references R5",
                              "references R5"]
    assert page.count(">image not found<") == 3 and page.count(">unreadable image<") == 2
    assert "<b>" not in page and ODD_ID not in page


def test_progress_bar_over_thumbnails(bench, capsys):
    evaluate(bench / "BENCH" / "ground_truth.csv", bench / "pred.csv", bench / "out")
    assert "thumbnails" in capsys.readouterr().err


def test_image_folders_can_be_given(bench):
    shutil.move(bench / "BENCH" / "queries", bench / "q")
    run(bench, queries_dir=bench / "q", references_dir=bench / "nowhere")
    page = (bench / "out" / "report.html").read_text()
    assert 'alt="queries Q2"' in page and 'alt="references R1"' not in page


def test_empty_prediction_file(bench):
    write_csv(bench / "pred.csv", ["query_id", "reference_id", "score"], [])
    summary = run(bench)
    assert (summary["uAP"], summary["recall_at_p90"], summary["recall_at_1"], summary["recall_at_10"]) == (0, 0, 0, 0)
    assert "4 in all" in (bench / "out" / "report.html").read_text()  # every copy is a miss
    assert [b["count"] for b in summary["reliability"]] == [0] * 10 and summary["ece"] == 0.0
    assert summary["at_threshold"]["0.5"] == {"precision": None, "recall": 0.0, "count": 0}


def test_malformed_predictions_fail_before_writing(bench):
    (bench / "pred.csv").write_text("query_id,reference_id,score\nQ1,R1,0.5\nQ1,R1,0.4\n")
    with pytest.raises(FormatError, match="line 3: duplicate pair"):
        run(bench)
    assert not (bench / "out").exists()


def test_find_image_tries_extensions_and_stays_in_its_folder(tmp_path):
    save(tmp_path / "refs" / "a.b" / "c.PNG", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "outside.jpg", np.zeros((8, 8, 3), np.uint8))
    assert find_image(tmp_path / "refs", "a.b/c") == tmp_path / "refs" / "a.b" / "c.PNG"
    assert find_image(tmp_path / "refs", "../outside") is None
    assert find_image(tmp_path / "refs", "missing") is None


def find_browser():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_report_renders_in_headless_chromium(bench, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no browser installed")
    run(bench, meta_csv=bench / "meta.csv")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,1600", (bench / "out" / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (1600, 1200)
    assert (pixels < 128).mean() > 0.01  # text, the curve and thumbnails, not a blank page


def test_false_positives_are_capped_with_the_total_given(bench):
    rows = [["Q1", "R1", 0.9]] + [[f"X{i}", "R1", i / 100] for i in range(60)]
    write_csv(bench / "pred.csv", ["query_id", "reference_id", "score"], rows)
    run(bench)
    fps = (bench / "out" / "report.html").read_text().split("<h2>Highest-scoring false positives</h2>")[1]
    assert "60 in all, the first 50 shown." in fps
    assert fps.count("<tr>") == 51 and "X59" in fps and ">X9<" not in fps


def test_warns_when_no_predicted_query_is_in_the_ground_truth(bench):
    write_csv(bench / "pred.csv", ["query_id", "reference_id", "score"], [["Q1.jpg", "R1.jpg", 0.9]])
    assert run(bench)["predictions_for_unknown_queries"] == 1
    assert "do the ids match?" in (bench / "out" / "report.html").read_text()
