"""Metrics as pure functions over arrays: the competition is scored by ROC AUC."""

from __future__ import annotations

import math

import numpy as np


def roc_auc(labels, probs) -> float:
    """ROC AUC of ``probs`` against binary ``labels``; NaN when only one class is present.

    NaN (not an exception) because a tiny validation fold can be single-class, and a caller reporting many
    folds should show that fold as undefined rather than crash or silently report 0.5.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0 or np.unique(y).size < 2:
        return math.nan
    return float(roc_auc_score(y, p))


def rank_normalise(values) -> np.ndarray:
    """Map scores to their average rank scaled into [0, 1] (ties share a rank); for rank ensembles."""
    from scipy.stats import rankdata

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size <= 1:
        return np.zeros_like(v)
    return (rankdata(v, method="average") - 1.0) / (v.size - 1.0)


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a JSON-safe number: JSON has no NaN, so an undefined AUC (one-class fold) becomes None (null)."""
    return None if x is None or not np.isfinite(x) else float(x)
