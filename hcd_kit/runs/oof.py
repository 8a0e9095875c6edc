"""Out-of-fold prediction files: the one reader and writer of ``RUN/foldK/oof.csv`` and ``RUN/oof_tta{n}.csv``.

``hcd train`` writes each fold's validation probabilities from its best weights as ``oof.csv``
(``OOF_COLUMNS``: id,fold,prob,label); ``hcd predict`` writes the ``n``-view TTA re-prediction of the same ids
as ``RUN/oof_tta{n}.csv`` (same columns); ``hcd cv``, ``hcd ensemble``, ``hcd predict`` and ``hcd report`` read
them here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.damage import damaged, read_csv
from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_open
from hcd_kit.layout import OOF_COLUMNS, RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc
from hcd_kit.runs.record import retrain_fold


def _rewrite(path: Path) -> str:
    """The command that writes the OOF file ``path`` again: train its fold again, re-run the probe, or predict."""
    m = re.fullmatch(r"oof_tta(\d+)\.csv", path.name)
    if m:
        return f"write it again with `hcd predict --run-dir {path.parent} --tta {m[1]}`"
    fold = re.fullmatch(r"fold(\d+)", path.parent.name)
    run = RunLayout(path.parent.parent)
    if fold is None:
        return "write it again"
    if (run.root / "probe.json").is_file():
        return f"run `hcd probe --run-dir {run.root}` again with the same --features"
    return retrain_fold(run, int(fold[1]))


def read_oof(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One fold's ``oof.csv`` (or an ``oof_tta{n}.csv``), checked: the four columns, finite probabilities, labels
    0/1; a one-line DataError naming the command that writes it again otherwise."""
    path = Path(path)
    fix = _rewrite(path)
    df = read_csv(path, fix, OOF_COLUMNS, dtype={"id": str})
    prob = pd.to_numeric(df["prob"], errors="coerce")
    if not np.isfinite(prob.to_numpy(float)).all():
        raise damaged(path, "missing or non-numeric probabilities", fix)
    if not df["label"].isin([0, 1]).all():
        raise damaged(path, "labels other than 0 and 1", fix)
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


def write_oof(path: str | os.PathLike[str], ids, fold, probs: np.ndarray, labels: np.ndarray) -> Path:
    """An OOF file (``OOF_COLUMNS``: id, fold (one number or one per row), prob, label), written atomically:
    ``hcd train``'s ``fold*/oof.csv``, ``hcd predict``'s and ``hcd probe``'s ``oof_tta{N}.csv``."""
    frame = pd.DataFrame(dict(zip(OOF_COLUMNS, (ids, fold, probs, np.asarray(labels).astype(np.int64)))))
    with atomic_open(path, "w", newline="") as fh:
        frame.to_csv(fh, index=False)
    return Path(path)


def read_tta_oof(run_dir: str | os.PathLike[str], tta: int) -> pd.DataFrame | None:
    """``RUN/oof_tta{tta}.csv`` checked like ``oof.csv``, or None when ``hcd predict --tta {tta}`` wrote none."""
    path = RunLayout.of(run_dir).oof_tta(tta)
    return read_oof(path) if path.is_file() else None
