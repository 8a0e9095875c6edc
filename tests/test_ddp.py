"""Multi-process training on the CPU: torchrun DDP (gloo) against one process, and fold-parallel workers.

DDP uses a model without BatchNorm (``test_efficientnet_ln``, no dropout) in fp32, so two ranks with batch
b must reproduce one process with batch 2b: same gradients, hence the same weights and OOF predictions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train import fast_config, make_synthetic

from hcd_kit.errors import TrainingError
from hcd_kit.training import train

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), n=128, n_folds=2, seed=1)


def test_ddp_two_gloo_ranks_match_one_process(synth, tmp_path):
    cfg_file = tmp_path / "ddp.toml"
    cfg_file.write_text('precision = "fp32"\ndrop_rate = 0.0\nlr = 0.003\n')
    cmd = [
        # an explicit 127.0.0.1 and free port: --standalone resolves "localhost", which sandboxes may lack
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "hcd_kit",
        "train",
        "--data-dir",
        str(synth),
        "--fold",
        "0",
        "--run-dir",
        str(tmp_path / "ddp"),
        "--model",
        "test_efficientnet_ln",
        "--no-pretrained",
        "--device",
        "cpu",
        "--img-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--strategy",
        "ddp",
        "--threads",
        "1",
        "--config",
        str(cfg_file),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "x2 ranks (ddp)" in proc.stdout and proc.stdout.count("fold 0 epoch 2/2") == 1  # rank 0 logs

    one = fast_config(model="test_efficientnet_ln", batch_size=32, epochs=2, lr=0.003)  # 1 process x 2b
    train(one, synth, tmp_path / "one", folds=[0])

    a = torch.load(tmp_path / "one/fold0/best.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp/fold0/best.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4
    oa, ob = pd.read_csv(tmp_path / "one/fold0/oof.csv"), pd.read_csv(tmp_path / "ddp/fold0/oof.csv")
    assert (oa["id"] == ob["id"]).all() and (oa["prob"] - ob["prob"]).abs().max() < 1e-4
    ha, hb = pd.read_csv(tmp_path / "one/fold0/history.csv"), pd.read_csv(tmp_path / "ddp/fold0/history.csv")
    assert (ha["train_loss"] - hb["train_loss"]).abs().max() < 1e-4  # loss averaged over both ranks


def test_fold_parallel_spreads_folds_over_worker_processes(synth, tmp_path):
    results = train(fast_config(strategy="fold-parallel", epochs=1, fold_workers=2), synth, tmp_path / "run")
    assert sorted(results) == [0, 1]
    oof = pd.concat(pd.read_csv(tmp_path / f"run/fold{k}/oof.csv") for k in (0, 1))
    assert len(oof) == 128 and oof["id"].is_unique
    for k in (0, 1):
        assert f"fold {k} epoch 1/1" in (tmp_path / f"run/fold{k}/worker.log").read_text()
    log = (tmp_path / "run/train.log").read_text()
    assert "fold-parallel: folds [0, 1] over 2 worker(s)" in log and "CV AUC" in log
    config = (tmp_path / "run/config.toml").read_text()  # the run's settings, not a worker's
    assert 'strategy = "fold-parallel"' in config and 'device = "cpu"' in config and "threads = 1" in config


def test_a_failing_fold_worker_is_reported_with_its_log(tmp_path):
    # Fold 1 holds 48 of 64 images, so its 16 training images make no batch of 32: its worker fails.
    data = make_synthetic(tmp_path / "data", n=64, n_folds=2, seed=2)
    folds = pd.read_csv(data / "folds.csv", dtype={"id": str})
    folds.assign(fold=(folds.index >= 16).astype(int)).to_csv(data / "folds.csv", index=False)
    run = tmp_path / "run"
    cfg = fast_config(strategy="fold-parallel", epochs=1, fold_workers=2)
    with pytest.raises(TrainingError, match=r"fold 1 failed in its worker \(exit 1\); see .*fold1/worker.log"):
        train(cfg, data, run)
    assert "fold 1: 16 training images make no full batch of 32" in (run / "fold1/worker.log").read_text()
    assert (run / "fold0/oof.csv").is_file() and "fold 0 epoch 1/1" in (run / "fold0/worker.log").read_text()
