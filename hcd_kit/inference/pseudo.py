"""Pseudo-labels from a submission: the test predictions confident enough to train on (``hcd pseudo``).

A prediction ``p`` of a test id (an ``id,label`` submission, label = probability) is kept as label 1 when
``p >= min_confidence`` and as label 0 when ``p <= 1 - min_confidence``; everything in between is left out.
``max_per_class`` keeps only the most confident N of each class. Every id must be in the packed test store
of the data folder, the store ``hcd train --pseudo`` reads the images from. The file format is
``hcd_kit.data.pseudo``.

    sel = select_pseudo("submissions/r18.csv", "data", min_confidence=0.95)
    write_pseudo("pseudo.csv", sel.frame)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.data.store import open_store
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import DataLayout
from hcd_kit.runs.submission import read_predictions

DEFAULT_MIN_CONFIDENCE = 0.95
_EPS = 1e-12  # 1 - 0.9 is 0.09999999999999998 in floating point: a prediction of 0.1 must still count


@dataclass
class PseudoSelection:
    frame: pd.DataFrame  # id, label, prob of the kept ids, in the packed test store's row order
    total: int  # predictions read
    min_confidence: float
    capped: int  # confident ids left out by max_per_class

    @property
    def positives(self) -> int:
        return int((self.frame["label"] == 1).sum())

    @property
    def negatives(self) -> int:
        return int((self.frame["label"] == 0).sum())


def check_confidence(min_confidence: float, max_per_class: int | None = None) -> None:
    if not 0.5 < min_confidence < 1.0:
        raise ConfigError(f"--min-confidence must be in (0.5, 1), got {min_confidence}")
    if max_per_class is not None and max_per_class < 1:
        raise ConfigError(f"--max-per-class must be >= 1, got {max_per_class}")


def select_pseudo(
    pred: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_per_class: int | None = None,
) -> PseudoSelection:
    """The confident predictions of ``pred`` (see module docstring); one-line ``ConfigError`` for a bad
    threshold, an unreadable prediction file, ids outside ``data_dir``'s test set or nothing confident."""
    check_confidence(min_confidence, max_per_class)
    pred = Path(pred)
    try:
        preds = read_predictions(pred)
    except DataError as exc:  # the file given to --pred is the problem: a wrong flag value
        raise ConfigError(f"--pred: {exc}") from None
    store = open_store(DataLayout.of(data_dir).packed_dir, "test")
    rows = pd.Index(store.ids).get_indexer(pd.Index(preds["id"]))
    unknown = rows < 0
    if unknown.any():
        raise ConfigError(
            f"--pred {pred}: {int(unknown.sum())} of {len(preds)} ids are not in the packed test store of "
            f"{data_dir} ({int((~unknown).sum())} match), e.g. {preds['id'][unknown].iloc[0]}; "
            "pass predictions of this --data-dir's test set"
        )
    prob = preds["label"].to_numpy(float)
    pos = np.flatnonzero(prob >= min_confidence - _EPS)
    neg = np.flatnonzero(prob <= 1.0 - min_confidence + _EPS)
    confident = len(pos) + len(neg)
    if max_per_class is not None:  # the most confident first; ties in test-store order, so the pick is stable
        pos = pos[np.lexsort((rows[pos], -prob[pos]))[:max_per_class]]
        neg = neg[np.lexsort((rows[neg], prob[neg]))[:max_per_class]]
    keep = np.concatenate([pos, neg])
    if len(keep) == 0:
        raise ConfigError(
            f"no prediction in {pred} is >= {min_confidence:g} or <= {1 - min_confidence:g} "
            f"(they range from {prob.min():.4g} to {prob.max():.4g}); lower --min-confidence"
        )
    keep = keep[np.argsort(rows[keep], kind="stable")]
    frame = pd.DataFrame(
        {"id": preds["id"].to_numpy(str)[keep], "label": (prob[keep] >= 0.5).astype(np.int64), "prob": prob[keep]}
    )
    return PseudoSelection(frame, len(preds), min_confidence, confident - len(keep))
