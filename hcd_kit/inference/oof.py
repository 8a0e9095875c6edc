"""Out-of-fold predictions: the one reader of ``RUN/foldK/oof.csv``, and predict's OOF AUC with and without TTA.

``hcd train`` writes each fold's validation probabilities from its best weights as ``oof.csv``
(``OOF_COLUMNS``: id,fold,prob,label); ``hcd cv``, ``hcd ensemble`` and ``hcd predict`` read them here.
``hcd predict`` also re-scores each fold's validation ids itself, with 1 view and with ``n`` views, when
the packed train store is at hand: ``oof_plan`` finds those ids (or says why the check is skipped),
``oof_auc`` turns the per-view logits into the two AUCs, and ``write_tta_oof`` keeps the ``n``-view
probabilities as ``RUN/oof_tta{n}.csv`` (same columns), which ``hcd ensemble`` blends next to ``n``-view test
predictions (``read_tta_oof``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_open
from hcd_kit.inference.tta import sigmoid_mean
from hcd_kit.layout import OOF_COLUMNS, DataLayout, RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc

def read_oof(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One fold's ``oof.csv``, checked: the four columns, finite probabilities, labels 0/1."""
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}); re-run that fold") from None
    missing = [c for c in OOF_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected {','.join(OOF_COLUMNS)}")
    prob = pd.to_numeric(df["prob"], errors="coerce")
    if not np.isfinite(prob.to_numpy(float)).all():
        raise DataError(f"{path} has missing or non-numeric probabilities; re-run that fold")
    if not df["label"].isin([0, 1]).all():
        raise DataError(f"{path} has labels other than 0 and 1")
    return df.assign(prob=prob.astype(float), label=df["label"].astype(np.int64))


def read_run_oof(run_dir: str | os.PathLike[str], folds: list[int] | None = None) -> pd.DataFrame | None:
    """The ``oof.csv`` of ``folds`` (default: every fold that has one) as one frame; None when there are none."""
    run = RunLayout.of(run_dir)
    files = [run.oof(k) for k in (run.folds_present() if folds is None else folds) if run.oof(k).is_file()]
    if not files:
        return None
    return pd.concat([read_oof(f) for f in files], ignore_index=True)


def recorded_cv_auc(run_dir: str | os.PathLike[str], folds: list[int]) -> float | None:
    """Pooled AUC of the selected folds' training-time ``oof.csv`` files, if all are there (JSON-safe)."""
    run = RunLayout.of(run_dir)
    if not all(run.oof(k).is_file() for k in folds):
        return None
    try:
        oof = read_run_oof(run_dir, folds)
    except DataError:
        return None  # a malformed oof.csv only costs the ledger its CV figure
    return finite_or_none(roc_auc(oof["label"], oof["prob"]))


@dataclass
class OofAuc:
    """Out-of-fold AUC recomputed by predict: pooled over folds, with 1 view and with ``tta`` views."""

    tta: int
    auc_1: float
    auc_n: float
    per_fold: list[tuple[int, int, float, float]] = field(default_factory=list)  # fold, n, auc_1, auc_n


def _validation_ids(run: RunLayout, layout: DataLayout, fold: int) -> np.ndarray | None:
    """Ids fold ``fold``'s model never trained on: its ``oof.csv``, else the run's own split
    (``RUN/folds.csv``), else ``DIR/folds.csv``; None when none of them exists."""
    from hcd_kit.data import read_folds

    if run.oof(fold).is_file():
        return read_oof(run.oof(fold))["id"].to_numpy(str)
    for split in (run.folds, layout.folds_csv):
        if split.is_file():
            folds = read_folds(split)
            return folds.loc[folds["fold"] == fold, "id"].to_numpy(str)
    return None


def oof_plan(run_dir, data_dir, folds: list[int]) -> tuple[PackedStore | None, dict[int, np.ndarray], str | None]:
    """The packed train store and each fold's validation rows, or a note saying why OOF is skipped."""
    layout, run = DataLayout.of(data_dir), RunLayout.of(run_dir)
    try:
        store = open_store(layout.packed_dir, "train")
    except DataError:
        if layout.train_labels.is_file():
            hint = f"run `hcd prepare --data-dir {layout.root}` to see OOF AUC with/without TTA"
            return None, {}, f"train data not packed; {hint}"
        return None, {}, "no training data in --data-dir, so OOF AUC with/without TTA is skipped"
    if store.labels is None:
        return None, {}, "packed train store has no labels; OOF AUC skipped"
    rows = {}
    for k in folds:
        try:
            ids = _validation_ids(run, layout, k)
        except DataError as exc:  # predicting must not fail over a diagnostic
            return None, {}, f"fold {k}'s validation ids are unreadable ({exc}); OOF AUC skipped"
        if ids is None:
            return None, {}, f"no {run.oof(k)}, {run.folds} or {layout.folds_csv}; OOF AUC with/without TTA skipped"
        try:
            rows[k] = store.index_of(ids)
        except DataError as exc:  # e.g. a store packed with --skip-bad: predicting must still work
            return None, {}, f"fold {k}'s validation ids are not all in the packed train store ({exc}); OOF AUC skipped"
    return store, rows, None


def oof_auc(store: PackedStore, rows: dict[int, np.ndarray], views: dict[int, np.ndarray], tta: int) -> OofAuc:
    """Per-fold and pooled AUC of the validation rows' per-view logits, from view 0 alone and from all views."""
    per_fold, y_all, p1_all, pn_all = [], [], [], []
    for k, idx in rows.items():
        y, p1, pn = store.labels[idx], sigmoid_mean(views[k][:, :1]), sigmoid_mean(views[k])
        per_fold.append((k, len(idx), roc_auc(y, p1), roc_auc(y, pn)))
        y_all.append(y), p1_all.append(p1), pn_all.append(pn)
    y, p1, pn = np.concatenate(y_all), np.concatenate(p1_all), np.concatenate(pn_all)
    return OofAuc(tta=tta, auc_1=roc_auc(y, p1), auc_n=roc_auc(y, pn), per_fold=per_fold)


def write_oof(path: str | os.PathLike[str], ids, fold, probs: np.ndarray, labels: np.ndarray) -> Path:
    """An OOF file (``OOF_COLUMNS``: id, fold (one number or one per row), prob, label), written atomically:
    ``hcd train``'s ``fold*/oof.csv``, ``hcd predict``'s and ``hcd probe``'s ``oof_tta{N}.csv``."""
    frame = pd.DataFrame(dict(zip(OOF_COLUMNS, (ids, fold, probs, np.asarray(labels).astype(np.int64)))))
    with atomic_open(path, "w", newline="") as fh:
        frame.to_csv(fh, index=False)
    return Path(path)


def write_tta_oof(run_dir, store: PackedStore, rows: dict[int, np.ndarray], views: dict[int, np.ndarray],
                  tta: int) -> Path:
    """``RUN/oof_tta{tta}.csv``: each fold's validation rows, their ``tta`` views averaged as in the test
    predictions. Returns its path."""
    order = list(rows)
    return write_oof(RunLayout.of(run_dir).oof_tta(tta), np.concatenate([store.ids[rows[k]] for k in order]),
                     np.concatenate([np.full(len(rows[k]), k) for k in order]),
                     np.concatenate([sigmoid_mean(views[k]) for k in order]),
                     np.concatenate([store.labels[rows[k]] for k in order]))


def read_tta_oof(run_dir: str | os.PathLike[str], tta: int) -> pd.DataFrame | None:
    """``RUN/oof_tta{tta}.csv`` checked like ``oof.csv``, or None when ``hcd predict --tta {tta}`` wrote none."""
    path = RunLayout.of(run_dir).oof_tta(tta)
    return read_oof(path) if path.is_file() else None
