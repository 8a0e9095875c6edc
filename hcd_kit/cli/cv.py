"""Commands: cv (registered on the hcd app)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from hcd_kit.cli._app import command


def _auc(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.4f}"


@command()
def cv(
    run_dir: Annotated[Path, typer.Option("--run-dir", metavar="DIR", help="Run folder written by `hcd train`.")],
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", metavar="", help="Write learning_curves.png and oof_roc.png into RUN.")
    ] = True,
) -> None:
    """Cross-validation report: per-fold and pooled out-of-fold (OOF) ROC AUC of a training run.

    Reads RUN/fold*/oof.csv (each fold's validation predictions from its best weights) and prints n,
    positives and AUC per fold, the mean ± std of the fold AUCs, and the overall OOF AUC pooled over all
    folds: the best estimate of the leaderboard score you have before submitting. Warns when a fold is
    missing or ids repeat across folds. Writes RUN/learning_curves.png (loss and val AUC per epoch, from
    RUN/fold*/history.csv) and RUN/oof_roc.png (ROC curves), and says where the run's HTML report is
    (`hcd report` writes it: all of this and more on one page).

    Example: hcd cv --run-dir runs/resnet18
    """
    from rich.table import Table

    from hcd_kit.console import console, err_console
    from hcd_kit.report import write_plots
    from hcd_kit.runs import cv_report

    report = cv_report(run_dir)
    for line in report.warnings:
        err_console.print(f"[yellow]warning:[/] {line}", soft_wrap=True)
    console.print(f"run: {run_dir}", soft_wrap=True)  # a path in the title would be folded to the table's width
    table = Table(title="out-of-fold AUC")
    table.add_column("fold", justify="right")
    table.add_column("n", justify="right")
    table.add_column("positives", justify="right")
    table.add_column("AUC", justify="right")
    for f in report.folds:
        table.add_row(str(f.fold), f"{f.n:,}", f"{f.positives:,}", _auc(f.auc))
    table.add_section()
    table.add_row("all", f"{report.n:,}", f"{report.positives:,}", _auc(report.overall_auc), style="bold")
    console.print(table)
    console.print(
        f"overall OOF AUC: [bold]{_auc(report.overall_auc)}[/] (pooled over {len(report.folds)} fold(s)); "
        f"fold AUC mean {_auc(report.mean_auc)} ± {_auc(report.std_auc)}",
        soft_wrap=True,
    )
    if plots:
        for path in write_plots(report):
            console.print(f"wrote {path}", soft_wrap=True)
    page = run_dir / "report.html"
    state = "" if page.is_file() else "not written yet: "
    console.print(f"report: {state}{page} (hcd report --run-dir {run_dir})", soft_wrap=True, highlight=False)
