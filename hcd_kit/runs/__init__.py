"""Run files: the one reader and writer of everything in a run folder, and the table of every run.

A run folder (``hcd_kit.layout.RunLayout``) holds what ``hcd train`` records (``config.toml``, ``plan.json``,
``folds.csv``, ``data.json``, ``environment.json``, ``train.log``; per fold ``state.json``, ``history.csv`` and
``oof.csv``), what ``hcd predict`` adds (``oof_tta{n}.csv``, the submission and its sidecar), what
``hcd evaluate`` adds (``evaluations/<name>.json``), and what ``hcd runs`` lists. This package sits below
training, inference, features and kaggle, which all read and write run files through it, and imports none
of them.

    from hcd_kit.runs import cv_report, read_run_oof
    cv_report("runs/r18").overall_auc

Names load on first use (``hcd_kit.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "cv": "CvReport FoldScore best_epoch_row cv_report read_histories",
        "evaluation": "EvaluationResult evaluation_name evaluation_record new_evaluation_path read_evaluations "
        "run_kind write_evaluation",
        "log": "RunLog",
        "model": "RunModel expected_folds read_run_model select_folds",
        "oof": "read_oof read_run_oof read_tta_oof recorded_cv_auc write_oof",
        "page": "write_page",
        "record": "record_environment record_run run_data_dir write_history",
        "state": "FoldState read_state write_state",
        "submission": "read_predictions read_sample_ids read_sidecar sample_ids validate_submission write_sidecar "
        "write_submission",
        "table": "find_runs runs_table sort_rows",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.runs.cv import CvReport, FoldScore, best_epoch_row, cv_report, read_histories
    from hcd_kit.runs.evaluation import (
        EvaluationResult,
        evaluation_name,
        evaluation_record,
        new_evaluation_path,
        read_evaluations,
        run_kind,
        write_evaluation,
    )
    from hcd_kit.runs.log import RunLog
    from hcd_kit.runs.model import RunModel, expected_folds, read_run_model, select_folds
    from hcd_kit.runs.oof import read_oof, read_run_oof, read_tta_oof, recorded_cv_auc, write_oof
    from hcd_kit.runs.page import write_page
    from hcd_kit.runs.record import record_environment, record_run, run_data_dir, write_history
    from hcd_kit.runs.state import FoldState, read_state, write_state
    from hcd_kit.runs.submission import (
        read_predictions,
        read_sample_ids,
        read_sidecar,
        sample_ids,
        validate_submission,
        write_sidecar,
        write_submission,
    )
    from hcd_kit.runs.table import find_runs, runs_table, sort_rows
