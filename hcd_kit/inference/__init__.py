"""Inference: out-of-fold reports, TTA prediction with the fold ensemble, blends of runs, the submission file.

    from hcd_kit.inference import predict_run, cv_report
    predict_run("data", "runs/r18", tta=8, out="submissions/r18.csv")
"""

from hcd_kit.inference.cv import cv_report, write_plots
from hcd_kit.inference.ensemble import ensemble_runs, parse_weights
from hcd_kit.inference.predict import predict_run
from hcd_kit.inference.submission import read_sidecar, validate_submission
from hcd_kit.inference.tta import fold_ensemble, tta_stack, tta_transforms, tta_views

__all__ = [
    "cv_report", "ensemble_runs", "fold_ensemble", "parse_weights", "predict_run", "read_sidecar", "tta_stack",
    "tta_transforms", "tta_views", "validate_submission", "write_plots",
]
