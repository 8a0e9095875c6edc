"""Datasets Kaggle is still processing, sources checked before a kernel push, and the machine shapes that exist
today (issue 19, items 3, 4 and 8), against the stand-in in its real-limits mode (``dataset_processing_polls``)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from conftest import ready_datasets, ready_models

NO_HUB = ("--train-args", "--no-pretrained")


def fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "hcd_kit-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hcd_kit/__init__.py", "")
    return wheel


def push_wheel(kaggle_env, tmp_path: Path, name: str, *extra: str):
    wheel = fake_wheel(tmp_path)
    return kaggle_env.invoke("dataset", "push", "--name", name, "--wheel", wheel, "--out-dir", tmp_path / name, *extra)


def statuses(server) -> int:
    return len(server.calls("GetDatasetStatus"))


def test_dataset_push_waits_until_kaggle_has_processed_it(kaggle_env, tmp_path, poll_clock):
    server = kaggle_env.server
    r = push_wheel(kaggle_env, tmp_path, "hcd-kit-new")
    assert r.exit_code == 0, r.stderr
    assert "dataset testuser/hcd-kit-new: Kaggle is processing it (blobs_received" in r.stdout
    assert "created dataset testuser/hcd-kit-new, READY" in r.stdout
    assert server.datasets["testuser/hcd-kit-new"]["processing"] == 0
    # after the create, two status calls answered processing and the last READY, with backoff between them
    created = server.requests.index(server.calls("CreateDataset")[0])
    after = [c for c in server.requests[created:] if c.endpoint == "GetDatasetStatus"]
    assert len(after) == server.dataset_processing_polls + 1
    assert poll_clock.sleeps == pytest.approx([5.0, 7.5])


def test_no_wait_returns_at_once_and_the_next_version_waits_for_the_previous(kaggle_env, tmp_path, poll_clock):
    server = kaggle_env.server
    r = push_wheel(kaggle_env, tmp_path, "hcd-kit-new", "--no-wait")
    assert r.exit_code == 0, r.stderr
    assert "Kaggle is processing it (not waited for)" in r.stdout
    assert server.datasets["testuser/hcd-kit-new"]["processing"] > 0
    r = push_wheel(kaggle_env, tmp_path, "hcd-kit-new")  # a version pushed now would get a 403: it waits first
    assert r.exit_code == 0, r.stderr
    assert "new version of dataset testuser/hcd-kit-new, READY" in r.stdout
    assert (
        len(server.calls("CreateDatasetVersion")) == 1 and len(server.datasets["testuser/hcd-kit-new"]["versions"]) == 2
    )


def test_a_version_refused_while_the_previous_is_processed_is_explained_as_such(kaggle_env, tmp_path, poll_clock):
    server = kaggle_env.server
    assert push_wheel(kaggle_env, tmp_path, "hcd-kit-new", "--no-wait").exit_code == 0
    server.datasets["testuser/hcd-kit-new"]["processing"] = 100
    r = push_wheel(kaggle_env, tmp_path, "hcd-kit-new", "--no-wait")  # no wait before it: the service says 403
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert "HTTP 403" in line and "still processing the previous one (blobs_received), not for lack of access" in line
    assert "wait until it is ready and push again" in line and "has access" not in line


def test_a_version_waits_no_longer_than_wait_timeout(kaggle_env, tmp_path, poll_clock):
    server = kaggle_env.server
    assert push_wheel(kaggle_env, tmp_path, "hcd-kit-new", "--no-wait").exit_code == 0
    server.datasets["testuser/hcd-kit-new"]["processing"] = 100
    r = push_wheel(kaggle_env, tmp_path, "hcd-kit-new", "--wait-timeout", "20")
    assert r.exit_code == 1
    assert "dataset 'testuser/hcd-kit-new' is still being processed by Kaggle (blobs_received) after 20 s" in r.stderr
    assert server.calls("CreateDatasetVersion") == []


def test_kernel_push_right_after_dataset_push_waits_for_ready(kaggle_env, project, tmp_path, poll_clock):
    """`hcd dataset push --no-wait` then at once `hcd kernel push`: the kernel is pushed only once the new wheel
    version is READY, so Kaggle attaches it (no invalid sources), and a line says why it waits."""
    server = kaggle_env.server
    assert push_wheel(kaggle_env, tmp_path, "hcd-kit", "--no-wait").exit_code == 0  # a new version of the wheel
    assert server.datasets["testuser/hcd-kit"]["processing"] > 0
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB)
    assert r.exit_code == 0, r.stderr
    assert "waiting for dataset testuser/hcd-kit: Kaggle is still processing it (blobs_received)" in r.stdout
    assert server.datasets["testuser/hcd-kit"]["processing"] == 0
    endpoints = [c.endpoint for c in server.requests if c.endpoint in ("GetDatasetStatus", "SaveKernel")]
    assert endpoints[-1] == "SaveKernel" and endpoints[-2] == "GetDatasetStatus"
    rec = json.loads((project / "kernels" / "hcd-train" / "last_push.json").read_text())
    assert "invalid_sources" not in rec


def test_kernel_run_right_after_dataset_push_attaches_the_ready_version(kaggle_env, project, tmp_path, poll_clock):
    server = kaggle_env.server
    server.kernel_polls = 2
    assert push_wheel(kaggle_env, tmp_path, "hcd-kit", "--no-wait").exit_code == 0
    r = kaggle_env.invoke("kernel", "run", "--root", project / "kernels", "--poll-interval", "0.01", *NO_HUB)
    assert server.datasets["testuser/hcd-kit"]["processing"] == 0
    (save,) = server.calls("SaveKernel")
    first_save = server.requests.index(save)
    ready = [i for i, c in enumerate(server.requests) if c.endpoint == "GetDatasetStatus"]
    assert ready and ready[-1] < first_save  # every dataset status call came before the push
    assert "Invalid" not in r.stderr and "without the sources" not in r.stderr


def test_a_dataset_kaggle_does_not_know_is_refused_before_the_push(kaggle_env, project):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dataset", "someone/nope", *NO_HUB)
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert "Kaggle does not know dataset 'someone/nope'" in line
    assert kaggle_env.server.calls("SaveKernel") == []


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        (lambda s: s.rules_accepted.update({"histopathologic-cancer-detection": False}), [], "accept"),
        (lambda s: None, ["--competition", "no-such-competition"], "Kaggle does not know competition"),
    ],
    ids=["rules-not-accepted", "unknown"],
)
def test_a_competition_this_account_cannot_read_is_refused_before_the_push(kaggle_env, project, setup, args, expected):
    setup(kaggle_env.server)
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *args, *NO_HUB)
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert expected in line and "nothing was pushed" in line
    assert kaggle_env.server.calls("SaveKernel") == []


def test_a_model_source_kaggle_does_not_know_is_refused_before_the_push(kaggle_env, project):
    handle = "alice/timm-r34/pyTorch/imagenet/3"
    args = ("kernel", "push", "--root", project / "kernels", "--train-args", f"--weights=model:{handle}/m.pth")
    r = kaggle_env.invoke(*args)
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert f"Kaggle does not know model '{handle}'" in line and "nothing was pushed" in line
    assert kaggle_env.server.calls("SaveKernel") == []
    ready_models(kaggle_env.server, handle)
    assert kaggle_env.invoke(*args).exit_code == 0 and len(kaggle_env.server.calls("SaveKernel")) == 1


def test_a_kernel_source_without_a_finished_version_is_refused_before_the_push(kaggle_env, tmp_path):
    from hcd_kit.errors import ConfigError, KaggleError
    from hcd_kit.kaggle.sources import check_sources

    server = kaggle_env.server
    ready_datasets(server, "testuser/data-one")
    folder = tmp_path / "k"
    folder.mkdir()
    meta = {"dataset_sources": ["testuser/data-one"], "kernel_sources": ["testuser/no-such-kernel"]}
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    with pytest.raises(KaggleError, match="Kaggle does not know kernel 'testuser/no-such-kernel'"):
        check_sources(folder)
    server.kernel_polls = 1000  # pushed, still queued
    server.max_gpu_sessions = None
    kaggle_env.invoke("kernel", "push", "--root", tmp_path / "kernels", "--name", "no-such-kernel", *NO_HUB)
    with pytest.raises(ConfigError, match="kernel source 'testuser/no-such-kernel' is QUEUED: Kaggle attaches only"):
        check_sources(folder)


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ("NvidiaTeslaP100", "retired: Kaggle silently runs it on another GPU"),
        ("TpuV38", "retired (Kaggle runs it on a TpuV5E8 instead)"),
        ("Tpu1VmV38", "retired (Kaggle runs it on a TpuV5E8 instead)"),
        ("NvidiaTeslaT4Highmem", "an internal Kaggle pool, not offered to users"),
        ("TpuV5E8", "hcd trains with PyTorch on CUDA GPUs"),
        ("nvidiateslat4", "Kaggle spells it NvidiaTeslaT4 (case matters)"),
        ("GPU", "is not a Kaggle machine shape; use one of NvidiaTeslaT4, NvidiaL4"),
    ],
)
def test_machine_shapes_that_do_not_exist_today_are_refused_with_the_reason(kaggle_env, project, shape, why):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--machine-shape", shape, *NO_HUB)
    assert r.exit_code != 0
    (line,) = r.stderr.strip().splitlines()
    assert f"--machine-shape {shape}" in line.replace("'", "") and why in line
    assert kaggle_env.server.calls("SaveKernel") == [] and not (project / "kernels" / "hcd-train").exists()


def test_machine_shape_help_lists_the_shapes(kaggle_env):
    r = kaggle_env.invoke("kernel", "push", "--help")
    text = " ".join(r.stdout.split())
    for shape in ("NvidiaTeslaT4", "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000", "--allow-other-gpus"):
        assert shape in text


def test_a_rerun_knows_a_version_saved_without_its_sources(kaggle_env, project, poll_clock):
    """A version Kaggle saved (and started) without some sources is recorded; a rerun neither picks it up nor pushes
    a second session while it is live, and pushes again once it has ended."""
    from hcd_kit.errors import ConfigError
    from hcd_kit.kaggle.kernel import kernel_digest
    from hcd_kit.kaggle.run import pick_up

    server = kaggle_env.server
    server.kernel_invalid_sources = {"model": ["someone/m/pytorch/default/1"]}
    server.kernel_polls = 1000
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB)
    assert r.exit_code == 1 and "model 'someone/m/pytorch/default/1'" in r.stderr
    folder = project / "kernels" / "hcd-train"
    said: list[str] = []
    with pytest.raises(ConfigError, match="saved without model 'someone/m/pytorch/default/1'.*not pushing a second"):
        pick_up(folder, "testuser/hcd-train", kernel_digest(folder), None, said.append)
    server.kernel_polls = 0  # it has ended: even COMPLETE, it ran without its inputs, so it is not picked up
    assert pick_up(folder, "testuser/hcd-train", kernel_digest(folder), None, said.append) is None
    assert "lacked some sources and ended COMPLETE: pushing again" in said[-1]
