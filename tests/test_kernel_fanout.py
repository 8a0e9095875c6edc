"""`--fold each`: a training kernel per fold, then one inference kernel over their outputs, against the stand-in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import STUB_COMPETITION, interruptible, signal_and_wait
from test_kernel_run import FAST, NO_HUB, kernel_outputs  # noqa: F401  (a fixture)

PAIRS = ["hcd-train-fold-0-1", "hcd-train-fold-2-3", "hcd-train-fold-4"]  # two folds per kernel (T4 x2)
FOLDS = [f"hcd-train-fold-{k}" for k in range(5)]  # --folds-per-kernel 1
PREDICT = "hcd-predict-folds"


@pytest.fixture(autouse=True)
def _state_and_wheel(kaggle_env, tmp_path, monkeypatch):
    """The account's slot ledger in this test's folder; the wheel dataset the kernels attach, READY."""
    monkeypatch.setenv("HCD_STATE_DIR", str(tmp_path / "state"))
    kaggle_env.env["HCD_STATE_DIR"] = str(tmp_path / "state")
    kaggle_env.server.datasets.setdefault("testuser/hcd-kit", {"body": {}, "versions": [{}], "processing": 0})


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
    """The kernel slugs whose push created a version, in order (a push refused for want of a slot created none)."""
    return [slug for event, slug, _ in server.session_log if event == "start"]


def _ledger(project) -> list[dict]:
    path = project / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fold_each_trains_two_folds_per_kernel_in_at_most_two_sessions_then_submits(
    kaggle_env, project, kernel_outputs
):
    server = kaggle_env.server
    r = _each(kaggle_env, project, kernel_outputs, "--n-folds", "5", "--submit", "-m", "r18 five folds")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*PAIRS, PREDICT]  # three fold kernels for five folds, each pushed once
    assert [c.body["slug"].split("/")[-1] for c in server.calls("SaveKernel")] == [*PAIRS, PREDICT]
    assert server.peak_gpu_sessions == 2 and not [e for e in server.session_log if e[0] == "refused"]
    # each fold kernel trains its folds at once, one per GPU, within the recipe's planned hours
    for slug, fold in zip(PAIRS, ["0,1", "2,3", "4"], strict=True):
        script = (project / "kernels" / slug / f"{slug.replace('-', '_')}.py").read_text()
        assert f'FOLD = "{fold}"' in script and 'N_FOLDS = "5"' in script and 'MODE = "train"' in script
        assert ('"fold-parallel"' in script) == ("," in fold) and '"--time-budget"' in script
    # every push caps its session (the client's timeout): the budget plus a margin, within Kaggle's 12 h
    limits = [int(c.body["sessionTimeoutSeconds"]) for c in server.calls("SaveKernel")]
    assert len(set(limits)) == 1 and 1800 < limits[0] <= 12 * 3600
    infer = server.calls("SaveKernel")[-1].body
    assert infer["kernelDataSources"] == [f"testuser/{s}" for s in PAIRS]
    script = (project / "kernels" / PREDICT / "hcd_predict_folds.py").read_text()
    assert 'FOLD_KERNELS = "' + ",".join(f"testuser/{s}@1" for s in PAIRS) + '"' in script
    # a line per change: which fold kernels wait for a session (here), run, finished
    assert "folds 0,1 pushed, folds 2,3 pushed, fold 4 waiting (1 waiting for a GPU session" in r.stdout
    assert "Kaggle runs at most 2 GPU sessions at once and queues none: the others wait here" in r.stdout
    assert "(0 waiting for a GPU session, 0 queued, 0 running, 3 complete, 0 failed)" in r.stdout
    assert "queue" not in r.stdout.replace("queues none", "").replace("queued", "")
    out = project / "kernels" / PREDICT / "output"
    assert (out / "submission.csv").read_bytes() == server.kernel_outputs["submission.csv"]
    (sub,) = server.submissions[STUB_COMPETITION]
    assert sub["_data"] == (out / "submission.csv").read_bytes() and sub["description"] == "r18 five folds"
    (row,) = _ledger(project)
    assert row["kernel"] == f"testuser/{PREDICT}" and row["kernel_version"] == 1 and row["status"] == "COMPLETE"
    # the fan-out finished: the same command starts a new one (every kernel once more), submits nothing
    r = _each(kaggle_env, project, kernel_outputs)
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*PAIRS, PREDICT] * 2 and len(server.calls("CreateSubmission")) == 1
    assert server.peak_gpu_sessions == 2


def test_one_fold_per_kernel_pushes_five_kernels_two_at_a_time(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    r = _each(kaggle_env, project, kernel_outputs, "--folds-per-kernel", "1", "--submit", "-m", "five kernels")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT] and server.peak_gpu_sessions == 2
    assert "fold-parallel" not in (project / "kernels" / FOLDS[0] / "hcd_train_fold_0.py").read_text()
    (row,) = _ledger(project)
    assert row["kernel"] == f"testuser/{PREDICT}"


def test_a_session_started_elsewhere_is_waited_out_not_fought(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.hold_gpu_session("notebook-in-the-editor", polls=12)  # the web editor holds one of the two slots
    r = _each(kaggle_env, project, kernel_outputs, "--folds-per-kernel", "1")
    assert r.exit_code == 0, r.stderr
    assert "Kaggle has no free GPU session" in r.stdout and "started elsewhere" in r.stdout
    assert server.peak_gpu_sessions == 2 and _pushes(server) == ["notebook-in-the-editor", *FOLDS, PREDICT]
    refused = [slug for event, slug, _ in server.session_log if event == "refused"]
    assert refused and set(refused) <= set(FOLDS)  # tried again after the refusal, never pushed twice


def test_a_fanout_beyond_the_gpu_quota_left_is_refused_before_any_push(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.gpu_hours_used = server.gpu_quota_hours - 8.0  # eight hours left this week
    budget = ("--train-args", "--no-pretrained --time-budget 3h")  # 3 h + the margin per fold kernel
    r = _each(kaggle_env, project, kernel_outputs, "--folds-per-kernel", "1", *budget)
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert "5 fold kernel sessions" in line and "8.0 h of this week's GPU quota left" in line and "nothing" in line
    assert '--n-folds 2, or --train-args "--time-budget 51m"' in line
    assert server.calls("SaveKernel") == []
    r = _each(kaggle_env, project, kernel_outputs, "--n-folds", "3", *budget)  # two fold kernels: 7.5 h
    assert r.exit_code == 0, r.stderr
    assert "GPU quota: 2 fold kernels" in r.stdout and "of the 8.0 GPU hours left" in r.stdout


def test_a_push_whose_answer_timed_out_is_not_pushed_again(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.delay("SaveKernel", seconds=2.0)  # the service creates the version, the answer comes too late
    r = _each(kaggle_env, project, kernel_outputs, "--timeout", "0.5")
    assert r.exit_code == 1 and "no answer from Kaggle" in r.stderr and "never pushes twice" in r.stderr
    deadline = time.monotonic() + 30
    while (server.held or not server.kernels) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pushes(server) == [PAIRS[0]]  # it was created
    r = _each(kaggle_env, project, kernel_outputs)
    assert r.exit_code == 0, r.stderr
    assert "whose push got no answer, was created: not pushing again" in r.stdout
    assert _pushes(server) == [*PAIRS, PREDICT]
    assert [c.body["slug"].split("/")[-1] for c in server.calls("SaveKernel")] == [*PAIRS, PREDICT]


def _hcd(kaggle_env, project, *args):
    exe = Path(sys.executable).with_name("hcd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hcd_kit"]
    return subprocess.Popen(
        cmd + [str(a) for a in args],
        env=kaggle_env.env,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,  # Ctrl-C reaches it even when this test run itself ignores SIGINT
    )


def test_two_runs_started_together_hold_at_most_two_sessions_between_them(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_polls = 6
    procs = [
        _hcd(kaggle_env, project, "kernel", "run", "--fold", "each", "--n-folds", "4", "--name", name,
             *NO_HUB, "--data-dir", kernel_outputs, "--poll-interval", "0.02", "--wait-timeout", "600")
        for name in ("run-a", "run-b")
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert server.peak_gpu_sessions <= 2
    assert not [e for e in server.session_log if e[0] == "refused"]  # the shared ledger kept them apart
    pushed = _pushes(server)
    for name in ("run-a", "run-b"):
        assert sorted(s for s in pushed if s.startswith(name)) == [
            f"{name}-fold-0-1",
            f"{name}-fold-2-3",
            f"{name}-predict",
        ]


@pytest.mark.parametrize("stop", ["fold-wait", "inference-output", "score-wait", "before-folds-marked"])
def test_rerun_after_stopping_anywhere_pushes_nothing_twice(kaggle_env, project, kernel_outputs, stop):
    server = kaggle_env.server
    args = ("--submit", "-m", "once")
    if stop == "fold-wait":
        server.kernel_polls = 10_000
        r = _each(kaggle_env, project, kernel_outputs, *args, "--wait-timeout", "0.3")
        assert r.exit_code == 1 and "still running or waiting for a GPU session" in r.stderr
        assert "nothing is pushed twice" in r.stderr
        assert _pushes(server) == PAIRS[:2]  # the third waits for one of the two sessions to end
        server.kernel_polls = 2
        for k in server.kernels.values():
            k.polls = 0
    elif stop == "inference-output":
        server.fail("ListKernelSessionOutput", status=403, times=1)  # the connection is lost at the fetch
        r = _each(kaggle_env, project, kernel_outputs, *args)
        assert r.exit_code != 0 and _pushes(server) == [*PAIRS, PREDICT]
    elif stop == "score-wait":
        server.submission_polls = 10_000
        r = _each(kaggle_env, project, kernel_outputs, *args, "--score-timeout", "0.2")
        assert r.exit_code == 1 and "still PENDING" in r.stderr
        server.submission_polls = 0
        for sub in server.submissions[STUB_COMPETITION]:
            sub["_polls"] = 1
    else:  # killed after the inference run finished, before the fold kernels were marked finished
        assert _each(kaggle_env, project, kernel_outputs, *args).exit_code == 0
        for slug in PAIRS:
            path = project / "kernels" / slug / "last_push.json"
            rec = json.loads(path.read_text())
            del rec["finished"]
            path.write_text(json.dumps(rec))
    r = _each(kaggle_env, project, kernel_outputs, *args)  # the same command again
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*PAIRS, PREDICT]  # every kernel pushed once, in all
    assert server.peak_gpu_sessions <= 2 and len(server.calls("CreateSubmission")) == 1
    assert "not pushing again" in r.stdout or "nothing to push" in r.stdout
    (row,) = _ledger(project)
    assert row["kernel"] == f"testuser/{PREDICT}" and row["kernel_version"] == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_stopped_during_the_schedule_then_rerun(kaggle_env, project, kernel_outputs, sig, monkeypatch):
    server = kaggle_env.server
    server.kernel_polls = 10_000
    args = ["kernel", "run", "--fold", "each", "--folds-per-kernel", "1", *NO_HUB, "--data-dir", kernel_outputs]
    proc = _hcd(kaggle_env, project, *args, "--poll-interval", "0.05")
    deadline = time.monotonic() + 60
    while len(_pushes(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # waiting for a slot (or polling)
    err = signal_and_wait(proc, sig)  # Ctrl-C, or a kill, while two fold kernels run and three wait
    assert proc.returncode == (130 if sig == signal.SIGINT else -9), err
    assert _pushes(server) == FOLDS[:2]
    server.kernel_polls = 2
    for k in server.kernels.values():
        k.polls = 0
    monkeypatch.chdir(project)  # the same command again, in the same folder (here in-process: no second start-up)
    r = kaggle_env.invoke(*args, *FAST)
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*FOLDS, PREDICT] and server.peak_gpu_sessions == 2
    assert (project / "kernels" / PREDICT / "output" / "submission.csv").is_file()


def test_a_failed_fold_kernel_is_pushed_again_alone(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    server.kernel_next_outcomes["hcd-train-fold-2-3"] = ["ERROR"]
    server.kernel_failure = "CUDA out of memory in fold 2"
    r = _each(kaggle_env, project, kernel_outputs, "--submit", "-m", "after a retry")
    assert r.exit_code == 1
    assert _pushes(server) == PAIRS  # no inference kernel over three folds
    assert "last lines of the log of testuser/hcd-train-fold-2-3 version 1" in r.stderr and "hello" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "folds 2,3 ERROR: CUDA out of memory in fold 2" in last and "re-push only the failed" in last
    assert "2 completed ones are kept" in last
    assert "(0 waiting for a GPU session, 0 queued, 0 running, 2 complete, 1 failed)" in r.stdout
    assert server.calls("CreateSubmission") == []
    r = _each(kaggle_env, project, kernel_outputs, "--submit", "-m", "after a retry")
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == [*PAIRS, "hcd-train-fold-2-3", PREDICT]
    script = (project / "kernels" / PREDICT / "hcd_predict_folds.py").read_text()
    assert "testuser/hcd-train-fold-2-3@2" in script and "testuser/hcd-train-fold-0-1@1" in script
    (row,) = _ledger(project)
    assert row["status"] == "COMPLETE" and row["kernel"] == f"testuser/{PREDICT}"


def test_push_fold_each_pushes_while_sessions_are_free_and_run_does_the_rest(kaggle_env, project, kernel_outputs):
    server = kaggle_env.server
    root = project / "kernels"
    base = ("kernel", "push", "--fold", "each", "--folds-per-kernel", "1", "--n-folds", "3", "--root", root, *NO_HUB)
    r = kaggle_env.invoke(*base, "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in root.iterdir()) == ["hcd-predict-folds", *FOLDS[:3]]
    assert server.calls("SaveKernel") == []
    r = kaggle_env.invoke(*base)
    assert r.exit_code == 0, r.stderr
    assert _pushes(server) == FOLDS[:2] and "not pushed" in r.stdout
    assert "fold 2 wait for a GPU session" in r.stdout
    r = _each(kaggle_env, project, kernel_outputs, "--folds-per-kernel", "1", "--n-folds", "3")
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
        (("--train-args", "--no-pretrained --strategy ddp"), "--strategy fold-parallel"),
        (("--folds-per-kernel", "9"), "use 1 to 8"),
    ],
)
def test_refused_before_any_push(kaggle_env, project, kernel_outputs, extra, words):
    r = _each(kaggle_env, project, kernel_outputs, *extra)
    assert r.exit_code == 2 and words in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert kaggle_env.server.calls("SaveKernel") == []
