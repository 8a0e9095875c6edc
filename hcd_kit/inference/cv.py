"""Cross-validation report of a training run: per-fold and pooled out-of-fold AUC, and two diagnostic plots.

``cv_report(run_dir)`` reads every ``RUN/fold*/oof.csv`` (id,fold,prob,label, written by ``hcd train`` from
each fold's best weights) and returns the numbers: per-fold n / positives / AUC, the mean and std of the
fold AUCs, and the **overall OOF AUC** pooled over all folds, the best estimate of the leaderboard score
from training data alone (fold AUCs hide calibration differences between folds; the pooled AUC does not).
It also says what looks wrong: a fold without predictions, ids predicted by two folds. ``write_plots``
draws ``learning_curves.png`` (per fold: train/val loss and val AUC per epoch, from ``history.csv``, its best
epoch starred) and ``oof_roc.png`` (the pooled ROC curve and each fold's) into the run folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_path
from hcd_kit.inference.oof import read_oof
from hcd_kit.inference.runs import expected_folds
from hcd_kit.layout import OOF_COLUMNS, RunLayout
from hcd_kit.metrics import roc_auc

PLOTTED = ("epoch", "train_loss", "val_loss", "val_auc")  # the history.csv columns the curves need


@dataclass
class FoldScore:
    fold: int
    n: int
    positives: int
    auc: float  # NaN when the fold holds one class only


@dataclass
class CvReport:
    run_dir: Path
    folds: list[FoldScore]
    overall_auc: float  # pooled over every fold's out-of-fold predictions
    mean_auc: float  # mean of the defined fold AUCs
    std_auc: float  # their (population) standard deviation
    n: int
    positives: int
    warnings: list[str] = field(default_factory=list)
    oof: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(OOF_COLUMNS)), repr=False)


def read_histories(run_dir: str | os.PathLike[str]) -> dict[int, pd.DataFrame]:
    """Each fold's ``history.csv`` that exists and has the columns a learning curve needs."""
    run = RunLayout.of(run_dir)
    out = {}
    for k in run.folds_present():
        path = run.history(k)
        if path.is_file():
            try:
                df = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                continue  # a curve is a diagnostic: an unreadable history only loses its own line
            if all(c in df.columns for c in PLOTTED) and len(df):
                out[k] = df
    return out


def _expected_folds(run: RunLayout, present: list[int]) -> list[int]:
    """Folds the run should have (``expected_folds``), else 0..the highest present."""
    planned = expected_folds(run.root)
    return planned if planned is not None else list(range(max(present) + 1))


def _unfinished(run: RunLayout, folds: list[int]) -> list[int]:
    """Folds whose progress (``state.json``, else ``last.pt``) says training stopped before its last epoch
    (interrupted, not early-stopped)."""
    import json

    import torch

    out = []
    for k in folds:
        if run.last(k).is_file():
            try:
                state = json.loads(run.state(k).read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a fold written before state.json, or a damaged one: last.pt has it too
                try:
                    state = torch.load(run.last(k), map_location="cpu", weights_only=True, mmap=True)["state"]
                except Exception:  # a damaged checkpoint is train's business (it says so on --resume)
                    continue
            if not state.get("finished", True):
                out.append(k)
    return out


def _fold_score(fold: int, df: pd.DataFrame) -> FoldScore:
    return FoldScore(fold, len(df), int(df["label"].sum()), roc_auc(df["label"], df["prob"]))


def cv_report(run_dir: str | os.PathLike[str]) -> CvReport:
    """The out-of-fold numbers of ``run_dir`` (see the module docstring); DataError if there are none."""
    run = RunLayout.of(run_dir)
    if not run.root.is_dir():
        raise DataError(f"run folder {run.root} not found; pass the --run-dir of a `hcd train` run")
    present = [k for k in run.folds_present() if run.oof(k).is_file()]
    if not present:
        raise DataError(f"no out-of-fold predictions in {run.root}; run `hcd train --run-dir {run.root}` first")
    warnings = []
    missing = [k for k in _expected_folds(run, present) if k not in present]
    if missing:
        warnings.append(
            f"fold(s) {', '.join(map(str, missing))} have no oof.csv: the overall AUC covers "
            f"{len(present)} fold(s) only; finish training them (`hcd train --resume`)"
        )
    unfinished = _unfinished(run, present)
    if unfinished:
        warnings.append(
            f"fold(s) {', '.join(map(str, unfinished))} stopped before their last epoch: their AUC is from the best "
            "epoch so far; finish them with `hcd train --resume`"
        )
    frames = []
    for k in present:
        df = read_oof(run.oof(k))
        if len(df) and (df["fold"] != k).any():
            warnings.append(f"{run.oof(k)} has rows whose fold column is not {k}; counted as fold {k}")
        frames.append(df.assign(fold=k))
    oof = pd.concat(frames, ignore_index=True)
    dup = int(oof["id"].duplicated().sum())
    if dup:
        warnings.append(f"{dup} id(s) appear in more than one fold's oof.csv: folds overlap, so the CV is leaky")
    folds = [_fold_score(k, oof[oof["fold"] == k]) for k in present]
    aucs = np.array([f.auc for f in folds if not math.isnan(f.auc)])
    for f in folds:
        if math.isnan(f.auc):
            warnings.append(f"fold {f.fold} has a single class in its {f.n} predictions: its AUC is undefined")
    return CvReport(
        run_dir=run.root,
        folds=folds,
        overall_auc=roc_auc(oof["label"], oof["prob"]),
        mean_auc=float(aucs.mean()) if aucs.size else math.nan,
        std_auc=float(aucs.std()) if aucs.size else math.nan,
        n=len(oof),
        positives=int(oof["label"].sum()),
        warnings=warnings,
        oof=oof,
    )


# ---------------------------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def best_epoch_row(history: pd.DataFrame) -> int | None:
    """Position of the fold's epoch whose weights became ``best.pt``: training keeps the first epoch with the
    highest val AUC (validation loss, negated, where the AUC is undefined); None for an empty history."""
    if history.empty:
        return None
    auc = pd.to_numeric(history["val_auc"], errors="coerce").to_numpy(float)
    score = np.where(np.isfinite(auc), auc, -pd.to_numeric(history["val_loss"], errors="coerce").to_numpy(float))
    if not np.isfinite(score).any():
        return None
    return int(np.argmax(np.where(np.isfinite(score), score, -np.inf)))


def learning_curves_figure(histories: dict[int, pd.DataFrame]):
    """Loss (train solid, val dashed) and val AUC per epoch, one colour per fold, each fold's best epoch (max
    val AUC: the one best.pt holds) starred on both panels; whole-number epoch ticks (a matplotlib Figure)."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state: safe headless and in threads
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4))
    ax_loss, ax_auc = fig.subplots(1, 2)
    star = dict(marker="*", markersize=12, markeredgecolor="black", markeredgewidth=0.6, linestyle="none", zorder=3)
    for i, (k, h) in enumerate(sorted(histories.items())):
        color = f"C{i % 10}"
        ax_loss.plot(h["epoch"], h["train_loss"], color=color, label=f"fold {k} train")
        ax_loss.plot(h["epoch"], h["val_loss"], color=color, linestyle="--", label=f"fold {k} val")
        ax_auc.plot(h["epoch"], h["val_auc"], color=color, marker="o", markersize=3, label=f"fold {k}")
        row = best_epoch_row(h)
        if row is None:
            continue
        best = h.iloc[row]
        for ax, column in ((ax_loss, "val_loss"), (ax_auc, "val_auc")):
            ax.plot([best["epoch"]], [best[column]], color=color, gid=f"best fold {k}", label="_best", **star)
    ax_loss.set(title="loss", xlabel="epoch", ylabel="BCE loss")
    ax_auc.set(title="validation AUC", xlabel="epoch", ylabel="ROC AUC")
    for ax in (ax_loss, ax_auc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers: no 1.25, 1.5 ticks
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="grey", **star))  # one legend entry for every fold's star
        ax.legend(handles, [*labels, "best"], fontsize=7)
    return fig


def plot_learning_curves(histories: dict[int, pd.DataFrame], path: str | os.PathLike[str]) -> Path:
    """``learning_curves_figure`` as a PNG at ``path``."""
    return _save(learning_curves_figure(histories), Path(path))


def plot_oof_roc(report: CvReport, path: str | os.PathLike[str]) -> Path:
    """The pooled out-of-fold ROC curve (AUC in the legend) over each fold's, as a PNG at ``path``."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    oof = report.oof
    for score in report.folds:
        part = oof[oof["fold"] == score.fold]
        if not math.isnan(score.auc):
            fpr, tpr, _ = roc_curve(part["label"], part["prob"])
            ax.plot(fpr, tpr, linewidth=1, alpha=0.6, label=f"fold {score.fold} (AUC {score.auc:.4f})")
    if not math.isnan(report.overall_auc):
        fpr, tpr, _ = roc_curve(oof["label"], oof["prob"])
        ax.plot(fpr, tpr, color="black", linewidth=2.2, label=f"pooled OOF (AUC {report.overall_auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(title="out-of-fold ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def write_plots(report: CvReport) -> list[Path]:
    """``oof_roc.png`` and, when some fold has a history, ``learning_curves.png`` in the run folder."""
    written = [plot_oof_roc(report, report.run_dir / "oof_roc.png")]
    histories = read_histories(report.run_dir)
    if histories:
        written.insert(0, plot_learning_curves(histories, report.run_dir / "learning_curves.png"))
    return written
