"""The stand-in's real-limits mode (tests/kaggle_stub.py), driven through the real ``kaggle`` client.

Kaggle runs at most two GPU sessions per account and refuses a third push inside an HTTP 200 (no version, no
queue); a weekly GPU quota that ended sessions consume and ``quota_view`` reads; datasets that are processed
for a while after an upload; retired machine shapes silently replaced; the session log listed last in a
kernel's output. hcd's own behaviour over these lives in the kernel, fan-out and dataset tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

import hcd_kit.kaggle.api as ka
from hcd_kit.kaggle import kernel_output


def _kernel_folder(root: Path, slug: str, **meta: object) -> str:
    folder = root / slug
    folder.mkdir(parents=True)
    (folder / "script.py").write_text("print('hello')\n")
    base = {
        "id": f"testuser/{slug}",
        "title": slug,
        "code_file": "script.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
    }
    (folder / "kernel-metadata.json").write_text(json.dumps({**base, **meta}))
    return str(folder)


def _push(folder: str, timeout: str | None = None):
    return ka.call("push", lambda: ka.get_api().kernels_push(folder, timeout=timeout))


def _status(slug: str) -> str:
    return ka.call("status", lambda: ka.get_api().kernels_status(f"testuser/{slug}")).status.name


def _run_to_end(slug: str) -> str:
    for _ in range(20):
        status = _status(slug)
        if status not in ("QUEUED", "RUNNING"):
            return status
    raise AssertionError(f"{slug} never ended")


def test_a_third_gpu_session_is_refused_in_a_200_and_creates_no_version(kaggle_env, tmp_path):
    server = kaggle_env.server
    assert server.max_gpu_sessions == 2  # on by default
    first, second = _push(_kernel_folder(tmp_path, "gpu-one")), _push(_kernel_folder(tmp_path, "gpu-two"))
    assert not first.error and not second.error and server.live_gpu_sessions() == ["gpu-one", "gpu-two"]
    third = _push(_kernel_folder(tmp_path, "gpu-three"))
    assert third.error == "Maximum batch GPU session count of 2 reached" and not third.version_number
    assert ("testuser", "gpu-three") not in server.kernels  # nothing was created, nothing queues
    assert ("refused", "gpu-three", 0) in server.session_log
    # a CPU kernel takes no GPU slot
    assert not _push(_kernel_folder(tmp_path, "cpu-one", enable_gpu=False)).error
    # a session ends when its status says so; then the slot is free
    assert _run_to_end("gpu-one") == "COMPLETE"
    assert server.live_gpu_sessions() == ["gpu-two"]
    again = _push(str(tmp_path / "gpu-three"))
    assert not again.error and again.version_number == 1
    assert server.peak_gpu_sessions == 2
    assert [e for e in server.session_log if e[1] == "gpu-one"] == [("start", "gpu-one", 1), ("end", "gpu-one", 1)]


def test_a_failed_session_frees_its_slot_and_a_new_version_supersedes_a_live_one(kaggle_env, tmp_path):
    server = kaggle_env.server
    server.kernel_next_outcomes["gpu-one"] = ["ERROR"]
    _push(_kernel_folder(tmp_path, "gpu-one"))
    assert _run_to_end("gpu-one") == "ERROR" and server.live_gpu_sessions() == []
    _push(str(tmp_path / "gpu-one"))
    _push(_kernel_folder(tmp_path, "gpu-two"))
    assert _push(_kernel_folder(tmp_path, "gpu-three")).error  # the limit counts every live version
    v3 = _push(str(tmp_path / "gpu-two"))  # refused too: its version 1 still holds a slot
    assert v3.error and server.kernels[("testuser", "gpu-two")].version == 1
    server.end_session("gpu-one")
    assert _status("gpu-one") == "COMPLETE"  # an ended session's next status is its outcome
    assert _push(str(tmp_path / "gpu-two")).version_number == 2
    assert ("cancel", "gpu-two", 1) in server.session_log and server.live_gpu_sessions() == ["gpu-two"]


def test_a_slot_held_elsewhere_counts_until_it_ends(kaggle_env, tmp_path):
    server = kaggle_env.server
    server.hold_gpu_session("editor-notebook", polls=3)  # a session started in the web editor
    _push(_kernel_folder(tmp_path, "gpu-one"))
    assert _push(_kernel_folder(tmp_path, "gpu-two")).error
    server.kernel_polls = 100
    for _ in range(3):
        _status("gpu-one")  # time passes: the editor's session ends after 3 status calls
    assert server.live_gpu_sessions() == ["gpu-one"]
    assert not _push(str(tmp_path / "gpu-two")).error


def test_the_weekly_quota_is_consumed_by_ended_sessions_and_read_by_quota_view(kaggle_env, tmp_path):
    server = kaggle_env.server
    assert (server.gpu_quota_hours, server.session_hours) == (30.0, 1.0)
    quota = ka.call("quota", lambda: ka.get_api().quota_view()).gpu_quota
    assert quota.total_time_allowed.total_seconds() == 30 * 3600 and quota.time_used.total_seconds() == 0
    _push(_kernel_folder(tmp_path, "gpu-one"), timeout="1800")  # a session timeout caps what it may spend
    _push(_kernel_folder(tmp_path, "gpu-two"))
    quota = ka.call("quota", lambda: ka.get_api().quota_view()).gpu_quota
    assert quota.time_reserved.total_seconds() == 1800 + 3600 and quota.time_used.total_seconds() == 0
    _run_to_end("gpu-one"), _run_to_end("gpu-two")
    quota = ka.call("quota", lambda: ka.get_api().quota_view()).gpu_quota
    assert quota.time_used.total_seconds() == 5400 and server.gpu_hours_used == pytest.approx(1.5)
    server.gpu_quota_hours = 1.5  # nothing left
    refused = _push(_kernel_folder(tmp_path, "gpu-three"))
    assert refused.error == "Maximum weekly GPU quota of 1.50 hours reached"
    assert ("testuser", "gpu-three") not in server.kernels
    assert not _push(_kernel_folder(tmp_path, "cpu-one", enable_gpu=False)).error  # CPU sessions are not billed


def _dataset_folder(root: Path, slug: str) -> str:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.bin").write_bytes(b"\x01" * 100)
    meta = {"id": f"testuser/{slug}", "title": slug, "licenses": [{"name": "CC0-1.0"}]}
    (folder / "dataset-metadata.json").write_text(json.dumps(meta))
    return str(folder)


def test_a_dataset_is_processing_for_a_while_after_an_upload(kaggle_env, tmp_path):
    server = kaggle_env.server
    assert server.dataset_processing_polls == 2
    folder = _dataset_folder(tmp_path, "my-wheel")
    api = ka.get_api()
    assert ka.check_reported("create", ka.call("create", lambda: api.dataset_create_new(folder, quiet=True)))
    # a kernel pushed now is saved (and runs) but cannot attach it
    pushed = _push(_kernel_folder(tmp_path, "uses-it", dataset_sources=["testuser/my-wheel"], enable_gpu=False))
    assert pushed.invalid_dataset_sources == ["testuser/my-wheel"] and pushed.version_number == 1
    # a new version while it is processing: a 403 that does not say why
    with pytest.raises(requests.HTTPError) as info:
        api.dataset_create_version(folder, "v2", quiet=True)
    assert info.value.response.status_code == 403
    assert [api.dataset_status("testuser/my-wheel") for _ in range(3)] == ["blobs_received"] * 2 + ["ready"]
    assert not _push(str(tmp_path / "uses-it")).invalid_dataset_sources
    assert ka.check_reported("v2", ka.call("v2", lambda: api.dataset_create_version(folder, "v2", quiet=True)))
    assert api.dataset_status("testuser/my-wheel") == "blobs_received"  # the new version is processed too
    assert len(server.datasets["testuser/my-wheel"]["versions"]) == 2


@pytest.mark.parametrize(
    ("asked", "got", "gpu"),
    [("NvidiaTeslaP100", "NvidiaTeslaT4", True), ("TpuV38", "TpuV5E8", False), ("Tpu1VmV38", "TpuV5E8", False)],
)
def test_a_retired_machine_shape_is_replaced_silently(kaggle_env, tmp_path, asked, got, gpu):
    server = kaggle_env.server
    res = _push(_kernel_folder(tmp_path, "old-shape", machine_shape=asked))
    assert not res.error and res.version_number == 1
    assert server.calls("SaveKernel")[-1].body["machineShape"] == asked  # the client sends what was asked
    assert server.kernel_shapes["old-shape"] == got
    assert server.live_gpu_sessions() == (["old-shape"] if gpu else [])


def test_the_session_log_comes_last_in_the_output(kaggle_env, tmp_path):
    server = kaggle_env.server
    server.kernel_outputs = {
        "submission.csv": b"id,label\n",
        "run/train.log": b"epoch 1\n",
        "run/fold0/worker.log": b"worker\n",
    }
    server.kernel_log = '[{"stream_name":"stderr","time":2.0,"data":"Traceback: boom\\n"}]'
    _push(_kernel_folder(tmp_path, "hcd-train", enable_gpu=False))
    files = kernel_output("testuser/hcd-train", tmp_path / "out")
    rel = [f.relative_to(tmp_path / "out").as_posix() for f in files]
    assert rel[-1] == "hcd-train.log" and set(rel[:-1]) == set(server.kernel_outputs)
    assert (tmp_path / "out" / "run" / "train.log").read_bytes() == b"epoch 1\n"
    assert "boom" in (tmp_path / "out" / "hcd-train.log").read_text()
