"""Checking a submission file before it leaves the machine, and the local ledger of what was submitted.

``validate_submission`` reads a CSV the way Kaggle scores it (header exactly ``id,label``, one row per id
of ``sample_submission.csv``, every label a finite number in [0, 1]) and raises ONE ``DataError`` that
lists every problem found, so an invalid file is never uploaded. The ledger is a JSON-lines file
(``submissions/ledger.jsonl`` by default) with one record per submission: when, which file (path and
sha256), the message, the runs and CV AUC behind it (from the ``<file>.json`` sidecar ``hcd predict``
writes), the Kaggle ref, status and scores. Appends are one ``O_APPEND`` write of one line; score updates
rewrite the file atomically. Credentials never reach it: records are built from named fields only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_write_text, sha256_file

HEADER = ["id", "label"]
DEFAULT_LEDGER = Path("submissions") / "ledger.jsonl"
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


# --- the ledger ---------------------------------------------------------------------------------------


@dataclass
class LedgerRecord:
    """One submission as the ledger keeps it (a JSON object per line)."""

    time: str
    file: str
    sha256: str
    message: str
    competition: str
    ref: int | None = None
    status: str = "PENDING"
    public_score: float | None = None
    private_score: float | None = None
    runs: list[str] = field(default_factory=list)
    cv_auc: float | None = None
    tta: int | None = None
    folds: Any = None
    ensemble: str | None = None

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], message: str, competition: str) -> "LedgerRecord":
        """A record for ``path`` (now, its sha256) with what its ``<path>.json`` sidecar knows, if present."""
        path = Path(path)
        rec = cls(
            time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            file=str(path.resolve()),
            sha256=sha256_file(path),
            message=message,
            competition=competition,
        )
        side = read_sidecar(path)
        runs = side.get("runs", [])
        rec.runs = [str(r) for r in (runs if isinstance(runs, list) else [runs])]
        rec.cv_auc = as_score(side.get("cv_auc"))
        rec.tta = side.get("tta") if isinstance(side.get("tta"), int) else None
        rec.folds = side.get("folds")
        rec.ensemble = side.get("ensemble") if isinstance(side.get("ensemble"), str) else None
        return rec

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LedgerRecord":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def as_score(v: Any) -> float | None:
    """A score or AUC as a float, or None (Kaggle sends scores as strings, empty until scored)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``<path>.json`` written by ``hcd predict`` (runs, folds, tta, ensemble, cv_auc), or {} if absent/bad."""
    side = Path(f"{path}.json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def append_record(ledger: str | os.PathLike[str], record: LedgerRecord) -> None:
    """Append one line with a single O_APPEND write, so concurrent appends never interleave."""
    ledger = Path(ledger)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = (record.to_json() + "\n").encode("utf-8")
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(ledger: str | os.PathLike[str]) -> list[LedgerRecord]:
    """All records, oldest first; [] when the ledger does not exist yet."""
    ledger = Path(ledger)
    if not ledger.is_file():
        return []
    out = []
    for n, line in enumerate(ledger.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(LedgerRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{ledger} line {n} is not a ledger record ({exc}); fix or remove that line")
    return out


def write_ledger(ledger: str | os.PathLike[str], records: list[LedgerRecord]) -> None:
    """Rewrite the whole ledger atomically (used when scores arrive)."""
    atomic_write_text(ledger, "".join(r.to_json() + "\n" for r in records))
