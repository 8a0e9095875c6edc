"""The local ledger of what was submitted: ``submissions/ledger.jsonl``, one JSON record per submission.

``ledger_path`` finds it: ``--ledger FILE`` when given, else ``submissions/ledger.jsonl`` of the nearest folder,
from the current one up, that has a ``submissions/`` folder (the project's, from any of its subfolders).

Each record says when, which file (path and sha256), the message, the runs and CV AUC behind it (from the
``<file>.json`` sidecar ``hcd predict`` writes), the Kaggle ref, status and scores, and for a failed
submission Kaggle's reason (``error_description``), and for a file made by ``hcd kernel run`` the kernel's
ref and version (``kernel``, ``kernel_version``). Appends are one ``O_APPEND`` write of one line; score
updates rewrite the file atomically. Credentials never reach it: records are built from named fields only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hcd_kit.damage import first_line
from hcd_kit.errors import DataError
from hcd_kit.fsutil import append_text, atomic_write_text, sha256_file
from hcd_kit.runs.submission import read_sidecar

DEFAULT_LEDGER = Path("submissions") / "ledger.jsonl"


def ledger_path(ledger: str | os.PathLike[str] | None) -> Path:
    """``ledger`` (``--ledger FILE``) when given, else the project's ``submissions/ledger.jsonl``: that of the
    nearest folder, from the current one up, that holds a ``submissions/`` folder (the walk stops at the top
    of a git checkout), so every subfolder of a project shares one ledger; with none, the current folder's."""
    if ledger is not None:
        return Path(ledger)
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_LEDGER.parent).is_dir():
            return DEFAULT_LEDGER if folder == here else folder / DEFAULT_LEDGER
        if (folder / ".git").exists():
            break
    return DEFAULT_LEDGER


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
    error_description: str | None = None  # why Kaggle could not score it (ERROR); absent in older ledgers
    kernel: str | None = None  # owner/slug of the Kaggle kernel that wrote the file (`hcd kernel run`)
    kernel_version: int | None = None  # that kernel's version

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], message: str, competition: str) -> LedgerRecord:
        """A record for ``path`` (now, its sha256) with what its ``<path>.json`` sidecar knows, if present."""
        path = Path(path)
        rec = cls(
            time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
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
    def from_dict(cls, d: dict[str, Any]) -> LedgerRecord:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def as_score(v: Any) -> float | None:
    """A score or AUC as a float, or None (Kaggle sends scores as strings, empty until scored)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def append_record(ledger: str | os.PathLike[str], record: LedgerRecord) -> None:
    """Append one line with a single O_APPEND write, so concurrent appends never interleave."""
    append_text(ledger, record.to_json() + "\n", sync=True)


def read_ledger(ledger: str | os.PathLike[str]) -> list[LedgerRecord]:
    """All records, oldest first; [] when the ledger does not exist yet."""
    ledger = Path(ledger)
    if not ledger.is_file():
        return []
    out = []
    # bytes that are not UTF-8 (a damaged copy) spoil only their own line, which is then named below
    for n, line in enumerate(ledger.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(LedgerRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, wrong fields
            raise DataError(
                f"{ledger} line {n} is not a ledger record ({first_line(exc)}); fix or remove that line"
            ) from None
    return out


def write_ledger(ledger: str | os.PathLike[str], records: list[LedgerRecord]) -> None:
    """Rewrite the whole ledger atomically (used when scores arrive)."""
    atomic_write_text(ledger, "".join(r.to_json() + "\n" for r in records))


def update_records(ledger: str | os.PathLike[str], updated: list[LedgerRecord]) -> None:
    """Replace the ledger's records that have the ``ref`` of one in ``updated`` by it; keep all others."""
    by_ref = {r.ref: r for r in updated}
    write_ledger(ledger, [by_ref.get(r.ref, r) if r.ref is not None else r for r in read_ledger(ledger)])
