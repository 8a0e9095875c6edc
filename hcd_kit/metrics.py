"""Metrics as pure functions over arrays: the competition is scored by ROC AUC.

Besides the AUC itself: a bootstrap interval for it, the Youden threshold and what calling patches at a
threshold gives (accuracy, sensitivity, specificity), and how well calibrated the probabilities are (Brier
score, expected calibration error over equal-width bins). ``hcd report`` and ``hcd evaluate`` use them.
A patch is called positive when ``prob >= threshold`` (scikit-learn's ROC convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def bootstrap_auc(labels, probs, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC: ``n_boot`` resamples of the rows with replacement, drawn
    from ``seed`` (the same rows give the same interval). (NaN, NaN) for one class or ``n_boot`` 0.

    Each resample's AUC is exact (ties count half, as in ``roc_auc``) from weighted counts over the sorted
    distinct probabilities, so a resample costs a few passes over N, not a sort: 1,000 over 220,000 patches
    take seconds. A resample that drew one class only is left out.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.shape[0]} vs {p.shape[0]}")
    if n_boot < 1 or y.size == 0 or np.unique(y).size < 2:
        return math.nan, math.nan
    values, inv = np.unique(p, return_inverse=True)  # rank of each row's probability among distinct ones
    rng, n, aucs = np.random.default_rng(seed), y.size, []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        pos = np.bincount(inv, weights=w * y, minlength=values.size)
        neg = np.bincount(inv, weights=w * (1 - y), minlength=values.size)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            continue
        below = np.cumsum(neg) - neg  # negatives with a strictly lower probability
        aucs.append(float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg)))
    if not aucs:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(aucs, [tail, 100.0 - tail])
    return float(lo), float(hi)


def youden_threshold(labels, probs) -> float:
    """The probability threshold maximising Youden's J = TPR - FPR over the ROC curve; 0.5 for one class.

    Ties go to the highest threshold (the first maximum along the curve), which keeps the choice stable.
    """
    from sklearn.metrics import roc_curve

    y, p = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=float)
    if y.size == 0 or y.min() == y.max():
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    finite = np.isfinite(thr)  # scikit-learn's first threshold is +inf (nothing called positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thr[int(np.argmax(j))])


def threshold_scores(labels, probs, threshold: float) -> dict[str, float | int]:
    """Calling ``prob >= threshold`` positive: accuracy, sensitivity (TPR), specificity (TNR) and the four
    counts; a rate whose denominator is 0 (no positives, no negatives) is NaN."""
    y = np.asarray(labels).astype(np.int64).ravel() == 1
    pred = np.asarray(probs, dtype=np.float64).ravel() >= threshold
    tp, fn = int((pred & y).sum()), int((~pred & y).sum())
    tn, fp = int((~pred & ~y).sum()), int((pred & ~y).sum())

    def rate(a: int, b: int) -> float:
        return a / (a + b) if a + b else math.nan

    return {
        "accuracy": rate(tp + tn, fp + fn),
        "sensitivity": rate(tp, fn),
        "specificity": rate(tn, fp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


@dataclass
class Calibration:
    """Reliability of the probabilities: per equal-width bin, mean prediction, observed rate and count."""

    edges: np.ndarray  # n_bins + 1 bin edges over [0, 1]
    mean_prob: np.ndarray  # NaN for an empty bin
    frac_pos: np.ndarray  # NaN for an empty bin
    count: np.ndarray
    brier: float
    ece: float  # expected calibration error: count-weighted mean |frac_pos - mean_prob|


def calibration(labels, probs, n_bins: int = 10) -> Calibration:
    y, p = np.asarray(labels, dtype=float), np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(idx, weights=p, minlength=n_bins) / count
        frac_pos = np.bincount(idx, weights=y, minlength=n_bins) / count
    used = count > 0
    ece = float(np.sum(count[used] * np.abs(frac_pos[used] - mean_prob[used])) / max(1, count.sum()))
    brier = float(np.mean((p - y) ** 2)) if y.size else math.nan
    return Calibration(edges, mean_prob, frac_pos, count, brier, ece)


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
