"""The submission file: checking it before it leaves the machine, and its ``<file>.json`` sidecar.

``validate_submission`` reads a CSV the way Kaggle scores it (header exactly ``id,label``, one row per id
of ``sample_submission.csv``, every label a finite number in [0, 1]) and raises ONE ``DataError`` that
lists every problem found, so an invalid file is never uploaded. The sidecar (written by
``hcd predict`` / ``hcd ensemble``) says which runs, folds, TTA and blend made the file, and its CV AUC.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from hcd_kit.errors import DataError

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
        raise DataError(f"{path} is not a UTF-8 text CSV; write it with `hcd predict` or as plain id,label CSV")
    try:
        return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); rewrite it as plain id,label rows")


def _sample_ids(sample_csv: Path) -> list[str]:
    if not sample_csv.is_file():
        raise DataError(
            f"{sample_csv} not found; pass --data-dir with the competition's sample_submission.csv "
            "(hcd download fetches it)"
        )
    try:
        return pd.read_csv(sample_csv, dtype=str, usecols=["id"])["id"].tolist()
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{sample_csv} has no readable id column ({exc}); re-run hcd download")


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
    problems += _check_ids(ids, _sample_ids(sample_csv))
    values, bad = _check_labels(body)
    if bad:
        problems.append(f"{len(bad)} labels not a finite number in [0, 1] ({_examples(bad)})")
    if problems:
        raise DataError(f"{path} is not a valid submission: " + "; ".join(problems) + "; nothing was uploaded")
    return pd.DataFrame({"id": ids, "label": values})


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``<path>.json`` written by ``hcd predict`` (runs, folds, tta, ensemble, cv_auc), or {} if absent/bad."""
    side = Path(f"{path}.json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
