"""The submission file and its ``<file>.json`` sidecar: the one place that writes and reads them.

A submission is ``id,label`` in the order of ``sample_submission.csv`` (``sample_ids``), written by
``write_submission``. ``read_predictions`` reads one back for a blend (aligned by id later, so any order
will do); ``validate_submission`` reads it the way Kaggle scores it (header exactly ``id,label``, one row
per id of the sample, every label a finite number in [0, 1]) and raises ONE ``DataError`` that lists
every problem found, so an invalid file is never uploaded. The sidecar (``write_sidecar`` /
``read_sidecar``) says which runs, folds, TTA and blend made the file, and its CV AUC, for the submit ledger.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_open, atomic_write_json
from hcd_kit.layout import DataLayout

HEADER = ["id", "label"]
_SHOW = 3  # ids/rows named per problem: enough to find them, short enough for one line


def _examples(items: list[str]) -> str:
    head = ", ".join(items[:_SHOW])
    return f"{head}, ..." if len(items) > _SHOW else head


def _read_rows(path: Path) -> list[list[str]]:
    """The CSV's rows as strings; unreadable or non-UTF-8 files are one-line errors."""
    if not path.is_file():
        raise DataError(f"submission file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not a UTF-8 text CSV; write it with `hcd predict` or as plain id,label CSV"
        ) from None
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); rewrite it as plain id,label rows") from None


def read_sample_ids(sample_csv: str | os.PathLike[str]) -> np.ndarray:
    """The ids of a ``sample_submission.csv`` in file order (the order Kaggle expects); DataError if it lists none."""
    from hcd_kit.data import read_sample_submission

    ids = read_sample_submission(sample_csv)["id"].to_numpy(str)
    if len(ids) == 0:
        raise DataError(f"{sample_csv} lists no ids; download it again with `hcd download`")
    return ids


def sample_ids(data_dir: str | os.PathLike[str]) -> np.ndarray:
    """The ids of ``DIR/sample_submission.csv`` in file order (see ``read_sample_ids``)."""
    return read_sample_ids(DataLayout.of(data_dir).sample_submission)


def write_submission(ids: np.ndarray, probs: np.ndarray, out: str | os.PathLike[str]) -> Path:
    """Write ``id,label`` rows atomically (probabilities with 8 significant digits)."""
    out = Path(out)
    with atomic_open(out, "w", encoding="utf-8", newline="") as fh:
        pd.DataFrame({"id": ids, "label": probs}).to_csv(fh, index=False, float_format="%.8g", lineterminator="\n")
    return out


def write_sidecar(out: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """``<out>.json``: what made this submission (read back by ``read_sidecar`` for the submit ledger)."""
    side = Path(f"{out}.json")
    atomic_write_json(side, info)
    return side


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``<path>.json`` written by ``write_sidecar`` (runs, folds, tta, ensemble, cv_auc), or {} if absent/bad."""
    side = Path(f"{path}.json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_predictions(path: str | os.PathLike[str], run: Path | None = None) -> pd.DataFrame:
    """An ``id,label`` prediction file as a DataFrame (id str, label float), with one-line errors.

    ``run`` (the run the file belongs to) only makes the "missing" error say how to write it.
    """
    path = Path(path)
    if not path.is_file():
        hint = f"run `hcd predict --run-dir {run}` first, or pass --pred" if run is not None else "check the path"
        raise DataError(f"missing test predictions {path}; {hint}")
    try:
        df = pd.read_csv(path, dtype={"id": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); it must hold id,label rows") from None
    if list(df.columns[:2]) != HEADER:
        raise DataError(f"{path} must have the columns id,label (has {','.join(map(str, df.columns))})")
    if df["id"].duplicated().any():
        raise DataError(f"{path} lists id {df.loc[df['id'].duplicated(), 'id'].iloc[0]} twice")
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~np.isfinite(label) | (label < 0) | (label > 1)
    if bad.any():  # one NaN would turn a rank blend into all-NaN rows; a 7 would skew a mean blend
        first = df.index[bad][0]
        raise DataError(
            f"{path}: {int(bad.sum())} label(s) are not probabilities in [0, 1] "
            f"(first: id {df.at[first, 'id']} = {df.at[first, 'label']!r}); re-run `hcd predict`"
        )
    return pd.DataFrame({"id": df["id"], "label": label.astype(float)})


def _check_labels(rows: list[list[str]]) -> tuple[list[float], list[str]]:
    """Parse every label; return the values and a description of the bad ones (CSV line numbers)."""
    values, bad = [], []
    for line, row in enumerate(rows, start=2):
        try:
            v = float(row[1])
        except ValueError:
            v = math.nan
            bad.append(f"line {line}: {row[1]!r}")
        else:
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                bad.append(f"line {line}: {row[1]!r}")
        values.append(v)
    return values, bad


def _check_ids(ids: list[str], expected: list[str]) -> list[str]:
    seen, dups = set(), []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    want = set(expected)
    missing = [i for i in expected if i not in seen]
    extra = [i for i in ids if i not in want]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ids ({_examples(missing)})")
    if extra:
        problems.append(f"{len(extra)} ids not in the sample ({_examples(extra)})")
    if dups:
        problems.append(f"{len(dups)} duplicated ids ({_examples(list(dict.fromkeys(dups)))})")
    return problems


def validate_submission(path: str | os.PathLike[str], sample_csv: str | os.PathLike[str]) -> pd.DataFrame:
    """Check ``path`` against ``sample_csv`` and return it as a DataFrame (``id`` str, ``label`` float).

    Raises one ``DataError`` naming every problem (header, malformed rows, missing / extra / duplicated
    ids, labels that are not finite numbers in [0, 1]), e.g.::

        validate_submission("runs/r18/submission.csv", "data/sample_submission.csv")
    """
    path, sample_csv = Path(path), Path(sample_csv)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path} is empty; it needs the header id,label and one row per test id")
    if rows[0] != HEADER:
        raise DataError(f"{path}: header is {','.join(rows[0])!r}, it must be exactly 'id,label'")
    body = rows[1:]
    problems = []
    ragged = [f"line {n}" for n, r in enumerate(body, start=2) if len(r) != 2]
    if ragged:
        problems.append(f"{len(ragged)} rows without exactly 2 fields ({_examples(ragged)})")
        body = [r for r in body if len(r) == 2]
    ids = [r[0] for r in body]
    problems += _check_ids(ids, read_sample_ids(sample_csv).tolist())
    values, bad = _check_labels(body)
    if bad:
        problems.append(f"{len(bad)} labels not a finite number in [0, 1] ({_examples(bad)})")
    if problems:
        raise DataError(f"{path} is not a valid submission: " + "; ".join(problems) + "; nothing was uploaded")
    return pd.DataFrame({"id": ids, "label": values})
