"""``hcd train --tracker``: each tracker's files read back with the tracker's own reader, a missing package as
one line before anything is written, a failing tracker that does not stop training, and rank 0 only.

The tiny run: resnet10t at 48 px, fold 0 of 2 (32 training patches), batch 4 -> 8 steps per epoch, 2 epochs, so
the per-step curve has the points of steps 0 and 10 (``STEP_EVERY``) and each epoch metric 2 points.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import dev_extra, packed_subset
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.runs import cv_report
from hcd_kit.training.trackers import EPOCH_KEYS, STEP_EVERY, Tracking, tracking

runner = CliRunner()
EPOCHS, STEPS = 2, 8
TINY = [
    "--model",
    "resnet10t",
    "--no-pretrained",
    "--img-size",
    "48",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--fold",
    "0",
]
STEP_POINTS = [s for s in range(EPOCHS * STEPS) if s % STEP_EVERY == 0]


@pytest.fixture(scope="module")
def data(sample_root, tmp_path_factory) -> Path:

    root = packed_subset(sample_root, tmp_path_factory.mktemp("trackers") / "data", n_train=64, n_test=4)
    return root


def _train(data: Path, run: Path, tracker: str):
    res = runner.invoke(app, ["train", "--data-dir", str(data), "--run-dir", str(run), *TINY, "--tracker", tracker])
    assert res.exit_code == 0, res.output
    history = pd.read_csv(run / "fold0" / "history.csv")
    assert len(history) == EPOCHS
    return res, history


def test_tensorboard_writes_events_that_tensorboards_reader_loads(data, tmp_path):
    dev_extra("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb-run"
    _, history = _train(data, run, "tensorboard")
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"fold0/{k}" for k in (*EPOCH_KEYS, "step_loss", "lr")} | {"final/fold0_best_auc", "final/cv_auc"} <= tags
    for key in ("train_loss", "val_loss", "val_auc"):
        points = events.Scalars(f"fold0/{key}")
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx(history[key].tolist(), rel=1e-6)
    assert [p.step for p in events.Scalars("fold0/step_loss")] == STEP_POINTS
    assert events.Scalars("final/cv_auc")[0].value == pytest.approx(cv_report(run).overall_auc, rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file, parsed with wandb's own protobuf: a 7-byte header, then LevelDB-style
    32 KiB blocks of chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding up to the next block
            pos += left
            continue
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def test_wandb_offline_writes_a_run_with_the_logged_history(data, tmp_path, monkeypatch):
    dev_extra("wandb")
    import json

    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    secret = "hcd-test-wandb-key-00000000000000000000"  # offline: never sent, never printed, never written
    monkeypatch.setenv("WANDB_API_KEY", secret)
    run = tmp_path / "wb-run"
    res, history = _train(data, run, "wandb")
    folders = list((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and f"wandb: offline run wb-run in {folders[0]}" in " ".join(res.stderr.split())
    records = list(_wandb_records(next(folders[0].glob("*.wandb"))))
    kinds = [r.WhichOneof("record_type") for r in records]
    started = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert started.display_name == "wb-run" and started.project == "hcd"
    rows = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    epochs = [r for r in rows if "fold0/epoch" in r]
    assert [r["fold0/epoch"] for r in epochs] == [1, 2]
    assert [r["fold0/val_auc"] for r in epochs] == pytest.approx(history["val_auc"].tolist())
    assert [r["fold0/step"] for r in rows if "fold0/step_loss" in r] == STEP_POINTS
    summary = {
        i.key or "/".join(i.nested_key): json.loads(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for i in r.summary.update
    }
    assert summary["final/cv_auc"] == pytest.approx(cv_report(run).overall_auc)
    assert "exit" in kinds and next(r.exit for r in records if r.WhichOneof("record_type") == "exit").exit_code == 0
    assert secret not in res.output
    for path in (run / "wandb").rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_mlflow_file_store_reads_back_params_and_metric_history(data, tmp_path, monkeypatch):
    dev_extra("mlflow")
    from mlflow.tracking import MlflowClient

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what hcd sets for its own store; restored after the test
    run = tmp_path / "ml-run"
    _, history = _train(data, run, "mlflow")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("hcd")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "ml-run" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["model"] == "resnet10t" and params["epochs"] == str(EPOCHS) and params["augment.dihedral"] == "True"
    auc = client.get_metric_history(found.info.run_id, "fold0/val_auc")
    assert [m.step for m in auc] == [1, 2] and [m.value for m in auc] == pytest.approx(history["val_auc"].tolist())
    assert [m.step for m in client.get_metric_history(found.info.run_id, "fold0/step_loss")] == STEP_POINTS
    assert found.data.metrics["final/cv_auc"] == pytest.approx(cv_report(run).overall_auc)


def test_a_missing_package_is_one_line_naming_the_extra_before_anything_is_written(data, tmp_path):
    """Each package made unimportable (a None entry in sys.modules) in a fresh process running `hcd train`."""
    code = (
        "import sys\n"
        "from hcd_kit.cli import main\n"
        "for kind, module in [('tensorboard', 'tensorboard'), ('wandb', 'wandb'), ('mlflow', 'mlflow')]:\n"
        "    sys.modules[module] = None\n"
        "    try:\n"
        "        main(sys.argv[2:] + ['--run-dir', sys.argv[1] + '-' + kind, '--tracker', kind])\n"
        "    except SystemExit as exc:\n"
        "        print(kind, exc.code)\n"
    )
    args = ["train", "--data-dir", str(data), *TINY]
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert res.stdout.split() == ["tensorboard", "2", "wandb", "2", "mlflow", "2"], res.stderr
    assert res.stderr.splitlines() == [
        f'error: --tracker {kind} needs the {kind} package, which is not installed: pip install "hcd-kit[{kind}]"'
        for kind in ("tensorboard", "wandb", "mlflow")
    ]
    assert list(tmp_path.iterdir()) == []  # no run folder: the check comes before config.toml and plan.json


class _Flaky:
    """A tracker whose log_epoch fails: training must go on, with one warning."""

    def __init__(self) -> None:
        self.calls = []

    def start(self, name, config):
        self.calls.append("start")

    def log_step(self, fold, step, loss, lr):
        self.calls.append(("step", step))

    def log_epoch(self, fold, epoch, metrics):
        raise OSError("disk full")

    def finish(self, final, failed=False):
        self.calls.append(("finish", failed))


def test_a_failing_tracker_warns_once_and_training_goes_on(capsys):
    flaky = _Flaky()
    track = Tracking("tensorboard", flaky)
    track.start("r", {})
    for step in range(25):
        track.step(0, step, 0.5, 1e-3)
    track.step(0, 30, None, 1e-3)  # a skipped step (non-finite loss) is not logged
    track.epoch(0, {"epoch": 1, "train_loss": 0.5, "val_auc": math.nan})
    track.epoch(0, {"epoch": 2, "train_loss": 0.4})
    track.finish()
    assert flaky.calls == ["start", ("step", 0), ("step", 10), ("step", 20), ("finish", True)]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "--tracker tensorboard failed in log_epoch (disk full)" in err
    assert "training goes on without it" in err


def test_set_up_failure_is_a_warning_too_and_the_run_trains(data, tmp_path, monkeypatch):
    dev_extra("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    run = tmp_path / "bad-uri"
    res, _ = _train(data, run, "mlflow")
    assert "warning: --tracker mlflow failed in set-up" in " ".join(res.stderr.split())
    assert (run / "fold0" / "oof.csv").is_file()


def test_only_rank_0_tracks(tmp_path):
    dev_extra("tensorboard")
    from hcd_kit.training import TrainConfig

    cfg = TrainConfig(tracker="tensorboard")
    with tracking(cfg, tmp_path, is_main=False) as track:
        assert track.tracker is None
        track.epoch(0, {"epoch": 1, "val_auc": 0.5})
    assert not (tmp_path / "tb").exists()
    with tracking(cfg, tmp_path, is_main=True) as track:
        assert track.tracker is not None
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_the_tracker_may_change_between_sessions_of_a_run(tmp_path):
    import dataclasses

    from hcd_kit.config import dump_toml
    from hcd_kit.layout import RunLayout
    from hcd_kit.training import TrainConfig
    from hcd_kit.training.runs import check_run_dir

    layout = RunLayout.of(tmp_path)
    cfg = TrainConfig(model="resnet10t")
    dump_toml(cfg, layout.config)
    layout.fold_dir(0).mkdir()
    check_run_dir(dataclasses.replace(cfg, tracker="mlflow"), layout, [1], resume=False)  # a runtime key: no error
    res = runner.invoke(app, ["train", "--tracker", "comet"])
    assert res.exit_code == 2 and "--tracker" in res.output
