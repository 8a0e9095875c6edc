"""Predict's out-of-fold AUC with and without TTA (the OOF files themselves: ``hcd_kit.runs.oof``).

``hcd predict`` also re-scores each fold's validation ids itself, with 1 view and with ``n`` views, when
the packed train store is at hand: ``oof_plan`` finds those ids (or says why the check is skipped),
``oof_auc`` turns the per-view logits into the two AUCs, and ``write_tta_oof`` keeps the ``n``-view
probabilities as ``RUN/oof_tta{n}.csv`` (same columns), which ``hcd ensemble`` blends next to ``n``-view test
predictions (``read_tta_oof``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.errors import DataError
from hcd_kit.inference.tta import sigmoid_mean
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.metrics import roc_auc
from hcd_kit.runs.oof import read_oof, write_oof


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


def write_tta_oof(
    run_dir, store: PackedStore, rows: dict[int, np.ndarray], views: dict[int, np.ndarray], tta: int
) -> Path:
    """``RUN/oof_tta{tta}.csv``: each fold's validation rows, their ``tta`` views averaged as in the test
    predictions. Returns its path."""
    order = list(rows)
    return write_oof(
        RunLayout.of(run_dir).oof_tta(tta),
        np.concatenate([store.ids[rows[k]] for k in order]),
        np.concatenate([np.full(len(rows[k]), k) for k in order]),
        np.concatenate([sigmoid_mean(views[k]) for k in order]),
        np.concatenate([store.labels[rows[k]] for k in order]),
    )
