"""`hcd cv`: per-fold and pooled out-of-fold AUC of a run folder, warnings, and the two PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.runs import cv_report

runner = CliRunner()


def write_fold(
    run: Path, fold: int, n: int, rng: np.random.Generator, shift: float = 0.0, epochs: int = 3
) -> pd.DataFrame:
    """A fold's oof.csv with informative but noisy probabilities (``shift`` miscalibrates the fold)."""
    labels = rng.integers(0, 2, n)
    logits = 1.5 * labels + rng.normal(0, 1, n) + shift
    ids = [f"f{fold}_{i:04d}" for i in range(n)]
    df = pd.DataFrame({"id": ids, "fold": fold, "prob": 1 / (1 + np.exp(-logits)), "label": labels})
    (run / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    df.to_csv(run / f"fold{fold}" / "oof.csv", index=False)
    e = np.arange(epochs)
    pd.DataFrame(
        {
            "epoch": e,
            "lr": 1e-3,
            "train_loss": 0.6 - 0.1 * e,
            "val_loss": 0.65 - 0.08 * e,
            "val_auc": 0.8 + 0.03 * e,
            "images_per_s": 100.0,
            "skipped_steps": 0,
        }
    ).to_csv(run / f"fold{fold}" / "history.csv", index=False)
    return df


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    # different calibration per fold: the pooled AUC then differs from every fold's and from their mean
    frames = [write_fold(run, k, 150 + 25 * k, rng, shift=s) for k, s in enumerate((-1.0, 0.0, 1.5))]
    return run, pd.concat(frames)


def assert_png(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
        im.verify()


def test_cv_prints_pooled_and_per_fold_auc_and_writes_plots(run_dir) -> None:
    run, oof = run_dir
    result = runner.invoke(app, ["cv", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    pooled = roc_auc_score(oof["label"], oof["prob"])
    per_fold = [roc_auc_score(g["label"], g["prob"]) for _, g in oof.groupby("fold")]
    assert abs(pooled - np.mean(per_fold)) > 1e-3  # the data tells pooling from averaging apart
    assert f"overall OOF AUC: {pooled:.4f}" in result.stdout
    assert f"mean {np.mean(per_fold):.4f} ± {np.std(per_fold):.4f}" in result.stdout
    for auc in per_fold:
        assert f"{auc:.4f}" in result.stdout
    assert "warning" not in result.output
    assert_png(run / "learning_curves.png")
    assert_png(run / "oof_roc.png")
    assert not list(run.glob(".tmp-*"))  # written atomically, nothing left behind


def test_cv_report_numbers(run_dir) -> None:
    run, oof = run_dir
    report = cv_report(run)
    assert [f.fold for f in report.folds] == [0, 1, 2]
    assert [f.n for f in report.folds] == [150, 175, 200]
    assert [f.positives for f in report.folds] == [int(g["label"].sum()) for _, g in oof.groupby("fold")]
    assert report.n == len(oof) and report.positives == int(oof["label"].sum())
    assert report.overall_auc == pytest.approx(roc_auc_score(oof["label"], oof["prob"]), abs=1e-12)
    assert report.warnings == []


def test_missing_fold_and_repeated_ids_are_warned(run_dir) -> None:
    run, _ = run_dir
    (run / "plan.json").write_text('{"folds": [0, 1, 2, 3, 4]}\n')  # as `hcd train` records what it was asked for
    dup = pd.read_csv(run / "fold0" / "oof.csv").head(7).assign(fold=1)
    fold1 = pd.read_csv(run / "fold1" / "oof.csv")
    pd.concat([fold1, dup]).to_csv(run / "fold1" / "oof.csv", index=False)
    result = runner.invoke(app, ["cv", "--run-dir", str(run), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "fold(s) 3, 4 have no oof.csv" in result.stderr
    assert "7 id(s) appear in more than one fold" in result.stderr
    assert not (run / "oof_roc.png").exists()


def test_gap_in_fold_numbers_is_warned_without_config(tmp_path) -> None:
    rng = np.random.default_rng(1)
    write_fold(tmp_path, 0, 80, rng)
    write_fold(tmp_path, 2, 80, rng)
    (tmp_path / "fold1").mkdir()  # started, never finished
    report = cv_report(tmp_path)
    assert [f.fold for f in report.folds] == [0, 2]
    assert any("fold(s) 1 have no oof.csv" in w for w in report.warnings)


def test_run_without_oof_fails_with_one_line(tmp_path) -> None:
    (tmp_path / "fold0").mkdir()
    result = runner.invoke(app, ["cv", "--run-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "no out-of-fold predictions in" in result.stderr and "hcd train" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["cv", "--run-dir", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "not found" in result.stderr


def test_malformed_oof_names_the_file(tmp_path) -> None:
    (tmp_path / "fold0").mkdir()
    (tmp_path / "fold0" / "oof.csv").write_text("id,prob\na,0.5\n")
    result = runner.invoke(app, ["cv", "--run-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "oof.csv is damaged (lacks column(s) fold, label)" in result.stderr


def test_single_class_fold_is_shown_as_undefined(tmp_path) -> None:
    rng = np.random.default_rng(2)
    write_fold(tmp_path, 0, 60, rng)
    df = pd.DataFrame({"id": ["x1", "x2", "x3"], "fold": 1, "prob": [0.2, 0.4, 0.9], "label": 1})
    (tmp_path / "fold1").mkdir()
    df.to_csv(tmp_path / "fold1" / "oof.csv", index=False)
    result = runner.invoke(app, ["cv", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "n/a" in result.stdout and "single class" in result.stderr
    assert_png(tmp_path / "oof_roc.png")


def test_learning_curves_have_integer_epoch_ticks_and_mark_each_folds_best_epoch(tmp_path) -> None:
    """The PNG `hcd cv` writes is the report's figure: whole-number epoch ticks on every panel, each fold's best
    epoch (highest val AUC, NaN skipped) starred at its AUC and named in the one legend, outside the panels."""
    from hcd_kit.report.figures import learning_curves_figure

    def history(aucs):
        e = np.arange(1, len(aucs) + 1)
        return pd.DataFrame(
            {"epoch": e, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.6 + 0.01 * e, "val_auc": aucs, "lr": 1e-3 / e}
        )

    histories = {0: history([0.80, 0.91, 0.88]), 1: history([0.85, 0.86, 0.87]), 2: history([0.90, 0.89, np.nan])}
    fig = learning_curves_figure(histories)
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    (auc,) = [ax for ax in fig.axes if "AUC" in ax.get_title()]
    stars = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in auc.get_lines() if line.get_marker() == "*")
    assert stars == [(1, 0.90), (2, 0.91), (3, 0.87)]  # fold 2 at epoch 1, fold 0 at 2, fold 1 at 3
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert {"fold 0 (best: epoch 2)", "fold 1 (best: epoch 3)", "fold 2 (best: epoch 1)"} <= set(texts)
