"""``hcd report``: one self-contained HTML page per run (config, environment, OOF AUC with and without TTA,
evaluations on other labelled data, learning curves, ROC / PR, calibration, confusion matrix, the most
confident errors and their Grad-CAM, training time, submissions), every picture inline, nothing fetched: it
opens from disk anywhere.

    res = build_report("runs/r18", data_dir="data")    # -> runs/r18/report.html
    fp, fn = most_confident_errors(oof, youden_threshold(oof["label"], oof["prob"]), 12)

Modules: ``data`` (read the run), ``analysis`` (pure numbers), ``figures`` (PNG data URIs), ``patches`` and
``gradcam`` (the error gallery), ``evaluations`` (the scores of ``hcd evaluate``), ``html`` (the Jinja2
template), ``build`` (the whole report), ``plots`` (the PNGs ``hcd cv`` leaves in the run folder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "analysis": "calibration confusion_counts most_confident_errors youden_threshold",
        "build": "SECTIONS SECTION_IDS ReportResult build_report",
        "gradcam": "GradCam UnsupportedModel",
        "plots": "save_png write_plots",
    },
)

if TYPE_CHECKING:
    from hcd_kit.report.analysis import calibration, confusion_counts, most_confident_errors, youden_threshold
    from hcd_kit.report.build import SECTION_IDS, SECTIONS, ReportResult, build_report
    from hcd_kit.report.gradcam import GradCam, UnsupportedModel
    from hcd_kit.report.plots import save_png, write_plots
