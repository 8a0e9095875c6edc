"""The submission ledger: records built from a submission and its sidecar, appends, rewrites (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hcd_kit.errors import DataError
from hcd_kit.fsutil import sha256_file
from hcd_kit.kaggle import LedgerRecord, append_record, ledger_path, read_ledger, write_ledger


@pytest.fixture
def ids(sample_root):
    return pd.read_csv(sample_root / "sample_submission.csv", dtype=str)["id"].tolist()


def write(path, header, rows):
    path.write_text("\n".join([header] + [f"{i},{v}" for i, v in rows]) + "\n", encoding="utf-8")
    return path


def test_ledger_record_reads_sidecar_and_appends(tmp_path, ids):
    sub = write(tmp_path / "s.csv", "id,label", [(i, 0.25) for i in ids])
    (tmp_path / "s.csv.json").write_text(
        json.dumps({"runs": ["runs/r18"], "cv_auc": 0.9512, "tta": 8, "folds": [0, 1], "ensemble": "mean"})
    )
    rec = LedgerRecord.for_file(sub, "first try", "histopathologic-cancer-detection")
    assert rec.sha256 == sha256_file(sub) and rec.time.endswith("Z")
    assert (rec.runs, rec.cv_auc, rec.tta, rec.folds) == (["runs/r18"], 0.9512, 8, [0, 1])
    ledger = tmp_path / "sub" / "ledger.jsonl"
    rec.ref = 11
    append_record(ledger, rec)
    rec2 = LedgerRecord.for_file(write(tmp_path / "t.csv", "id,label", [(i, 0.5) for i in ids]), "b", "c")
    assert rec2.runs == [] and rec2.cv_auc is None  # no sidecar: unknowns stay empty
    rec2.ref = 12
    append_record(ledger, rec2)
    lines = ledger.read_text().splitlines()
    assert [json.loads(x)["ref"] for x in lines] == [11, 12]
    back = read_ledger(ledger)
    back[0].public_score = 0.97
    write_ledger(ledger, back)
    assert read_ledger(ledger)[0].public_score == 0.97 and read_ledger(ledger)[1].message == "b"
    assert not list(ledger.parent.glob(".tmp-*"))


def test_corrupt_ledger_line_is_one_error(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"time": "x"\n')
    with pytest.raises(DataError, match="line 1"):
        read_ledger(ledger)


def test_failed_submission_keeps_kaggles_reason_and_old_ledgers_still_load(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    old = {
        "time": "2024-01-02T03:04:05Z",
        "file": "/x/s.csv",
        "sha256": "ab",
        "message": "before the field",
        "competition": "c",
        "ref": 7,
        "status": "ERROR",
    }  # a line written before error_description existed
    ledger.write_text(json.dumps(old) + "\n")
    (rec,) = read_ledger(ledger)
    assert (rec.ref, rec.status, rec.error_description) == (7, "ERROR", None)
    rec.error_description = "Submission has 2 rows, expected 57458"
    append_record(ledger, LedgerRecord(**{**old, "ref": 8, "error_description": "bad header"}))
    write_ledger(ledger, [rec, *read_ledger(ledger)[1:]])
    assert [(r.ref, r.error_description) for r in read_ledger(ledger)] == [
        (7, "Submission has 2 rows, expected 57458"),
        (8, "bad header"),
    ]


def test_default_ledger_is_in_the_nearest_folder_up_with_submissions(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "submissions").mkdir(parents=True)
    deep = project / "runs" / "r18" / "fold0"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert ledger_path(None) == project / "submissions" / "ledger.jsonl"
    assert ledger_path("mine.jsonl") == Path("mine.jsonl")  # --ledger: the file given, as given
    (project / "runs" / "submissions").mkdir()  # the nearest one wins
    assert ledger_path(None) == project / "runs" / "submissions" / "ledger.jsonl"
    alone = tmp_path / "alone"
    alone.mkdir()
    monkeypatch.chdir(alone)  # none up the tree: the current folder's, as before
    assert ledger_path(None).resolve() == alone / "submissions" / "ledger.jsonl"
    (alone / ".git").mkdir()  # the walk stops at the top of a git checkout
    (alone / "sub").mkdir()
    monkeypatch.chdir(alone / "sub")
    (tmp_path / "submissions").mkdir()
    assert ledger_path(None) == Path("submissions") / "ledger.jsonl"
