"""Inference: out-of-fold reports, TTA prediction with the fold ensemble, blends of runs, the submission file,
a fold exported as a timm ``local-dir:`` folder, and the table of every run.

    from hcd_kit.inference import predict_run, cv_report
    predict_run("data", "runs/r18", tta=8, out="submissions/r18.csv")

Names load on first use (``hcd_kit.lazy``), so importing one module of the package imports no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(__name__, {
    "blend": "BlendChoice search_blend signed",
    "cv": "CvReport FoldScore cv_report write_plots",
    "ensemble": "EnsembleResult check_weights ensemble_runs parse_weights",
    "export": "ExportResult export_fold save_local_dir",
    "oof": "OofAuc read_oof read_run_oof",
    "predict": "PredictResult open_split open_test_store predict_run predict_views to_device",
    "pseudo": "PseudoSelection select_pseudo",
    "runs": "RunModel expected_folds load_fold_model read_run_model select_folds",
    "runs_table": "find_runs runs_table sort_rows",
    "runs_page": "write_page",
    "submission": "read_predictions read_sample_ids read_sidecar sample_ids validate_submission write_sidecar "
                  "write_submission",
    "tta": "fold_ensemble sigmoid_mean tta_stack tta_transforms tta_views",
})

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.inference.blend import BlendChoice, search_blend, signed
    from hcd_kit.inference.cv import CvReport, FoldScore, cv_report, write_plots
    from hcd_kit.inference.ensemble import EnsembleResult, check_weights, ensemble_runs, parse_weights
    from hcd_kit.inference.export import ExportResult, export_fold, save_local_dir
    from hcd_kit.inference.oof import OofAuc, read_oof, read_run_oof
    from hcd_kit.inference.predict import (
        PredictResult, open_split, open_test_store, predict_run, predict_views, to_device
    )
    from hcd_kit.inference.pseudo import PseudoSelection, select_pseudo
    from hcd_kit.inference.runs import RunModel, expected_folds, load_fold_model, read_run_model, select_folds
    from hcd_kit.inference.runs_page import write_page
    from hcd_kit.inference.runs_table import find_runs, runs_table, sort_rows
    from hcd_kit.inference.submission import (
        read_predictions, read_sample_ids, read_sidecar, sample_ids, validate_submission, write_sidecar,
        write_submission
    )
    from hcd_kit.inference.tta import fold_ensemble, sigmoid_mean, tta_stack, tta_transforms, tta_views
