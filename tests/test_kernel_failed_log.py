"""A failed kernel shows the tail of its session log ``<slug>.log`` (where Kaggle puts the traceback), which the
client lists last, after the run's own logs (``run/train.log``, the fold workers' logs)."""

from __future__ import annotations

import json

import pytest

TRACEBACK = "Traceback (most recent call last):\nRuntimeError: CUDA error: no kernel image is available\n"


@pytest.fixture
def failing(kaggle_env, kaggle_competition, poll_clock):
    server = kaggle_env.server
    server.datasets.setdefault("testuser/hcd-kit", {"body": {}, "versions": [{}]})  # the wheel, READY
    server.kernel_outcome, server.kernel_polls = "ERROR", 2
    server.kernel_outputs = {
        "gpus.json": b'{"cuda_devices": ["Tesla P100-PCIE-16GB"]}',
        "run/fold0/worker.log": b"fold 0 worker started\n",
        "run/train.log": b"epoch 1 of 2\n",
    }
    server.kernel_log = json.dumps([{"stream_name": "stderr", "time": 1.0, "data": TRACEBACK}])
    return kaggle_competition[0]


def _run(kaggle_env, project, data):
    return kaggle_env.invoke(
        "kernel",
        "run",
        "--root",
        project / "kernels",
        "--train-args",
        "--no-pretrained",
        "--data-dir",
        data,
        "--poll-interval",
        "0.02",
        "--wait-timeout",
        "600",
    )


def test_the_tail_comes_from_the_session_log(kaggle_env, project, failing):
    r = _run(kaggle_env, project, failing)
    assert r.exit_code == 1
    assert "no kernel image is available" in r.stderr
    assert "epoch 1 of 2" not in r.stderr and "worker started" not in r.stderr
    out = project / "kernels" / "hcd-train" / "output"
    assert (out / "run" / "train.log").read_bytes() == b"epoch 1 of 2\n"  # the others are fetched too


def test_without_a_session_log_the_tail_comes_from_the_others(kaggle_env, project, failing):
    kaggle_env.server.kernel_log = ""
    r = _run(kaggle_env, project, failing)
    assert r.exit_code == 1
    assert "worker started" in r.stderr or "epoch 1 of 2" in r.stderr
    assert "left no log" not in r.stderr
