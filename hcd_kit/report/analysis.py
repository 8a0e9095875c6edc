"""The numbers behind the report's diagnostic sections, as pure functions of the pooled out-of-fold frame.

Every function takes the ``id,fold,prob,label`` rows ``hcd train`` writes (``OOF_COLUMNS``) and returns plain
numbers or frames, so each can be checked against a brute-force computation::

    t = youden_threshold(oof["label"], oof["prob"])      # the ROC point farthest above chance
    fp, fn = most_confident_errors(oof, t, 12)           # the 12 surest mistakes of each kind
    tn, fp_n, fn_n, tp = confusion_counts(oof, t)

A patch is called positive when ``prob >= threshold`` (scikit-learn's ROC convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


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


def most_confident_errors(oof: pd.DataFrame, threshold: float, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` false positives with the highest probability and the ``n`` false negatives with the lowest.

    A false positive is a label-0 row with ``prob >= threshold``; a false negative a label-1 row with
    ``prob < threshold``. Ties in probability are broken by id, so the choice is a function of the rows alone.
    Both frames keep the input's columns, most confident first, with a fresh index.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fp = oof[(oof["label"] == 0) & (oof["prob"] >= threshold)]
    fn = oof[(oof["label"] == 1) & (oof["prob"] < threshold)]
    fp = fp.sort_values(["prob", "id"], ascending=[False, True], kind="mergesort").head(n)
    fn = fn.sort_values(["prob", "id"], ascending=[True, True], kind="mergesort").head(n)
    return fp.reset_index(drop=True), fn.reset_index(drop=True)


def confusion_counts(oof: pd.DataFrame, threshold: float) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) of calling ``prob >= threshold`` positive."""
    pred = oof["prob"].to_numpy(float) >= threshold
    y = oof["label"].to_numpy(np.int64) == 1
    return int((~pred & ~y).sum()), int((pred & ~y).sum()), int((~pred & y).sum()), int((pred & y).sum())


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


def best_epoch(history: pd.DataFrame) -> int | None:
    """The epoch whose weights became ``best.pt`` (training's rule, as ``hcd cv``'s curves mark it)."""
    from hcd_kit.runs.cv import best_epoch_row

    row = best_epoch_row(history)
    return None if row is None else int(history["epoch"].iloc[row])
