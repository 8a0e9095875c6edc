"""Submission validation, against a real sample_submission.csv (no server)."""

from __future__ import annotations

import pandas as pd
import pytest

from hcd_kit.errors import DataError
from hcd_kit.runs import validate_submission


@pytest.fixture
def sample(sample_root):
    return sample_root / "sample_submission.csv"


@pytest.fixture
def ids(sample):
    return pd.read_csv(sample, dtype=str)["id"].tolist()


def write(path, header, rows):
    path.write_text("\n".join([header] + [f"{i},{v}" for i, v in rows]) + "\n", encoding="utf-8")
    return path


def test_valid_file_round_trips(tmp_path, sample, ids):
    rows = [(i, n / len(ids)) for n, i in enumerate(ids)]
    df = validate_submission(write(tmp_path / "s.csv", "id,label", rows), sample)
    assert df["id"].tolist() == ids
    assert df["label"].tolist() == pytest.approx([v for _, v in rows])


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda ids: ("id,prob", [(i, 0.5) for i in ids]), "header is 'id,prob'"),
        (lambda ids: ("id,label", [(i, 0.5) for i in ids[3:]]), "3 missing ids"),
        (lambda ids: ("id,label", [(i, 0.5) for i in ids] + [("deadbeef", 0.5)]), "1 ids not in the sample (deadbeef)"),
        (lambda ids: ("id,label", [(i, 0.5) for i in ids] + [(ids[7], 0.5)]), "1 duplicated ids"),
        (lambda ids: ("id,label", [(i, "nan" if n == 4 else 0.5) for n, i in enumerate(ids)]), "line 6: 'nan'"),
        (lambda ids: ("id,label", [(i, 1.5 if n == 0 else 0.5) for n, i in enumerate(ids)]), "line 2: '1.5'"),
        (lambda ids: ("id,label", [(i, "high" if n == 1 else 0.5) for n, i in enumerate(ids)]), "line 3: 'high'"),
        (lambda ids: ("id,label", [(i, "inf" if n == 2 else 0.5) for n, i in enumerate(ids)]), "1 labels not a finite"),
    ],
    ids=["header", "missing", "extra", "duplicate", "nan", "range", "text", "inf"],
)
def test_each_problem_is_named(tmp_path, sample, ids, mutate, expected):
    header, rows = mutate(ids)
    with pytest.raises(DataError) as err:
        validate_submission(write(tmp_path / "s.csv", header, rows), sample)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_all_problems_in_one_line(tmp_path, sample, ids):
    rows = [(i, 0.5) for i in ids[2:]] + [("extra1", -0.1), (ids[5], 0.5)]
    with pytest.raises(DataError) as err:
        validate_submission(write(tmp_path / "s.csv", "id,label", rows), sample)
    msg = str(err.value)
    assert "2 missing ids" in msg and "1 ids not in the sample" in msg
    assert "1 duplicated ids" in msg and "1 labels not a finite number" in msg
    assert len(msg.splitlines()) == 1
    # names a few, not hundreds
    assert ids[0] in msg and len(msg) < 600


def test_malformed_csv(tmp_path, sample, ids):
    p = tmp_path / "s.csv"
    p.write_text("id,label\n" + "\n".join(f"{i},0.5" for i in ids[:-1]) + f"\n{ids[-1]},0.5,extra\n")
    with pytest.raises(DataError, match="1 rows without exactly 2 fields"):
        validate_submission(p, sample)
    p.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not a UTF-8"):
        validate_submission(p, sample)
    p.write_text("")
    with pytest.raises(DataError, match="is empty"):
        validate_submission(p, sample)
    with pytest.raises(DataError, match="not found"):
        validate_submission(tmp_path / "absent.csv", sample)
    with pytest.raises(DataError, match="sample_submission"):
        validate_submission(write(p, "id,label", [(i, 0.5) for i in ids]), tmp_path / "sample_submission.csv")
