"""CSV reading and checking: every label problem is reported by kind and id, malformed files by name."""

from __future__ import annotations

import pytest

from hcd_kit.data import Problems, read_labels, read_sample_submission, write_report
from hcd_kit.errors import DataError


def _write(tmp_path, text: str, name: str = "train_labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_real_labels_in_file_order(real_root):
    labels = read_labels(real_root / "train_labels.csv")
    raw = (real_root / "train_labels.csv").read_text().splitlines()[1:]
    assert len(labels) == len(raw) > 0
    assert labels["id"].tolist() == [r.split(",")[0] for r in raw]
    assert set(labels["label"]) == {0, 1} and labels["label"].dtype.kind == "i"
    assert int(labels["label"].sum()) == sum(r.endswith(",1") for r in raw)


def test_sample_submission_keeps_order(real_root):
    sub = read_sample_submission(real_root / "sample_submission.csv")
    raw = (real_root / "sample_submission.csv").read_text().splitlines()[1:]
    assert sub["id"].tolist() == [r.split(",")[0] for r in raw]


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\na,0\nb,1\na,1\n", "1 duplicate id (a)"),
        ("id,label\na,0\nb,2\nc,x\nd,\n", "3 label not 0/1 (b ('2'), c ('x'), d (''))"),
        ("id,label\n,0\nb,1\n", "1 empty id (row 2)"),
    ],
)
def test_row_problems_raise_with_names(tmp_path, text, message):
    with pytest.raises(DataError) as err:
        read_labels(_write(tmp_path, text))
    # only commands that really have --skip-bad are named
    assert message in str(err.value) and "`hcd prepare --skip-bad` / `hcd folds --skip-bad`" in str(err.value)


def test_sample_submission_problems_do_not_offer_a_flag_predict_lacks(tmp_path):
    from hcd_kit.runs import sample_ids  # what `hcd predict` and `hcd ensemble` read it through

    _write(tmp_path, "id,label\na,0\nb,0\na,0\n", "sample_submission.csv")
    with pytest.raises(DataError) as err:
        sample_ids(tmp_path)
    msg = str(err.value)
    assert "1 duplicate id (a)" in msg and "hcd download" in msg and "--skip-bad" not in msg


def test_row_problems_collected_and_dropped(tmp_path):
    problems = Problems()
    labels = read_labels(_write(tmp_path, "id,label\na,0\nb,1\na,1\nc,7\nd,1\n"), problems)
    assert labels["id"].tolist() == ["b", "d"] and labels["label"].tolist() == [1, 1]
    assert problems.as_dict() == {"duplicate id": ["a"], "label not 0/1": ["c ('7')"]}
    assert len(problems) == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,target\na,0\n", "missing label"),
        ("", "is empty"),
        ('id,label\na,0\nb,1,2,3\n"c', "not a valid labels"),
    ],
)
def test_malformed_files_are_errors_naming_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_labels(path, Problems())  # even when collecting: a malformed file has no usable rows
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="hcd download"):
        read_sample_submission(tmp_path / "sample_submission.csv")


def test_report_lists_every_problem_in_the_first_writable_folder(tmp_path):
    found = Problems()
    found.extend("corrupt", [f"{k}.tif" for k in range(5)])
    found.add("label not 0/1", "x ('7'), with a comma")
    path = write_report({"train": found}, "r.csv", tmp_path / "gone", tmp_path)
    assert path == tmp_path / "r.csv" and not (tmp_path / "gone").exists()
    lines = path.read_text().splitlines()
    assert lines[0] == "split,name,problem" and len(lines) == 7
    assert lines[1] == "train,0.tif,corrupt" and lines[-1] == "train,\"x ('7'), with a comma\",label not 0/1"
    assert write_report({"train": found}, "r.csv", tmp_path / "gone") is None  # nowhere to write: no error
