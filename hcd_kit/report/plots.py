"""The two PNGs ``hcd cv`` (and ``hcd demo``) leave in the run folder, drawn with the report's own figures:
``learning_curves.png`` (loss, validation AUC and learning rate per epoch, each fold's best epoch marked) and
``oof_roc.png`` (ROC and precision-recall, pooled OOF and each fold). One drawing for the page and the files,
legends outside the data.

    paths = write_plots(cv_report("runs/r18"))
"""

from __future__ import annotations

from pathlib import Path

from hcd_kit.fsutil import atomic_path
from hcd_kit.report.figures import learning_curves_figure, roc_pr_figure
from hcd_kit.runs.cv import CvReport, read_histories


def save_png(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically (a reader never sees half a picture)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def write_plots(report: CvReport) -> list[Path]:
    """``oof_roc.png`` and, when some fold has a history, ``learning_curves.png`` in the run folder."""
    written = [save_png(roc_pr_figure(report.oof, {}), report.run_dir / "oof_roc.png")]
    histories = read_histories(report.run_dir)
    if histories:
        written.insert(0, save_png(learning_curves_figure(histories), report.run_dir / "learning_curves.png"))
    return written
