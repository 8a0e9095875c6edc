"""`hcd submit` and `hcd submissions` with the real kaggle client against the local Kaggle stand-in."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from hcd_kit.fsutil import sha256_file

COMP = "histopathologic-cancer-detection"


@pytest.fixture
def comp(kaggle_env, kaggle_competition):
    """(data dir with sample_submission.csv, its ids); the server scores a file by its mean label."""
    src, _ = kaggle_competition

    def score(data: bytes) -> tuple[str, str]:
        labels = [float(line.split(",")[1]) for line in data.decode().splitlines()[1:]]
        mean = sum(labels) / len(labels)
        return f"{mean:.4f}", f"{mean / 2:.4f}"

    kaggle_env.server.score_fn = score
    return src, pd.read_csv(src / "sample_submission.csv", dtype=str)["id"].tolist()


def write_sub(path, ids, labels):
    pd.DataFrame({"id": ids, "label": labels}).to_csv(path, index=False)
    return path


def uploads(server) -> int:
    return len(server.calls("StartSubmissionUpload")) + len(server.calls("PUT")) + len(server.calls("CreateSubmission"))


def test_submit_wait_records_scores(kaggle_env, comp, tmp_path):
    src, ids = comp
    labels = [round((n + 1) / (len(ids) + 1), 4) for n in range(len(ids))]
    sub = write_sub(tmp_path / "submission.csv", ids, labels)
    sub.with_name("submission.csv.json").write_text(
        json.dumps({"runs": ["runs/r18"], "folds": [0, 1], "tta": 8, "ensemble": "mean", "cv_auc": 0.9731})
    )
    ledger = tmp_path / "subs" / "ledger.jsonl"
    r = kaggle_env.run(
        "submit", sub, "-m", "r18 tta8", "--data-dir", src, "--wait", "--poll-interval", "0.05", "--ledger", ledger
    )
    assert r.returncode == 0, r.stderr
    server = kaggle_env.server
    # what the server received: the three-step upload with the file's exact bytes and the message
    (start,) = server.calls("StartSubmissionUpload")
    assert start.body["fileName"] == "submission.csv" and start.body["contentLength"] == sub.stat().st_size
    token = server.calls("CreateSubmission")[0].body["blobFileTokens"]
    assert bytes(server.blobs[token].data) == sub.read_bytes()
    assert server.calls("CreateSubmission")[0].body["submissionDescription"] == "r18 tta8"
    mean = sum(labels) / len(labels)
    assert f"public score {mean:.4f}  private score {mean / 2:.4f}" in r.stdout
    (rec,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    ref = server.submissions[COMP][0]["ref"]
    assert rec["ref"] == ref and rec["status"] == "COMPLETE" and rec["message"] == "r18 tta8"
    assert rec["public_score"] == pytest.approx(mean, abs=1e-4)
    assert rec["private_score"] == pytest.approx(mean / 2, abs=1e-4)
    assert rec["sha256"] == sha256_file(sub) and rec["competition"] == COMP
    assert (rec["runs"], rec["cv_auc"], rec["tta"]) == (["runs/r18"], 0.9731, 8)
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(ledger,))


def _bad_files(ids):
    return {
        "header": ("id,prob\n" + "".join(f"{i},0.5\n" for i in ids), "must be exactly 'id,label'"),
        "missing": ("id,label\n" + "".join(f"{i},0.5\n" for i in ids[1:]), f"1 missing ids ({ids[0]})"),
        "extra": ("id,label\n" + "".join(f"{i},0.5\n" for i in ids) + "f00d,0.5\n", "1 ids not in the sample (f00d)"),
        "duplicate": ("id,label\n" + "".join(f"{i},0.5\n" for i in ids + ids[:1]), f"1 duplicated ids ({ids[0]})"),
        "nan": (
            "id,label\n" + "".join(f"{i},{'NaN' if n == 2 else 0.5}\n" for n, i in enumerate(ids)),
            "line 4: 'NaN'",
        ),
        "range": (
            "id,label\n" + "".join(f"{i},{-0.2 if n == 0 else 0.5}\n" for n, i in enumerate(ids)),
            "line 2: '-0.2'",
        ),
        "malformed": ("id,label\n" + "".join(f"{i};0.5\n" for i in ids), "rows without exactly 2 fields"),
    }


@pytest.mark.parametrize("case", ["header", "missing", "extra", "duplicate", "nan", "range", "malformed"])
def test_invalid_file_never_reaches_kaggle(kaggle_env, comp, tmp_path, case):
    src, ids = comp
    text, expected = _bad_files(ids)[case]
    sub = tmp_path / "bad.csv"
    sub.write_text(text)
    ledger = tmp_path / "ledger.jsonl"
    r = kaggle_env.invoke("submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger)
    assert r.exit_code != 0
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert uploads(kaggle_env.server) == 0
    assert not ledger.exists()


def test_failed_upload_is_an_error_and_not_recorded(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    ledger = tmp_path / "ledger.jsonl"
    kaggle_env.server.fail("PUT", status=500, times=1)  # the client returns ref 0 instead of raising
    r = kaggle_env.invoke("submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger)
    assert r.exit_code == 1 and "Could not submit" in r.stderr and "nothing was recorded" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not ledger.exists() and kaggle_env.server.submissions.get(COMP, []) == []


def test_error_inside_200_is_an_error(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    kaggle_env.server.fail_in_body("CreateSubmission", code=403, message="daily submission limit reached")
    r = kaggle_env.invoke("submit", sub, "-m", "x", "--data-dir", src, "--ledger", tmp_path / "l.jsonl")
    assert r.exit_code == 1 and "daily submission limit reached" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "l.jsonl").exists()
    kaggle_env.assert_no_secret(r.stdout, r.stderr)


def test_stalled_upload_times_out(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    kaggle_env.server.delay("StartSubmissionUpload", seconds=30)
    r = kaggle_env.invoke(
        "submit", sub, "-m", "x", "--data-dir", src, "--ledger", tmp_path / "l.jsonl", "--timeout", "1"
    )
    assert r.exit_code == 1 and "no answer from Kaggle within 1 s" in r.stderr
    assert not (tmp_path / "l.jsonl").exists()


REASON = "[ERROR] Submission column 'label' must be numeric"  # Kaggle's reason, with markup-like brackets


def message_column(table: str) -> str:
    """The text of the listing's message column, its wrapped lines joined (the table fits an 80-column terminal)."""
    cells = [line.split("│")[2].strip() for line in table.splitlines() if line.count("│") == 7]
    return " ".join(c for c in cells if c)


def test_scoring_error_with_wait_prints_kaggles_reason(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    kaggle_env.server.submission_outcome = "ERROR"
    kaggle_env.server.submission_error = REASON
    ledger = tmp_path / "l.jsonl"
    r = kaggle_env.invoke(
        "submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger, "--wait", "--poll-interval", "0.05"
    )
    rec = json.loads(ledger.read_text())
    assert r.exit_code == 1 and f"could not score submission {rec['ref']}: {REASON}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (rec["status"], rec["error_description"]) == ("ERROR", REASON)
    r = kaggle_env.invoke("submissions", "--no-refresh", "--ledger", ledger)
    assert r.exit_code == 0 and f"error: {REASON}" in message_column(r.stdout), r.stdout


def test_submissions_refresh_keeps_the_reason_of_a_failed_submission(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    kaggle_env.server.submission_outcome = "ERROR"
    kaggle_env.server.submission_error = REASON
    kaggle_env.server.submission_polls = 1
    ledger = tmp_path / "l.jsonl"
    assert kaggle_env.invoke("submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger).exit_code == 0
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert r.exit_code == 0 and "ERROR" in r.stdout
    assert f"error: {REASON}" in message_column(r.stdout), r.stdout
    assert json.loads(ledger.read_text())["error_description"] == REASON
    calls = len(kaggle_env.server.calls("ListSubmissions"))  # final now: the next listing asks nothing
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert f"error: {REASON}" in message_column(r.stdout) and len(kaggle_env.server.calls("ListSubmissions")) == calls


def test_wait_gives_up_after_wait_timeout_and_keeps_the_record(kaggle_env, comp, tmp_path):
    src, ids = comp
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    kaggle_env.server.submission_polls = 10_000  # never scored
    ledger = tmp_path / "l.jsonl"
    r = kaggle_env.invoke(
        "submit",
        sub,
        "-m",
        "x",
        "--data-dir",
        src,
        "--ledger",
        ledger,
        "--wait",
        "--poll-interval",
        "0.02",
        "--wait-timeout",
        "0.2",
    )
    assert r.exit_code == 1, r.stdout
    rec = json.loads(ledger.read_text())
    assert f"submission {rec['ref']} still PENDING after 0.2 s; see its score later with `hcd submissions`" in r.stderr
    assert rec["status"] == "PENDING"


def test_submissions_lists_and_refreshes(kaggle_env, comp, tmp_path):
    src, ids = comp
    ledger = tmp_path / "l.jsonl"
    for n, msg in enumerate(["first", "second"]):
        sub = write_sub(tmp_path / f"s{n}.csv", ids, [0.2 * (n + 1)] * len(ids))
        assert kaggle_env.invoke("submit", sub, "-m", msg, "--data-dir", src, "--ledger", ledger).exit_code == 0
    assert [json.loads(x)["status"] for x in ledger.read_text().splitlines()] == ["PENDING", "PENDING"]
    r = kaggle_env.invoke("submissions", "--no-refresh", "--ledger", ledger)
    assert r.exit_code == 0 and "first" in r.stdout and "PENDING" in r.stdout
    assert kaggle_env.server.calls("ListSubmissions") == []
    kaggle_env.server.submission_polls = 1
    for sub in kaggle_env.server.submissions[COMP]:
        sub["_polls"] = 1
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert r.exit_code == 0, r.stderr
    assert "COMPLETE" in r.stdout and "0.2000" in r.stdout and "0.4000" in r.stdout
    recs = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert [(x["message"], x["status"], x["public_score"]) for x in recs] == [
        ("first", "COMPLETE", 0.2),
        ("second", "COMPLETE", 0.4),
    ]
    kaggle_env.assert_no_secret(r.stdout, paths=(ledger,))
    # A failed submission is final and never gets a score: listing again asks Kaggle nothing about it.
    ledger.write_text("".join(json.dumps({**x, "status": "ERROR", "private_score": None}) + "\n" for x in recs))
    calls = len(kaggle_env.server.calls("ListSubmissions"))
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert r.exit_code == 0 and r.stdout.count("ERROR") == 2
    assert len(kaggle_env.server.calls("ListSubmissions")) == calls


def test_submissions_without_credentials_still_lists(kaggle_env, comp, tmp_path, monkeypatch):
    src, ids = comp
    ledger = tmp_path / "l.jsonl"
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    assert kaggle_env.invoke("submit", sub, "-m", "offline later", "--data-dir", src, "--ledger", ledger).exit_code == 0
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.delenv("KAGGLE_USERNAME")
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert r.exit_code == 0 and "offline later" in r.stdout and "PENDING" in r.stdout
    assert "scores not refreshed" in r.stderr and "KAGGLE_USERNAME" in r.stderr
    r = kaggle_env.invoke("submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger)
    assert r.exit_code == 1 and "no Kaggle credentials" in r.stderr
    assert len(ledger.read_text().splitlines()) == 1


def test_the_ledger_is_the_projects_from_any_subfolder_and_ledger_overrides(kaggle_env, comp, tmp_path, monkeypatch):
    src, ids = comp
    project = tmp_path / "project"
    (project / "submissions").mkdir(parents=True)
    deep = project / "runs" / "r18"
    deep.mkdir(parents=True)
    sub = write_sub(deep / "submission.csv", ids, [0.5] * len(ids))
    monkeypatch.chdir(deep)
    r = kaggle_env.invoke("submit", "submission.csv", "-m", "from a subfolder", "--data-dir", src)
    root_ledger = project / "submissions" / "ledger.jsonl"
    assert r.exit_code == 0, r.output
    assert str(root_ledger) in "".join(r.stdout.split())  # the message says where it went (rich may wrap it)
    assert [json.loads(x)["message"] for x in root_ledger.read_text().splitlines()] == ["from a subfolder"]
    assert not (deep / "submissions").exists()
    r = kaggle_env.invoke("submissions", "--no-refresh")
    assert r.exit_code == 0 and "from a subfolder" in r.stdout, r.output
    other = tmp_path / "elsewhere" / "ledger.jsonl"
    r = kaggle_env.invoke("submit", sub, "-m", "kept apart", "--data-dir", src, "--ledger", other)
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["message"] for x in other.read_text().splitlines()] == ["kept apart"]
    assert len(root_ledger.read_text().splitlines()) == 1
    r = kaggle_env.invoke("submissions", "--no-refresh", "--ledger", other)
    assert r.exit_code == 0 and "kept apart" in r.stdout and "from a subfolder" not in r.stdout


# ----------------------------------------------------------------------------------------- dependency floors
def _floor(spec: str, name: str) -> str:
    m = re.fullmatch(rf"{name}\s*>=\s*([\d.]+)(,.*)?", spec.strip())
    assert m, f"{name}: {spec!r} is not a '>=' range"
    return m.group(1)


def test_dependency_floors_admit_only_what_hcd_uses():
    """Python 3.11 for tomllib; kaggle 2.2.2: submissions' page_number, push's machine_shape, output pages."""
    from hcd_kit.kaggle.api import KAGGLE_FLOOR

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert _floor(project["requires-python"], "") == "3.11"
    (kaggle,) = [d for d in project["dependencies"] if re.match(r"kaggle\b", d)]
    assert _floor(kaggle, "kaggle") == "2.2.2" == KAGGLE_FLOOR  # a range, never a hard pin


@pytest.mark.parametrize("version, refused", [("2.2.1", True), ("1.7.4.5", True), ("2.2.2", False)])
def test_older_kaggle_client_is_refused_at_the_first_call(kaggle_env, comp, tmp_path, version, refused):
    """pip keeps an old installed client that met an older range: hcd says so before talking to Kaggle.

    Only the version the client reports is faked (a dist-info ahead of site-packages); the client is real."""
    src, ids = comp
    fake = tmp_path / "fake-dist"
    info = fake / f"kaggle-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kaggle\nVersion: {version}\n")
    sub = write_sub(tmp_path / "s.csv", ids, [0.5] * len(ids))
    ledger = tmp_path / "l.jsonl"
    r = kaggle_env.run("submit", sub, "-m", "x", "--data-dir", src, "--ledger", ledger, env={"PYTHONPATH": str(fake)})
    if not refused:
        assert r.returncode == 0, r.stderr
        assert len(kaggle_env.server.submissions[COMP]) == 1
        return
    assert r.returncode == 1, r.stdout
    assert f"the installed kaggle client is {version}, older than the 2.2.2 hcd needs" in r.stderr
    assert 'pip install -U "kaggle>=2.2.2"' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert kaggle_env.server.requests == [] and not ledger.exists()


@pytest.mark.parametrize("ignored", [True, False])
def test_submissions_reads_past_a_short_page(kaggle_env, comp, tmp_path, ignored):
    """A server that ignores ``page_size`` answers pages of 50: a short page is not the last one (issue #899)."""
    src, ids = comp
    ledger = tmp_path / "l.jsonl"
    sub = write_sub(tmp_path / "s.csv", ids, [0.3] * len(ids))
    assert kaggle_env.invoke("submit", sub, "-m", "old one", "--data-dir", src, "--ledger", ledger).exit_code == 0
    server = kaggle_env.server
    server.submissions_page_size_ignored = ignored
    server.submissions[COMP][0]["_polls"] = 1
    done = {"fileName": "x.csv", "date": "2024-01-02T03:04:05.000Z", "status": "COMPLETE", "publicScore": "0.5"}
    newer = [{"ref": 10_000 + n, **done} for n in range(60)]
    server.submissions[COMP][:0] = newer  # newest first: ours is on the second page of 50
    r = kaggle_env.invoke("submissions", "--ledger", ledger)
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert (rec["status"], rec["public_score"]) == ("COMPLETE", 0.3)
    pages = [c.body.get("page") for c in server.calls("ListSubmissions")]
    assert pages == ([1, 2, 3] if ignored else [1, 2])  # then an empty page ends the listing
