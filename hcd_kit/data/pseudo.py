"""The pseudo-label file: confident test predictions used as extra training labels (``hcd pseudo`` writes it,
``hcd train --pseudo FILE`` reads it). This module is its one reader and one writer.

The file is a CSV with the header ``id,label,prob``: a test id of the packed test store, its hard label (0 or 1)
and the probability it was picked by (``prob`` may be left out of a hand-written file)::

    id,label,prob
    00006537328c33e284c973d7b39d340809f7271b,1,0.99131
    0000ec92553fda4ce39889f9226ace43cae3364e,0,0.00872

    write_pseudo("pseudo.csv", frame)
    frame = read_pseudo("pseudo.csv")            # id str, label int64, prob float (NaN where absent)
    rows = pseudo_rows(frame, test_store, "pseudo.csv")   # their rows in the packed test store
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.data.store import PackedStore
from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_open

COLUMNS = ("id", "label", "prob")
_HINT = "write it with `hcd pseudo`"


def write_pseudo(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Write ``frame``'s id, label and prob columns atomically (probabilities with 6 significant digits)."""
    path = Path(path)
    out = pd.DataFrame(
        {"id": frame["id"].astype(str), "label": frame["label"].astype(np.int64), "prob": frame["prob"].astype(float)}
    )
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False, float_format="%.6g", lineterminator="\n")
    return path


def read_pseudo(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a pseudo-label file: one-line ``DataError`` naming the first problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pseudo-label file not found: {path}; {_HINT}")
    try:
        df = pd.read_csv(path, dtype={"id": str, "label": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a readable CSV ({first}); {_HINT}") from None
    cols = list(map(str, df.columns))
    if cols not in (list(COLUMNS), list(COLUMNS[:2])):
        raise DataError(f"{path} must have the columns id,label,prob (has {','.join(cols)}); {_HINT}")
    if df.empty:
        raise DataError(f"{path} lists no pseudo-labels; {_HINT}")
    if df["id"].isna().any():
        raise DataError(f"{path}: line {int(np.flatnonzero(df['id'].isna())[0]) + 2} has no id")
    if df["id"].duplicated().any():
        raise DataError(f"{path} lists id {df.loc[df['id'].duplicated(), 'id'].iloc[0]} twice")
    bad = ~df["label"].isin(["0", "1"])
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} label(s) are not 0 or 1 "
            f"(first: id {df.at[first, 'id']} = {df.at[first, 'label']!r})"
        )
    prob = pd.to_numeric(df["prob"], errors="coerce") if "prob" in df else pd.Series(np.nan, index=df.index)
    if "prob" in df:
        wrong = ~np.isfinite(prob) | (prob < 0) | (prob > 1)
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            raise DataError(
                f"{path}: {int(wrong.sum())} prob(s) are not probabilities in [0, 1] "
                f"(first: id {df.at[first, 'id']} = {df.at[first, 'prob']!r})"
            )
    return pd.DataFrame({"id": df["id"].astype(str), "label": df["label"].astype(np.int64), "prob": prob.astype(float)})


def pseudo_rows(frame: pd.DataFrame, test_store: PackedStore, path: str | os.PathLike[str]) -> np.ndarray:
    """The rows of ``frame``'s ids in the packed test store; one-line ``DataError`` if any id is not there."""
    pos = pd.Index(test_store.ids).get_indexer(pd.Index(frame["id"]))
    missing = pos < 0
    if missing.any():
        first = frame["id"].to_numpy()[missing][0]
        raise DataError(
            f"{path}: {int(missing.sum())} of {len(frame)} id(s) are not in the packed test store "
            f"({int((~missing).sum())} match), e.g. {first}; pseudo-labels must come from this --data-dir's test set"
        )
    return pos.astype(np.int64)
