"""Commands: report (one self-contained HTML page per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.choices import DEVICE_HELP
from hcd_kit.cli._app import command


@command()
def report(
    run_dir: Annotated[
        Path, typer.Option("--run-dir", metavar="DIR", help="Run folder written by `hcd train` or `hcd probe`.")
    ],
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            show_default="the folder the run trained on (RUN_DIR/data.json), else ./data",
            help="Data folder whose packed train store holds the run's patches (for the error gallery and Grad-CAM).",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", show_default=False, help="HTML file to write \\[default: RUN_DIR/report.html]."),
    ] = None,
    ledger: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            show_default="submissions/ledger.jsonl of the nearest folder up that has submissions/",
            help="Submission ledger whose records of this run's files are listed with their scores.",
        ),
    ] = None,
    n_errors: Annotated[
        int, typer.Option(metavar="N", help="False positives and false negatives to show (each); 0 for none.")
    ] = 12,
    device: Annotated[
        str, typer.Option(metavar="DEVICE", help=f"Where Grad-CAM runs the fold models: {DEVICE_HELP}")
    ] = "auto",
) -> None:
    """Write one self-contained HTML report of a run: open it from disk in any browser.

    Sections: the resolved config and recipe, the environment, per-fold and pooled out-of-fold AUC (1 view
    and each oof_tta{N}.csv), learning curves with each fold's best epoch, ROC and precision-recall curves,
    a reliability plot, the confusion matrix at the Youden threshold, the N most confident false positives
    and false negatives (patches from --data-dir's packed store) with Grad-CAM from the fold model that
    predicted each, training time per fold, every `hcd evaluate` of the run on a labelled folder, and the
    run's submissions with their leaderboard scores from the ledger. Every image is inline and nothing is fetched from the network. A section that cannot be
    made (a probe run has no epochs or weights; no packed store) says why and the rest is still written.

    Example: hcd report --run-dir runs/r18
    """
    from hcd_kit.console import console
    from hcd_kit.report import build_report

    res = build_report(run_dir, data_dir=data_dir, out=out, ledger=ledger, n_errors=n_errors, device=device)
    for section, note in res.notes.items():
        console.print(f"note ({section}): {note}", soft_wrap=True, highlight=False)
    console.print(
        f"threshold {res.threshold:.4f} (Youden): {len(res.fp)} false positive(s), {len(res.fn)} false "
        f"negative(s) shown, {len(res.cams)} Grad-CAM map(s)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"wrote {res.out} ({res.bytes / 1e6:.1f} MB)", soft_wrap=True, highlight=False)
