"""`hcd kernel run`: push, wait, fetch, validate, submit, with the real kaggle client against the stand-in."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import STUB_COMPETITION, interruptible, signal_and_wait

NO_HUB = ("--train-args", "--no-pretrained")
# Waits that only stop a hang: in this process they run on the fake poll clock (kernel_outputs), where a wait
# counts polls; an `hcd` subprocess really waits, for as long as a slow machine needs.
FAST = ("--poll-interval", "0.02", "--wait-timeout", "600", "--score-timeout", "600")


@pytest.fixture
def kernel_outputs(kaggle_env, kaggle_competition, poll_clock):
    """The stand-in's kernels leave a valid submission (+ sidecar) and gpus.json; returns the data folder.
    In-process waits run on the fake ``poll_clock``."""
    server = kaggle_env.server
    server.kernel_outputs = {
        "submission.csv": server.valid_submission(STUB_COMPETITION),
        "submission.csv.json": json.dumps({"runs": ["/kaggle/working/run"], "tta": 8}).encode(),
        "gpus.json": b'{"asked": "NvidiaTeslaT4", "cuda_devices": ["Tesla T4", "Tesla T4"]}',
    }
    server.kernel_polls = 4  # QUEUED, QUEUED, RUNNING, RUNNING, then the outcome
    return kaggle_competition[0]


def _run(kaggle_env, project, data, *extra):
    return kaggle_env.invoke(
        "kernel",
        "run",
        "--root",
        project / "kernels",
        *NO_HUB,
        "--data-dir",
        data,
        "--ledger",
        project / "ledger.jsonl",
        *FAST,
        *extra,
    )


def test_run_pushes_waits_fetches_validates_submits(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    r = _run(kaggle_env, project, kernel_outputs, "--submit", "-m", "r18 on a T4")
    assert r.exit_code == 0, r.stderr
    assert len(server.calls("SaveKernel")) == 1
    changes = [
        line.split(": ")[1].split(" (")[0]
        for line in r.stdout.splitlines()
        if line.startswith("  testuser/hcd-train: ")
    ]
    assert changes == ["QUEUED", "RUNNING", "COMPLETE"]  # one line per change, with the time since the push
    out = project / "kernels" / "hcd-train" / "output"
    for name, data in server.kernel_outputs.items():
        assert (out / name).read_bytes() == data
    assert (out / "hcd-train.log").is_file()
    assert "checked against the sample" in r.stdout and "NOT checked" not in r.stdout
    # the file Kaggle received is the fetched one, and the ledger row names the kernel and its version
    (sub,) = server.submissions[STUB_COMPETITION]
    assert sub["_data"] == (out / "submission.csv").read_bytes() and sub["description"] == "r18 on a T4"
    (row,) = [json.loads(line) for line in (project / "ledger.jsonl").read_text().splitlines()]
    assert row["kernel"] == "testuser/hcd-train" and row["kernel_version"] == 1
    assert row["status"] == "COMPLETE" and row["public_score"] == 0.9 and row["tta"] == 8
    assert "public score 0.9000" in r.stdout
    pushed = json.loads((project / "kernels" / "hcd-train" / "last_push.json").read_text())
    assert pushed["version"] == 1 and pushed["submission_ref"] == row["ref"] and pushed["finished"]
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(project,))
    # that run finished: running again pushes a new version (and submits nothing without --submit)
    r = _run(kaggle_env, project, kernel_outputs)
    assert r.exit_code == 0, r.stderr
    assert len(server.calls("SaveKernel")) == 2 and len(server.calls("CreateSubmission")) == 1


def test_gave_up_waiting_then_attach_pushes_nothing(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_polls = 10_000
    r = kaggle_env.invoke(
        "kernel",
        "run",
        "--root",
        project / "kernels",
        *NO_HUB,
        "--data-dir",
        kernel_outputs,
        "--poll-interval",
        "0.02",
        "--wait-timeout",
        "0.3",
    )
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert "still QUEUED" in line and "--attach" in line
    server.kernel_polls = 2  # the session goes on without us and completes
    r = _run(kaggle_env, project, kernel_outputs, "--attach", "--submit", "-m", "attached")
    assert r.exit_code == 0, r.stderr
    assert len(server.calls("SaveKernel")) == 1  # picked up, not pushed again
    assert "attaching to testuser/hcd-train version 1" in r.stdout
    (row,) = [json.loads(line) for line in (project / "ledger.jsonl").read_text().splitlines()]
    assert row["kernel"] == "testuser/hcd-train" and row["kernel_version"] == 1


def test_ctrl_c_then_rerun_picks_up_the_pushed_version(kaggle_env, project, kernel_outputs, monkeypatch):
    server = kaggle_env.server
    server.kernel_polls = 10_000
    exe = Path(sys.executable).with_name("hcd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hcd_kit"]
    args = ["kernel", "run", *NO_HUB, "--data-dir", str(kernel_outputs), "--poll-interval", "0.05"]
    proc = subprocess.Popen(
        cmd + args,
        env=kaggle_env.env,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,  # Ctrl-C reaches it even when this test run itself ignores SIGINT
    )
    deadline = time.monotonic() + 60
    while not server.calls("GetKernelSessionStatus") and time.monotonic() < deadline:
        time.sleep(0.05)
    err = signal_and_wait(proc, signal.SIGINT)  # Ctrl-C while waiting for the session
    assert proc.returncode == 130, err
    assert (project / "kernels" / "hcd-train" / "last_push.json").is_file()
    server.kernel_polls = 2
    monkeypatch.chdir(project)  # the same command again, no --attach, in-process (one start-up saved)
    r = kaggle_env.invoke(*args, *FAST)
    assert r.exit_code == 0, r.stderr
    assert len(server.calls("SaveKernel")) == 1
    assert "picking up testuser/hcd-train version 1" in r.stdout and "not pushing again" in r.stdout
    assert (project / "kernels" / "hcd-train" / "output" / "submission.csv").is_file()


def test_changed_options_while_a_version_runs_are_refused(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_polls = 10_000
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB).exit_code == 0
    r = kaggle_env.invoke(
        "kernel",
        "run",
        "--root",
        project / "kernels",
        "--data-dir",
        kernel_outputs,
        *FAST,
        "--train-args",
        "--no-pretrained --epochs 2",
    )
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert "pushed with other options, is still QUEUED" in line and "--attach" in line
    assert len(server.calls("SaveKernel")) == 1


@pytest.mark.parametrize("outcome", ["ERROR", "CANCEL_ACKNOWLEDGED"])
def test_failed_session_shows_the_log_tail_and_exits_non_zero(kaggle_env, project, kernel_outputs, outcome):
    server = kaggle_env.server
    server.kernel_outcome, server.kernel_failure = outcome, "CUDA out of memory in hcd train"
    server.kernel_log = json.dumps(
        [{"stream_name": "stderr", "time": float(n), "data": f"log line {n}\n"} for n in range(40)]
    )
    r = _run(kaggle_env, project, kernel_outputs, "--submit", "-m", "never")
    assert r.exit_code == 1
    assert "log line 39" in r.stderr and "log line 10" in r.stderr and "log line 9\n" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert f"kernel testuser/hcd-train version 1 ended {outcome}" in last and "push a new version" in last
    assert ("CUDA out of memory in hcd train" in last) == (outcome == "ERROR")  # Kaggle's failure_message
    assert server.calls("CreateSubmission") == [] and not (project / "ledger.jsonl").exists()


def test_refused_before_any_push(kaggle_env, project, kernel_outputs, tmp_path):
    server = kaggle_env.server
    r = _run(kaggle_env, project, tmp_path / "no-data", "--submit", "-m", "x")
    assert r.exit_code == 2 and "sample_submission.csv" in r.stderr and "nothing was pushed" in r.stderr
    r = _run(kaggle_env, project, kernel_outputs, "--submit")
    assert r.exit_code == 2 and "--submit needs -m" in r.stderr
    r = _run(kaggle_env, project, kernel_outputs, "--attach")
    assert r.exit_code == 2 and "nothing was pushed" in r.stderr and "last_push.json" in r.stderr
    assert server.calls("SaveKernel") == []


def test_live_status_line_on_a_terminal(kaggle_env, project, kernel_outputs):
    """On a terminal the wait shows a live line: the status and the time since the push, redrawn in place."""
    r = kaggle_env.run(
        "kernel",
        "run",
        *NO_HUB,
        "--data-dir",
        kernel_outputs,
        "--poll-interval",
        "0.3",
        cwd=project,
        env={"FORCE_COLOR": "1", "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    assert "testuser/hcd-train: QUEUED, 0:00:0" in r.stdout and "testuser/hcd-train: RUNNING, 0:00:0" in r.stdout
    assert "since the push" in r.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_run_help_is_clean_and_offers_every_push_option(width):
    from test_help import TYPE_LABELS, help_text

    text = help_text(["kernel", "run"], width)
    assert not [label for label in TYPE_LABELS if label in text]
    assert not [line for line in text.splitlines() if len(line) > width]
    assert "Example: hcd kernel run" in text

    def flags(cmd: str) -> set[str]:
        return set(re.findall(r"^│ (--[a-z-]+)", help_text(["kernel", cmd], 200), re.M)) - {"--help"}

    push, run = flags("push"), flags("run")
    assert len(push) > 10 and run - push >= {"--attach", "--submit", "--message", "--wait-timeout"}
    assert push - run == {"--dry-run"}  # a push option added later is offered by run too


def test_rerun_after_the_score_wait_gave_up_submits_nothing_twice(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.submission_polls = 10_000
    args = (
        "kernel",
        "run",
        "--root",
        project / "kernels",
        *NO_HUB,
        "--data-dir",
        kernel_outputs,
        "--ledger",
        project / "ledger.jsonl",
        "--poll-interval",
        "0.02",
        "--submit",
        "-m",
        "once",
    )
    r = kaggle_env.invoke(*args, "--score-timeout", "0.2")
    assert r.exit_code == 1 and "still PENDING" in r.stderr
    server.submission_polls = 0
    for sub in server.submissions[STUB_COMPETITION]:
        sub["_polls"] = 1
    r = kaggle_env.invoke(*args)  # the same command again
    assert r.exit_code == 0, r.stderr
    assert "not pushing again" in r.stdout and "not submitting again" in r.stdout
    assert len(server.calls("SaveKernel")) == 1 and len(server.calls("CreateSubmission")) == 1
    (row,) = [json.loads(line) for line in (project / "ledger.jsonl").read_text().splitlines()]
    assert row["status"] == "COMPLETE" and row["kernel"] == "testuser/hcd-train" and row["kernel_version"] == 1
