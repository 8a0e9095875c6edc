"""The report's Evaluations section: one row per ``RUN/evaluations/<name>.json`` that ``hcd evaluate`` wrote.

``evaluation_rows(run_dir)`` turns the records (read by ``hcd_kit.runs.evaluation``) into the cells of one
table, a damaged file into a note::

    header, rows, note = evaluation_rows("runs/r18")
"""

from __future__ import annotations

import os
from typing import Any

from hcd_kit.report.data import num
from hcd_kit.runs.evaluation import read_evaluations

HEADER = [
    "name",
    "data folder",
    "patches (positive)",
    "AUC [95 % CI]",
    "fold AUCs",
    "TTA",
    "threshold",
    "accuracy",
    "sensitivity",
    "specificity",
    "Brier",
    "ECE",
    "mean predicted / observed",
    "seen in training",
    "evaluated",
]


def _get(record: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        record = record.get(k) if isinstance(record, dict) else None
    return record


def _auc(record: dict[str, Any]) -> str:
    lo, hi = (_get(record, "auc_ci") or [None, None])[:2]
    return num(_get(record, "auc")) + (f" [{num(lo)}, {num(hi)}]" if lo is not None and hi is not None else "")


def _overlap(record: dict[str, Any]) -> str:
    overlap = _get(record, "overlap") or {}
    if not overlap.get("checked"):
        return "not checked"
    if not overlap.get("ids"):
        return "none"
    unseen = _get(record, "unseen")
    rest = f"; AUC {_auc(unseen)} on the {unseen.get('n')} unseen" if isinstance(unseen, dict) else ""
    return f"{overlap['ids']} patches{rest}"


def evaluation_row(record: dict[str, Any]) -> list[str]:
    folds = _get(record, "fold_auc") or {}
    cal = _get(record, "calibration") or {}
    at = _get(record, "at_threshold") or {}
    threshold = _get(record, "threshold")
    return [
        str(record.get("name", "")),
        str(record.get("data_dir", "–")),
        f"{record.get('n')} ({record.get('positives', '–')})",
        _auc(record),
        ", ".join(f"{k}: {num(v)}" for k, v in folds.items()) or "–",
        str(record.get("tta", "–")),
        num(threshold) + (f" ({record['threshold_source']})" if record.get("threshold_source") else ""),
        num(at.get("accuracy"), 3),
        num(at.get("sensitivity"), 3),
        num(at.get("specificity"), 3),
        num(cal.get("brier")),
        num(cal.get("ece")),
        f"{num(cal.get('mean_prob'), 3)} / {num(cal.get('observed_rate'), 3)}",
        _overlap(record),
        str(record.get("created", "–")),
    ]


def evaluation_rows(run_dir: str | os.PathLike[str]) -> tuple[list[str], list[list[str]], str | None]:
    """The table's header, one row per evaluation (by name), and a note naming damaged files (None if none)."""
    records, notes = read_evaluations(run_dir)
    rows = []
    for record in records:
        try:
            rows.append(evaluation_row(record))
        except (TypeError, ValueError, AttributeError):
            notes.append(f"{record['file']} is not an evaluation record; run `hcd evaluate` again with --force")
    return HEADER, rows, " ".join(notes) or None
