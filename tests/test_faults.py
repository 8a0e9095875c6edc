"""Faults on disk and in flight: a full disk, a second writer, SIGTERM / SIGHUP, kill -9.

Each case asserts what a user sees (one line, the exit code), that nothing half-written is left, and that the
rerun (``--resume`` for training) ends where an uninterrupted run ends. A full disk is injected through hcd's
one writer (``HCD_FAULT_ENOSPC``, ``HCD_FAULT_FREE_BYTES``: see ``hcd_kit.fsutil``), and for real through a file
size limit (``RLIMIT_FSIZE``), which makes torch's own zip writer fail as it does on a full disk; no root needed.
Damaged files (truncated, garbage) are ``test_damaged_files.py``'s.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import hold_in_another_process, interruptible, signal_and_wait
from test_train import make_synthetic
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.locks import LOCK_NAME, hold

FAST = ["--device", "cpu", "--no-pretrained", "--img-size", "32", "--threads", "1", "--batch-size", "32"]
TINY = [*FAST, "--model", "test_resnet"]
RESULT_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "skipped_steps"]  # all but the speed


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """128 labelled synthetic patches in 2 folds, and 256 test patches."""
    root = make_synthetic(tmp_path_factory.mktemp("faults"), n=128, n_folds=2)
    rng = np.random.default_rng(1)
    n = 256
    np.save(root / "packed" / "test_images.npy", rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8))
    ids = pd.DataFrame({"id": [f"t{i:039x}" for i in range(n)]})
    ids.to_csv(root / "packed" / "test_ids.csv", index=False)
    ids.assign(label=0).to_csv(root / "sample_submission.csv", index=False)
    manifest = json.loads((root / "packed" / "manifest.json").read_text())
    manifest["splits"]["test"] = {"count": n}
    (root / "packed" / "manifest.json").write_text(json.dumps(manifest))
    return root


def hcd_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("hcd")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hcd_kit"]


def start(*args, **kw) -> subprocess.Popen:
    """``hcd ARGS`` in the background, SIGINT at its default and no terminal (as a job under a scheduler)."""
    return subprocess.Popen(
        [*hcd_cmd(), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=kw.pop("preexec_fn", interruptible),
        **kw,
    )


def run_hcd(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*hcd_cmd(), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def invoke(*args, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"hcd ended (exit {proc.returncode}) before the test could act\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"condition not reached in {timeout:g} s")
        time.sleep(0.05)


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(mask >> (sig - 1) & 1)


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "━" not in ln]  # progress bars go to stderr too
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("error: "), stderr
    return lines[-1]


def results(run: Path, fold: int = 0) -> pd.DataFrame:
    """A fold's history.csv, all but its speed column (the one value that depends on the machine's load)."""
    return pd.read_csv(run / f"fold{fold}" / "history.csv")[RESULT_COLUMNS]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run of fold 0: what every interrupted and resumed run must end with."""
    run = tmp_path_factory.mktemp("reference") / "run"
    res = invoke("train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "3", *TINY)
    assert res.exit_code == 0, res.output
    return run


# --- one writer per folder -----------------------------------------------------------------------------------


def test_a_second_train_on_one_run_folder_is_refused_naming_the_first(synth, tmp_path):
    run = tmp_path / "run"
    first = start("train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "500", *TINY)
    try:
        wait_for(lambda: (run / "fold0" / "history.csv").is_file(), first)  # it is training
        began = time.monotonic()
        second = run_hcd("train", "--data-dir", synth, "--run-dir", run, "--fold", "1", "--epochs", "2", *TINY)
        took = time.monotonic() - began
        assert second.returncode == 3, second.stderr
        line = error_line(second.stderr)
        assert f"{run} is in use by hcd train (PID {first.pid} on " in line and "another --run-dir" in line
        assert not (run / "fold1").exists()  # the second wrote nothing
        assert first.poll() is None, "the first run must be unaffected"
        print(f"refused after {took:.2f} s")  # the target is 2 s; a test cannot hold a machine's speed

        readers = run_hcd("cv", "--run-dir", run, timeout=120)  # a reader never waits for the lock
        assert "in use" not in readers.stderr
    finally:
        err = signal_and_wait(first, signal.SIGTERM)
    assert first.returncode == 143, err
    assert not (run / LOCK_NAME).exists()  # released: the next command starts without a note


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(synth, tmp_path):
    run = tmp_path / "run"
    holder = hold_in_another_process(run, "hcd train")
    holder.kill()  # kill -9: no chance to release
    holder.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid

    res = run_hcd("train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "1", *TINY)
    assert res.returncode == 0, res.stderr
    assert f"was left locked by hcd train (PID {holder.pid} on" in " ".join(res.stderr.split())
    assert "no longer running; taken over" in " ".join(res.stderr.split())
    assert not (run / LOCK_NAME).exists()


def test_locks_are_reentrant_and_a_refused_command_leaves_no_folder(tmp_path):
    folder = tmp_path / "store"
    with hold(folder, "hcd prepare"):
        with hold(folder, "hcd prepare"):  # the demo packs inside its own held work folder
            assert (folder / LOCK_NAME).is_file()
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists()  # made for the lock alone and left empty: removed again


def test_a_file_system_without_locks_runs_unguarded_after_a_note(tmp_path, monkeypatch, capsys):
    import errno

    import hcd_kit.locks as locks

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")  # what some FUSE and network mounts answer

    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with hold(tmp_path / "run", "hcd train"):
        (tmp_path / "run" / "config.toml").write_text("")
    assert "cannot lock files: nothing stops a second command" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml"]


def test_a_read_only_run_folder_still_predicts(synth, reference, tmp_path, monkeypatch):
    """A run read from a Kaggle input or a shared disk: hcd predict cannot lock it, and needs not to."""
    import errno

    real_open = os.open

    def read_only(path, flags, *args):  # the folder's file system refuses new files, as /kaggle/input does
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    out = tmp_path / "submission.csv"
    res = invoke("predict", "--run-dir", reference, "--data-dir", synth, "--out", out, "--tta", "1", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert out.is_file() and not (reference / LOCK_NAME).exists()


# --- SIGTERM and SIGHUP are Ctrl-C ----------------------------------------------------------------------------


def test_sigterm_mid_epoch_then_resume_ends_as_an_uninterrupted_run(synth, reference, tmp_path):
    run = tmp_path / "run"
    proc = start("train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "3", *TINY)
    wait_for(lambda: (run / "fold0" / "last.pt").is_file(), proc)  # epoch 1 is kept; epoch 2 is under way
    err = signal_and_wait(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in error_line(err) and "--resume" in error_line(err)
    log = " ".join((run / "train.log").read_text().split())
    assert "fold 0: interrupted;" in log and "add --resume to continue" in log
    assert leftovers(run) == [] and not (run / LOCK_NAME).exists()

    res = invoke("train", "--data-dir", synth, "--run-dir", run, "--resume")  # in-process: one start-up saved
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(results(run), results(reference), check_exact=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_a_stop_signal_mid_prediction_keeps_no_partial_submission(synth, reference, tmp_path, sig, code):
    """Signalled while the submission is half written (held there by HCD_FAULT_STALL, so the moment does not
    depend on the machine's speed): the exit code of the signal, one line, no submission and no temporary file."""
    out, ready = tmp_path / "submission.csv", tmp_path / "stalled"
    env = {**os.environ, "HCD_FAULT_STALL": "submission.csv", "HCD_FAULT_STALL_READY": str(ready)}
    args = ["predict", "--run-dir", reference, "--data-dir", synth, "--out", out, "--tta", "2", "--device", "cpu"]
    proc = start(*args, env=env)
    wait_for(ready.is_file, proc)  # every view predicted, half of submission.csv's temporary file written
    assert leftovers(tmp_path)  # the half-written temporary file is there while it waits
    ready.unlink()
    err = signal_and_wait(proc, sig)
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}" in error_line(err)
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_ignored_sighup_stays_ignored(synth, tmp_path):
    """``nohup hcd train ...`` must survive the terminal closing: hcd keeps an inherited ignore."""

    def nohup() -> None:
        interruptible()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    run = tmp_path / "run"
    proc = start(
        "train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "2", *TINY, preexec_fn=nohup
    )
    wait_for(lambda: (run / "train.log").is_file(), proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


# --- a full disk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "state.json", "history.csv", "oof.csv", "train.log"])
def test_a_full_disk_while_training_is_one_line_and_resume_finishes_the_run(synth, reference, tmp_path, name):
    run = tmp_path / "run"
    args = ["train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "3", *TINY]
    res = invoke(*args, env={"HCD_FAULT_ENOSPC": name, "HCD_FAULT_FREE_BYTES": "12000000"})  # a disk nearly full
    assert res.exit_code == 1, res.output
    line = error_line(res.stderr)
    assert line.startswith("error: disk full: could not write ") and f"{name}:" in line, line
    assert "12.0 MB is free there" in line and "run the same command again" in line
    assert leftovers(run) == []
    if (run / "fold0" / "last.pt").exists() or (run / "fold0" / "best.pt").exists():
        args.append("--resume")
    res = invoke(*args)  # the disk has room again
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(results(run), results(reference), check_exact=True)


@pytest.mark.parametrize(
    "command, name",
    [("predict", "submission.csv"), ("predict", "submission.csv.json"), ("report", "report.html")],
)
def test_a_full_disk_while_predicting_or_reporting_is_one_line_and_the_rerun_writes_it(
    synth, reference, tmp_path, command, name
):
    out = tmp_path / ("submission.csv" if command == "predict" else "report.html")
    args = [command, "--run-dir", reference, "--data-dir", synth, "--out", out, "--device", "cpu"]
    args += ["--tta", "1"] if command == "predict" else ["--n-errors", "0"]
    res = invoke(*args, env={"HCD_FAULT_ENOSPC": name, "HCD_FAULT_FREE_BYTES": "500000"})
    assert res.exit_code == 1, res.output
    line = error_line(res.stderr)
    assert f"disk full: could not write {tmp_path / name}: " in line and "500.0 KB is free there" in line, line
    assert not (tmp_path / name).exists() and leftovers(tmp_path) == []
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / name).is_file()


def test_a_full_disk_mid_line_leaves_the_ledger_as_it_was(tmp_path, monkeypatch):
    from hcd_kit.errors import DiskFullError
    from hcd_kit.fsutil import append_text

    ledger = tmp_path / "ledger.jsonl"
    append_text(ledger, '{"file": "a.csv"}\n', sync=True)
    written = []
    real_write = os.write

    def short_write(fd, data):  # the disk fills after 5 bytes of the line, as a real one does: no error, fewer bytes
        written.append(data)
        return real_write(fd, data[:5])

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(DiskFullError, match=r"disk full.*ledger.jsonl: it needs 18 bytes"):
        append_text(ledger, '{"file": "b.csv"}\n', sync=True)
    assert written and ledger.read_text() == '{"file": "a.csv"}\n'


def test_a_real_short_write_from_torch_is_one_line_and_leaves_no_partial_file(synth, tmp_path):
    """RLIMIT_FSIZE: the kernel refuses writes past 200 kB, and torch's zip writer fails on best.pt as on a full
    disk, with a bare RuntimeError ("unexpected pos") that hcd must recognise."""

    def small_files() -> None:
        interruptible()
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run = tmp_path / "run"
    proc = start(
        "train",
        "--data-dir",
        synth,
        "--run-dir",
        run,
        "--fold",
        "0",
        "--epochs",
        "1",
        *FAST,
        "--model",
        "resnet10t",
        preexec_fn=small_files,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    line = error_line(err)
    assert "could not write " in line and "best.pt" in line and "file size limit" in line, line
    assert leftovers(run) == [] and not (run / "fold0" / "best.pt").exists()


def test_the_preflight_refuses_a_run_whose_checkpoints_cannot_fit(synth, tmp_path):
    run = tmp_path / "run"
    res = invoke(
        "train", "--data-dir", synth, "--run-dir", run, "--fold", "all", "--epochs", "1", *TINY,
        env={"HCD_FAULT_FREE_BYTES": "1000000"},
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    line = error_line(res.stderr)
    assert "not enough disk space for 2 fold(s) of this run" in line and "1.0 MB free" in line, line
    assert not (run / "fold0" / "history.csv").exists()  # refused before the first step


# --- kill -9 and the rerun --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["last.pt", "history.csv"])
def test_kill_9_while_training_writes_then_resume_ends_as_an_uninterrupted_run(synth, reference, tmp_path, name):
    run = tmp_path / "run"
    args = ["train", "--data-dir", synth, "--run-dir", run, "--fold", "0", "--epochs", "3", *TINY]
    res = run_hcd(*args, env={**os.environ, "HCD_FAULT_KILL": name})  # dies half way through writing NAME
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert leftovers(run), "a killed writer leaves its half-written temporary file"
    res = invoke(*args, "--resume")  # in-process: one start-up saved
    assert res.exit_code == 0, res.output
    assert "no longer running; taken over" in " ".join(res.stderr.split())
    pd.testing.assert_frame_equal(results(run), results(reference), check_exact=True)
    assert leftovers(run) == [] and not (run / LOCK_NAME).exists()


def test_kill_9_while_predicting_then_the_rerun_writes_the_same_submission(synth, reference, tmp_path):
    args = ["predict", "--run-dir", reference, "--data-dir", synth, "--tta", "2", "--device", "cpu"]
    clean = invoke(*args, "--out", tmp_path / "clean.csv")  # the reference and the rerun run in-process
    assert clean.exit_code == 0, clean.output
    out = tmp_path / "submission.csv"
    res = run_hcd(*args, "--out", out, env={**os.environ, "HCD_FAULT_KILL": "submission.csv"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not out.exists() and leftovers(tmp_path)
    res = invoke(*args, "--out", out)
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()


# --- hcd prepare ------------------------------------------------------------------------------------------


def store_files(packed: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(packed.iterdir()) if p.name != "manifest.json"}


def test_prepare_on_a_full_disk_a_small_disk_or_a_held_store_is_one_line(subset_factory):
    data = subset_factory(n_train=64, n_test=16)
    res = invoke("prepare", "--data-dir", data, "--workers", "1", env={"HCD_FAULT_FREE_BYTES": "100000"})
    assert res.exit_code == 1, res.output
    line = error_line(res.stderr)
    assert "not enough disk space for the packed train/test store: about 2.2 MB needed" in line, line
    assert not (data / "packed").exists()

    env = {"HCD_FAULT_ENOSPC": "train_images.npy", "HCD_FAULT_FREE_BYTES": "3000000"}
    res = invoke("prepare", "--data-dir", data, "--workers", "1", env=env)
    assert res.exit_code == 1, res.output
    line = error_line(res.stderr)
    assert f"disk full: could not write {data / 'packed' / 'train_images.npy'}: it needs 1.8 MB" in line, line
    assert "3.0 MB is free there" in line
    assert not (data / "packed").exists()  # no half store, no temporary file, no empty folder

    holder = hold_in_another_process(data / "packed", "hcd prepare")
    try:
        res = invoke("prepare", "--data-dir", data, "--workers", "1")
        assert res.exit_code == 3, res.output
        assert f"is in use by hcd prepare (PID {holder.pid} on" in error_line(res.stderr)
    finally:
        holder.kill()
        holder.wait()
    res = invoke("prepare", "--data-dir", data, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert (data / "packed" / "manifest.json").is_file() and leftovers(data) == []


@pytest.mark.parametrize("name", ["train_images.npy", "test_ids.csv", "manifest.json"])
def test_kill_9_while_preparing_then_the_rerun_packs_the_same_store(subset_factory, name):
    clean, cut = subset_factory(n_train=64, n_test=16), subset_factory(n_train=64, n_test=16)
    assert run_hcd("prepare", "--data-dir", clean, "--workers", "1").returncode == 0
    res = run_hcd("prepare", "--data-dir", cut, "--workers", "1", env={**os.environ, "HCD_FAULT_KILL": name})
    assert res.returncode == -signal.SIGKILL, res.stderr
    res = run_hcd("prepare", "--data-dir", cut, "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert store_files(cut / "packed") == store_files(clean / "packed") and leftovers(cut) == []
