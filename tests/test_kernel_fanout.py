"""`--fold each`: a training kernel per fold, then one inference kernel over their outputs, against the stand-in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import STUB_COMPETITION
from test_kernel_run import FAST, NO_HUB, kernel_outputs  # noqa: F401  (a fixture)

FOLDS = [f"hcd-train-fold-{k}" for k in range(5)]
PREDICT = "hcd-predict-folds"


def _each(kaggle_env, project, data, *extra):
    return kaggle_env.invoke(
        "kernel",
        "run",
        "--fold",
        "each",
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


def _pushes(server) -> list[str]:
    """The kernel slugs pushed, in order."""
    return [c.body["slug"].split("/")[-1] for c in server.calls("SaveKernel")]


def _ledger(project) -> list[dict]:
    path = project / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fold_each_pushes_five_folds_then_one_inference_kernel_and_submits(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    r = _each(kaggle_env, project, kernel_outputs, "--submit", "-m", "r18 five folds")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT]
    # each fold kernel trains its own fold of the 5-fold split
    for k, slug in enumerate(FOLDS):
        script = (project / "kernels" / slug / f"{slug.replace('-', '_')}.py").read_text()
        assert f'FOLD = "{k}"' in script and 'N_FOLDS = "5"' in script and 'MODE = "train"' in script
    # the inference kernel attaches the fold kernels' outputs and names the versions it gathers
    infer = server.calls("SaveKernel")[-1].body
    assert infer["kernelDataSources"] == [f"testuser/{s}" for s in FOLDS]
    assert "invalidKernelSources" not in json.dumps(server.calls("SaveKernel")[-1].body)
    script = (project / "kernels" / PREDICT / "hcd_predict_folds.py").read_text()
    assert 'MODE = "predict"' in script
    assert 'FOLD_KERNELS = "' + ",".join(f"testuser/{s}@1" for s in FOLDS) + '"' in script
    # a status line per change, counting queued / running / complete
    assert "fold 0 QUEUED, fold 1 QUEUED" in r.stdout and "(5 queued, 0 running, 0 complete, 0 failed)" in r.stdout
    assert "(0 queued, 0 running, 5 complete, 0 failed)" in r.stdout
    out = project / "kernels" / PREDICT / "output"
    assert (out / "submission.csv").read_bytes() == server.kernel_outputs["submission.csv"]
    assert "checked against the sample" in r.stdout and "public score 0.9000" in r.stdout
    (sub,) = server.submissions[STUB_COMPETITION]
    assert sub["_data"] == (out / "submission.csv").read_bytes() and sub["description"] == "r18 five folds"
    (row,) = _ledger(project)
    assert row["kernel"] == f"testuser/{PREDICT}" and row["kernel_version"] == 1 and row["status"] == "COMPLETE"
    # the fan-out finished: the same command starts a new one (every kernel once more), submits nothing
    r = _each(kaggle_env, project, kernel_outputs)
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT] * 2 and len(server.calls("CreateSubmission")) == 1
    assert (
        'FOLD_KERNELS = "' + ",".join(f"testuser/{s}@2" for s in FOLDS) + '"'
        in (project / "kernels" / PREDICT / "hcd_predict_folds.py").read_text()
    )


def test_queued_beyond_the_gpu_limit_is_reported_not_failed(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_queued_extra = {"hcd-train-fold-3": 3, "hcd-train-fold-4": 6}  # no free GPU session yet
    r = _each(kaggle_env, project, kernel_outputs)
    assert r.exit_code == 0, r.stderr
    lines = [line.strip() for line in r.stdout.splitlines() if line.startswith("  fold 0 ")]
    assert (
        "fold 0 RUNNING, fold 1 RUNNING, fold 2 RUNNING, fold 3 QUEUED, fold 4 QUEUED (2 queued, 3 running, 0 "
        "complete, 0 failed); Kaggle runs a few GPU sessions at once, the others wait in its queue" in lines
    )
    assert "fold 4 RUNNING (0 queued, 1 running, 4 complete, 0 failed)" in lines[-2]
    assert lines[-1].endswith("(0 queued, 0 running, 5 complete, 0 failed)")


@pytest.mark.parametrize("stop", ["fold-wait", "inference-output", "score-wait", "before-folds-marked"])
def test_rerun_after_stopping_anywhere_pushes_nothing_twice(kaggle_env, project, kernel_outputs, stop):
    server = kaggle_env.server
    args = ("--submit", "-m", "once")
    if stop == "fold-wait":
        server.kernel_polls = 10_000
        r = _each(kaggle_env, project, kernel_outputs, *args, "--wait-timeout", "0.3")
        assert r.exit_code == 1 and "fold kernels still running" in r.stderr and "nothing is pushed twice" in r.stderr
        assert _pushes(server) == FOLDS
        server.kernel_polls = 2
        for k in server.kernels.values():
            k.polls = 0
    elif stop == "inference-output":
        server.fail("ListKernelSessionOutput", status=403, times=1)  # the connection is lost at the fetch
        r = _each(kaggle_env, project, kernel_outputs, *args)
        assert r.exit_code != 0 and _pushes(server) == [*FOLDS, PREDICT]
    elif stop == "score-wait":
        server.submission_polls = 10_000
        r = _each(kaggle_env, project, kernel_outputs, *args, "--score-timeout", "0.2")
        assert r.exit_code == 1 and "still PENDING" in r.stderr
        server.submission_polls = 0
        for sub in server.submissions[STUB_COMPETITION]:
            sub["_polls"] = 1
    else:  # killed after the inference run finished, before the fold kernels were marked finished
        assert _each(kaggle_env, project, kernel_outputs, *args).exit_code == 0
        for slug in FOLDS:
            path = project / "kernels" / slug / "last_push.json"
            rec = json.loads(path.read_text())
            del rec["finished"]
            path.write_text(json.dumps(rec))
    r = _each(kaggle_env, project, kernel_outputs, *args)  # the same command again
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT]  # every kernel pushed once, in all
    assert len(server.calls("CreateSubmission")) == 1
    assert "not pushing again" in r.stdout or "nothing to push" in r.stdout
    (row,) = _ledger(project)
    assert row["kernel"] == f"testuser/{PREDICT}" and row["kernel_version"] == 1


def test_ctrl_c_during_the_fold_wait_then_rerun(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_polls = 10_000
    exe = Path(sys.executable).with_name("hcd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hcd_kit"]
    args = ["kernel", "run", "--fold", "each", *NO_HUB, "--data-dir", str(kernel_outputs), "--poll-interval", "0.05"]
    proc = subprocess.Popen(
        cmd + args, env=kaggle_env.env, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(server.calls("SaveKernel")) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while pushing the fold kernels (or just after)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    pushed = _pushes(server)
    assert 3 <= len(pushed) <= 5 and pushed == FOLDS[: len(pushed)]
    server.kernel_polls = 2
    for k in server.kernels.values():
        k.polls = 0
    r = kaggle_env.run(*args, *FAST, cwd=project)
    assert r.returncode == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT]
    assert (project / "kernels" / PREDICT / "output" / "submission.csv").is_file()


def test_a_failed_fold_is_pushed_again_alone(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_next_outcomes["hcd-train-fold-2"] = ["ERROR"]
    server.kernel_failure = "CUDA out of memory in fold 2"
    r = _each(kaggle_env, project, kernel_outputs, "--submit", "-m", "after a retry")
    assert r.exit_code == 1
    assert _pushes(server) == FOLDS  # no inference kernel over four folds
    assert "last lines of the log of testuser/hcd-train-fold-2 version 1" in r.stderr and "hello" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "fold 2 ERROR: CUDA out of memory in fold 2" in last and "re-push only the failed" in last
    assert "4 completed ones are kept" in last
    assert "(0 queued, 0 running, 4 complete, 1 failed)" in r.stdout
    assert server.calls("CreateSubmission") == []
    r = _each(kaggle_env, project, kernel_outputs, "--submit", "-m", "after a retry")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, "hcd-train-fold-2", PREDICT]
    script = (project / "kernels" / PREDICT / "hcd_predict_folds.py").read_text()
    assert "testuser/hcd-train-fold-2@2" in script and "testuser/hcd-train-fold-1@1" in script
    (row,) = _ledger(project)
    assert row["status"] == "COMPLETE" and row["kernel"] == f"testuser/{PREDICT}"


def test_push_fold_each_pushes_the_folds_and_run_adds_the_inference_kernel(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    root = project / "kernels"
    r = kaggle_env.invoke("kernel", "push", "--fold", "each", "--n-folds", "3", "--root", root, *NO_HUB, "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["hcd-predict-folds", *FOLDS[:3]]
    assert server.calls("SaveKernel") == []
    r = kaggle_env.invoke("kernel", "push", "--fold", "each", "--n-folds", "3", "--root", root, *NO_HUB)
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == FOLDS[:3] and "not pushed" in r.stdout
    r = _each(kaggle_env, project, kernel_outputs, "--n-folds", "3")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS[:3], PREDICT]
    assert server.calls("SaveKernel")[-1].body["kernelDataSources"] == [f"testuser/{s}" for s in FOLDS[:3]]


@pytest.mark.parametrize(
    "extra, words",
    [
        (("--weights-dataset", "hcd-weights"), "--weights-dataset"),
        (("--attach",), "picks up every kernel"),
        (("--n-folds", "1"), "2 to 20 folds"),
        (("--name", "x" * 49), "must be 5-50"),
    ],
)
def test_refused_before_any_push(kaggle_env, project, kernel_outputs, extra, words):
    r = _each(kaggle_env, project, kernel_outputs, *extra)
    assert r.exit_code == 2 and words in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert kaggle_env.server.calls("SaveKernel") == []
