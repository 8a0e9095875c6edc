"""--swa-epochs N: a fold validates and saves the mean of the weights of its last N epochs, and a run stopped
inside that window resumes to exactly the history of an uninterrupted one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_train import fast_config, make_synthetic
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError
from hcd_kit.training import Hooks, train

RESULTS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "skipped_steps"]  # all but the measured speed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("swa"), n=192, n_folds=2)


def history(run) -> pd.DataFrame:
    return pd.read_csv(run / "fold0" / "history.csv")[RESULTS]


def test_a_run_stopped_inside_the_averaging_window_resumes_to_the_same_history(data, tmp_path):
    cfg = fast_config(epochs=4, swa_epochs=2, model="test_resnet")  # epochs 3 and 4 are averaged
    steps = []
    train(cfg, data, tmp_path / "full", folds=[0], hooks=Hooks(loss=lambda step, loss: steps.append(step) or loss))
    per_epoch = len(steps) // 4

    def stop(step, loss):
        if step == 3 * per_epoch + 1:  # mid-way through epoch 4, after epoch 3 went into the mean
            raise KeyboardInterrupt
        return loss

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, cut, folds=[0], hooks=Hooks(loss=stop))
    ckpt = torch.load(cut / "fold0" / "last.pt", weights_only=True)
    assert ckpt["swa"]["count"] == 1  # epoch 3 alone so far: its weights, exactly
    assert all(torch.equal(ckpt["swa"]["model"][k], v) for k, v in ckpt["model"].items())
    with pytest.raises(ConfigError, match="has swa_epochs = 2 but this run asks for 0"):  # settings kept
        train(fast_config(epochs=4, model="test_resnet"), data, cut, folds=[0], resume=True)
    train(cfg, data, cut, folds=[0], resume=True)
    pd.testing.assert_frame_equal(history(cut), history(tmp_path / "full"), check_exact=True)


def test_the_mean_is_what_the_last_epochs_validate(data, tmp_path):
    """Same seed, same steps: the epochs before the window validate the same model with or without SWA; inside
    the window, from its second epoch on, the average scores differently from the last weights."""
    plain, swa = tmp_path / "plain", tmp_path / "swa"
    train(fast_config(epochs=3, model="test_resnet"), data, plain, folds=[0])
    train(fast_config(epochs=3, swa_epochs=2, model="test_resnet"), data, swa, folds=[0])
    a, b = history(plain), history(swa)
    pd.testing.assert_frame_equal(a.iloc[:2], b.iloc[:2], check_exact=True)  # epoch 2 is the mean of itself
    assert a["train_loss"].iloc[2] == b["train_loss"].iloc[2]  # the training itself is untouched
    assert a["val_loss"].iloc[2] != b["val_loss"].iloc[2]  # epoch 3 validates the mean of epochs 2 and 3


def test_the_flag_is_recorded_and_refused_beside_ema(data, tmp_path):
    args = ["train", "--data-dir", data, "--fold", "0", "--epochs", "2", "--model", "test_resnet", "--no-pretrained"]
    args += ["--img-size", "32", "--batch-size", "32", "--threads", "1", "--device", "cpu"]
    res = CliRunner().invoke(app, [*map(str, args), "--run-dir", str(tmp_path / "run"), "--swa-epochs", "1"])
    assert res.exit_code == 0, res.output
    assert read_toml(tmp_path / "run" / "config.toml")["swa_epochs"] == 1
    res = CliRunner().invoke(app, [*map(str, args), "--run-dir", str(tmp_path / "both"), "--swa-epochs", "2", "--ema"])
    assert res.exit_code == 2 and "--ema and --swa-epochs both average the weights" in res.stderr
