import numpy as np
import pytest

from copyscope.pipeline.formats import (
    FormatError,
    Matches,
    read_ground_truth,
    read_matches,
    read_query_meta,
    write_matches,
)


def write_text(tmp_path, text, name="f.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_matches_round_trip_with_any_characters_in_ids(tmp_path):
    rows = [("a,b/c", 'say "hi"', 0.1), ("line\nbreak", "é/ü 漢", -2.5), ("plain", "x", 1e-12)]
    path = tmp_path / "out" / "matches.csv"
    assert write_matches(path, rows) == 3
    m = read_matches(path)
    assert list(m) == rows
    assert m.scores.dtype == np.float64 and m.query_ids.dtype.kind == "U"
    assert [p.name for p in path.parent.iterdir()] == ["matches.csv"]  # no temp file left behind


def test_float32_scores_keep_their_value_and_short_form(tmp_path):
    scores = np.array([0.8, 1 / 3, 0.123456789], dtype=np.float32)
    path = tmp_path / "m.csv"
    write_matches(path, zip(["q1", "q2", "q3"], ["r", "r", "r"], scores))
    assert path.read_text().splitlines()[1] == "q1,r,0.8"
    np.testing.assert_array_equal(read_matches(path).scores.astype(np.float32), scores)


def test_matches_can_be_written_back(tmp_path):
    m = Matches(np.array(["q1", "q2"]), np.array(["r1", "r2"]), np.array([0.5, 0.25]))
    write_matches(tmp_path / "m.csv", m)
    assert list(read_matches(tmp_path / "m.csv")) == list(m)


def test_write_rejects_nan_score(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        write_matches(tmp_path / "m.csv", [("q", "r", float("nan"))])
    assert not (tmp_path / "m.csv").exists()


def test_header_only_gives_typed_empty_matches(tmp_path):
    m = read_matches(write_text(tmp_path, "query_id,reference_id,score\n"))
    assert len(m) == 0 and list(m) == []
    assert m.query_ids.dtype.kind == "U" and m.reference_ids.dtype.kind == "U" and m.scores.dtype == np.float64


def test_extra_columns_blank_lines_and_bom_are_accepted(tmp_path):
    text = "\ufeffrank,score,reference_id,query_id\n1,0.5,r1,q1\n\n2,0.25,r2,q1\n"
    assert list(read_matches(write_text(tmp_path, text))) == [("q1", "r1", 0.5), ("q1", "r2", 0.25)]


@pytest.mark.parametrize("text, line, reason", [
    ("", 1, "empty file"),
    ("q1,r1,0.5\n", 1, "lacks column(s) query_id, reference_id, score"),
    ("query_id,reference_id\nq1,r1\n", 1, "lacks column(s) score"),
    ("query_id,reference_id,score\nq1,r1,0.5\nq2,r2\n", 3, "expected 3 fields"),
    ("query_id,reference_id,score\nq1,r1,0.5\nq2,r2,high\n", 3, "score 'high' is not a number"),
    ("query_id,reference_id,score\nq1,r1,nan\n", 2, "not a finite number"),
    ("query_id,reference_id,score\nq1,r1,inf\n", 2, "not a finite number"),
    ("query_id,reference_id,score\n,r1,0.5\n", 2, "empty query_id"),
    ("query_id,reference_id,score\nq1,,0.5\n", 2, "empty reference_id"),
    ("query_id,reference_id,score\nq1,r1,0.5\nq1,r2,0.5\nq1,r1,0.1\n", 4,
     "duplicate pair ('q1', 'r1'), first on line 2"),
    ('query_id,reference_id,score\n"q1,r1,0.5\n', 2, "malformed CSV"),
])
def test_malformed_matches_name_file_line_and_reason(tmp_path, text, line, reason):
    path = write_text(tmp_path, text)
    with pytest.raises(FormatError) as e:
        read_matches(path)
    assert (e.value.path, e.value.line) == (str(path), line)
    assert reason in e.value.reason
    assert str(e.value).startswith(f"{path}, line {line}: ")


def test_not_utf8_is_a_format_error(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"query_id,reference_id,score\nq\xff,r,0.5\n")
    with pytest.raises(FormatError, match="not UTF-8"):
        read_matches(path)


def test_ground_truth_with_queries_without_copy_and_several_references(tmp_path):
    gt = read_ground_truth(write_text(tmp_path, "query_id,reference_id\nQ1,R7\nQ2,\nQ3,R1\nQ3,R2\n"))
    assert gt.query_ids.tolist() == ["Q1", "Q2", "Q3", "Q3"]
    assert gt.reference_ids.tolist() == ["R7", "", "R1", "R2"]
    assert gt.has_copy.tolist() == [True, False, True, True]


def test_header_only_ground_truth_is_typed_empty(tmp_path):
    gt = read_ground_truth(write_text(tmp_path, "query_id,reference_id\n"))
    assert len(gt) == 0 and gt.query_ids.dtype.kind == "U" and gt.has_copy.dtype == bool


@pytest.mark.parametrize("text, line, reason", [
    ("query_id,ref\nQ1,R1\n", 1, "lacks column(s) reference_id"),
    ("query_id,reference_id\n,R1\n", 2, "empty query_id"),
    ("query_id,reference_id\nQ1,R1\nQ2,\nQ1,R1\n", 4, "duplicate row ('Q1', 'R1'), first on line 2"),
    ("query_id,reference_id\nQ2,\nQ2,\n", 3, "duplicate row ('Q2', ''), first on line 2"),
    ("query_id,reference_id\nQ1,R1\nQ1,\n", 3, "both with and without a copy (other row on line 2)"),
    ("query_id,reference_id\nQ1,\nQ1,R1\n", 3, "both with and without a copy (other row on line 2)"),
])
def test_malformed_ground_truth(tmp_path, text, line, reason):
    with pytest.raises(FormatError) as e:
        read_ground_truth(write_text(tmp_path, text))
    assert e.value.line == line and reason in e.value.reason


def test_query_meta(tmp_path):
    text = 'query_id,kind,transforms\nQ1,crop,"[{""name"": ""crop"", ""x"": 0.1}]"\nQ2,blur,[]\n'
    assert read_query_meta(write_text(tmp_path, text)) == {"Q1": "crop", "Q2": "blur"}


@pytest.mark.parametrize("text, line, reason", [
    ("query_id,transforms\nQ1,[]\n", 1, "lacks column(s) kind"),
    ("query_id,kind,transforms\nQ1,,[]\n", 2, "empty kind"),
    ("query_id,kind,transforms\nQ1,crop,[]\nQ1,blur,[]\n", 3, "listed twice, first on line 2"),
])
def test_malformed_query_meta(tmp_path, text, line, reason):
    with pytest.raises(FormatError) as e:
        read_query_meta(write_text(tmp_path, text))
    assert e.value.line == line and reason in e.value.reason
