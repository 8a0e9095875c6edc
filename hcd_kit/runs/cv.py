"""Cross-validation numbers of a training run: per-fold and pooled out-of-fold AUC, read from its files.

``cv_report(run_dir)`` reads every ``RUN/fold*/oof.csv`` (id,fold,prob,label, written by ``hcd train`` from
each fold's best weights) and returns the numbers: per-fold n / positives / AUC, the mean and std of the
fold AUCs, and the **overall OOF AUC** pooled over all folds, the best estimate of the leaderboard score
from training data alone (fold AUCs hide calibration differences between folds; the pooled AUC does not).
It also says what looks wrong: a fold without predictions, an unfinished fold, ids predicted by two folds.
``read_histories`` gives each fold's ``history.csv`` for the learning curves (drawn by ``hcd_kit.report.plots``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.errors import DataError
from hcd_kit.layout import OOF_COLUMNS, RunLayout
from hcd_kit.metrics import roc_auc
from hcd_kit.runs.model import expected_folds
from hcd_kit.runs.oof import read_oof
from hcd_kit.runs.state import read_state

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
    """Folds whose progress (``state.json``) says training stopped before its last epoch (interrupted, not
    early-stopped). A missing or damaged ``state.json`` says nothing here: ``--resume`` reports it."""
    out = []
    for k in folds:
        try:
            state = read_state(run.state(k))
        except DataError:
            continue
        if state is not None and not state.finished:
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
