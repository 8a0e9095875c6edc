"""Inference: out-of-fold reports, TTA prediction with the fold ensemble, its evaluation on a labelled folder
(``hcd evaluate``), blends of runs, pseudo-label selection, and a fold exported as a timm ``local-dir:`` folder.
The files of a run folder (OOF, submission, evaluations, runs table) are read and written by ``hcd_kit.runs``.

    from hcd_kit.inference import predict_run
    predict_run("data", "runs/r18", tta=8, out="submissions/r18.csv")

Names load on first use (``hcd_kit.lazy``), so importing one module of the package imports no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "blend": "BlendChoice search_blend signed",
        "ensemble": "EnsembleResult check_weights ensemble_runs parse_weights",
        "evaluate": "evaluate_run",
        "export": "ExportResult export_fold save_local_dir",
        "oof": "OofAuc",
        "predict": "PredictResult load_folds predict_folds predict_run predict_views to_device",
        "pseudo": "PseudoSelection select_pseudo",
        "runs": "load_fold_model",
        "tta": "fold_ensemble sigmoid_mean tta_stack tta_transforms tta_views",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.inference.blend import BlendChoice, search_blend, signed
    from hcd_kit.inference.ensemble import EnsembleResult, check_weights, ensemble_runs, parse_weights
    from hcd_kit.inference.evaluate import evaluate_run
    from hcd_kit.inference.export import ExportResult, export_fold, save_local_dir
    from hcd_kit.inference.oof import OofAuc
    from hcd_kit.inference.predict import (
        PredictResult,
        load_folds,
        predict_folds,
        predict_run,
        predict_views,
        to_device,
    )
    from hcd_kit.inference.pseudo import PseudoSelection, select_pseudo
    from hcd_kit.inference.runs import load_fold_model
    from hcd_kit.inference.tta import fold_ensemble, sigmoid_mean, tta_stack, tta_transforms, tta_views
