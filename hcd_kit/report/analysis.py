"""The numbers behind the report's diagnostic sections, as pure functions of the pooled out-of-fold frame.

Every function takes the ``id,fold,prob,label`` rows ``hcd train`` writes (``OOF_COLUMNS``) and returns plain
numbers or frames, so each can be checked against a brute-force computation::

    t = youden_threshold(oof["label"], oof["prob"])      # the ROC point farthest above chance
    fp, fn = most_confident_errors(oof, t, 12)           # the 12 surest mistakes of each kind
    tn, fp_n, fn_n, tp = confusion_counts(oof, t)

A patch is called positive when ``prob >= threshold`` (scikit-learn's ROC convention).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The threshold and calibration are shared with `hcd evaluate`: they live with the other metrics.
from hcd_kit.metrics import Calibration, calibration, youden_threshold  # noqa: F401


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


def best_epoch(history: pd.DataFrame) -> int | None:
    """The epoch whose weights became ``best.pt`` (training's rule, as ``hcd cv``'s curves mark it)."""
    from hcd_kit.runs.cv import best_epoch_row

    row = best_epoch_row(history)
    return None if row is None else int(history["epoch"].iloc[row])
