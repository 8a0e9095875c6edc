"""The two diagnostic plots of ``hcd cv``: ``learning_curves.png`` and ``oof_roc.png``.

``write_plots`` draws ``learning_curves.png`` (per fold: train/val loss and val AUC per epoch, from
``history.csv``, its best epoch starred) and ``oof_roc.png`` (the pooled ROC curve and each fold's) into the run
folder, from the numbers of ``hcd_kit.runs.cv``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from hcd_kit.fsutil import atomic_path
from hcd_kit.runs.cv import CvReport, best_epoch_row, read_histories

# ---------------------------------------------------------------------------------------------- plots


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


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
