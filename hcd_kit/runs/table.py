"""Every run in one table: what ``hcd runs`` prints, exports (JSON, CSV) and writes as ``runs/index.html``.

``find_runs(dirs)`` finds the run folders: a folder given that is a run (it has ``config.toml``, ``plan.json``,
``train.log`` or a ``fold<k>/`` folder), else its sub-folders that are runs, and one level further for a
folder that only holds runs (a blend recipe's ``runs/<blend>/<member>``). ``runs_table(runs, submissions)``
gives one dict per run with the keys of ``COLUMNS``; every value is a str, int, float or None, so the rows
survive a JSON round trip unchanged. Where each value comes from:

    kind, model, recipe, img_size, epochs   RUN/config.toml (kind "probe" from `hcd probe`, else "train")
    folds_done / folds_planned              folds with a fold<k>/oof.csv / RUN/plan.json (else the split's folds)
    cv_auc                                  pooled out-of-fold AUC, 1 view: `hcd cv`'s overall AUC (cv_report)
    tta, cv_auc_tta                         the largest N with RUN/oof_tta{N}.csv (`hcd predict --tta N`), its AUC
    train_s, train_s_from                   training time summed over folds: from train.log's time stamps (each
                                            fold session's first line to its last epoch line), or a probe's
                                            probe.json "seconds"
    public_best, private_best, submissions  the ledger's records whose sidecar names this run (best scores, count)
    report                                  RUN/report.html (`hcd report`) if it exists
    note                                    what is wrong or missing; a broken run is a row with a note, not a crash
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc

COLUMNS = (
    "run",
    "path",
    "kind",
    "model",
    "recipe",
    "img_size",
    "epochs",
    "folds_done",
    "folds_planned",
    "cv_auc",
    "tta",
    "cv_auc_tta",
    "train_s",
    "train_s_from",
    "public_best",
    "private_best",
    "submissions",
    "report",
    "note",
)
DEFAULT_SORT = "cv_auc"
BEST_FIRST = {"cv_auc", "cv_auc_tta", "public_best", "private_best", "submissions", "folds_done"}  # high first
# train.log lines that open a fold session ("fold 0: 32 train / 32 val images") and end an epoch ("fold 0 epoch 1/8:")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) fold (\d+)(: \d+ train / | epoch \d+/\d+: )")


@dataclass(frozen=True)
class Submission:
    """What the table needs of one ledger record (``hcd_kit.kaggle.ledger.LedgerRecord`` has these fields)."""

    runs: list[str]
    public_score: float | None = None
    private_score: float | None = None


# ---------------------------------------------------------------------------------------------- finding runs


def is_run(folder: Path) -> bool:
    run = RunLayout.of(folder)
    return folder.is_dir() and (
        run.config.is_file() or run.plan.is_file() or run.log.is_file() or bool(run.folds_present())
    )


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_runs(dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The run folders in ``dirs`` (see the module doc), each once, in the order found."""
    found: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ConfigError(f"{d} is not a folder; pass run folders or folders that hold runs (default: runs)")
        if is_run(d):
            found.append(d)
            continue
        for child in _children(d):
            if is_run(child):
                found.append(child)
            else:
                found += [g for g in _children(child) if is_run(g)]
    seen, out = set(), []
    for run in found:
        if run.resolve() not in seen:
            seen.add(run.resolve())
            out.append(run)
    return out


def run_name(run: Path, dirs: Sequence[str | os.PathLike[str]]) -> str:
    """``run`` relative to the folder given that holds it (``r18``, ``blend/member``), else its own name."""
    for d in map(Path, dirs):
        try:
            rel = run.resolve().relative_to(Path(d).resolve())
        except ValueError:
            continue
        if rel.parts:
            return rel.as_posix()
    return run.resolve().name


# ---------------------------------------------------------------------------------------------- one row


def _auc_of(path: Path) -> float | None:
    from hcd_kit.runs.oof import read_oof

    df = read_oof(path)
    return finite_or_none(roc_auc(df["label"], df["prob"]))


def _best_tta(run: RunLayout) -> int | None:
    names = (re.fullmatch(r"oof_tta(\d+)\.csv", p.name) for p in run.root.glob("oof_tta*.csv"))
    views = [int(m.group(1)) for m in names if m]
    return max(views) if views else None


def log_seconds(path: Path) -> float | None:
    """Training time in ``train.log``: per fold session, from its "fold K: N train / M val images" line to its
    last "fold K epoch e/E" line, summed over sessions and folds (validation included; set-up and waits not)."""
    if not path.is_file():
        return None
    open_: dict[int, tuple[datetime, datetime | None]] = {}
    total, seen = 0.0, False

    def close(fold: int) -> None:
        nonlocal total, seen
        start, last = open_.pop(fold, (None, None))
        if start is not None and last is not None:
            total, seen = total + (last - start).total_seconds(), True

    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        when, fold = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"), int(m.group(2))
        if m.group(3).startswith(":"):
            close(fold)
            open_[fold] = (when, None)
        elif fold in open_:
            open_[fold] = (open_[fold][0], when)
    for fold in list(open_):
        close(fold)
    return total if seen else None


def _train_seconds(run: RunLayout, kind: str) -> tuple[float | None, str | None]:
    if kind == "probe":
        import json

        try:
            seconds = json.loads((run.root / "probe.json").read_text(encoding="utf-8")).get("seconds")
        except (OSError, ValueError, AttributeError):
            return None, None
        seconds = finite_or_none(seconds) if isinstance(seconds, (int, float)) else None
        return (seconds, "probe.json") if seconds is not None else (None, None)
    seconds = log_seconds(run.log)
    return (seconds, "train.log") if seconds is not None else (None, None)


def _planned(run: RunLayout) -> int | None:
    from hcd_kit.runs.model import expected_folds

    try:
        planned = run.planned_folds()
    except DataError:
        planned = None
    planned = planned if planned is not None else expected_folds(run.root)
    return len(planned) if planned is not None else None


def _scores(run: Path, submissions: Iterable[Submission]) -> tuple[float | None, float | None, int]:
    here = run.resolve()
    public, private, n = [], [], 0
    for s in submissions:
        if any(Path(r).resolve() == here for r in s.runs if r):
            n += 1
            public += [s.public_score] if s.public_score is not None else []
            private += [s.private_score] if s.private_score is not None else []
    return max(public, default=None), max(private, default=None), n


def run_row(run: Path, name: str, submissions: Iterable[Submission] = ()) -> dict[str, Any]:
    """One row of the table for ``run`` (``COLUMNS``); problems go to its ``note``, never raise."""
    from hcd_kit.runs.cv import cv_report

    layout = RunLayout.of(run)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(run=name, path=str(run), note="")
    notes = []
    try:
        cfg = read_toml(layout.config) if layout.config.is_file() else None
    except Exception as exc:  # noqa: BLE001  (a damaged config.toml is this row's note)
        cfg, notes = None, [f"config.toml unreadable ({_first(exc)})"]
    if cfg is None and not notes:
        notes.append("no config.toml")
    cfg = cfg or {}
    row["kind"] = "probe" if cfg.get("kind") == "probe" else ("train" if cfg else None)
    for key in ("model", "recipe", "img_size", "epochs"):
        value = cfg.get(key)
        row[key] = value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    row["folds_planned"] = _planned(layout)
    try:
        report = cv_report(run)
        row["cv_auc"], row["folds_done"] = finite_or_none(report.overall_auc), len(report.folds)
        notes += [w for w in report.warnings if "have no oof.csv" not in w]  # the folds column says so
    except DataError as exc:
        row["folds_done"] = len([k for k in layout.folds_present() if layout.oof(k).is_file()])
        notes.append(_first(exc))
    tta = _best_tta(layout)
    if tta is not None:
        try:
            row["tta"], row["cv_auc_tta"] = tta, _auc_of(layout.oof_tta(tta))
        except DataError as exc:
            notes.append(_first(exc))
    row["train_s"], row["train_s_from"] = _train_seconds(layout, row["kind"] or "train")
    row["public_best"], row["private_best"], row["submissions"] = _scores(run, submissions)
    report_html = layout.root / "report.html"
    row["report"] = str(report_html) if report_html.is_file() else None
    row["note"] = "; ".join(notes)
    return row


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def runs_table(
    runs: Sequence[Path],
    dirs: Sequence[str | os.PathLike[str]] = (),
    submissions: Iterable[Submission] = (),
    sort: str = DEFAULT_SORT,
) -> list[dict[str, Any]]:
    """One row per run (``run_row``), sorted by ``sort`` (``sort_rows``)."""
    check_sort(sort)  # a bad --sort says so before any run is read
    submissions = list(submissions)
    rows = []
    for run in runs:
        name = run_name(run, dirs or [run.parent])
        try:
            rows.append(run_row(run, name, submissions))
        except Exception as exc:  # noqa: BLE001  (a broken run folder is a row with a note, never a crash)
            rows.append(dict.fromkeys(COLUMNS) | {"run": name, "path": str(run), "note": f"unreadable: {_first(exc)}"})
    return sort_rows(rows, sort)


def check_sort(column: str) -> str:
    """The row key ``--sort column`` names (``cv-auc`` is ``cv_auc``); a ConfigError naming the columns if none."""
    key = column.replace("-", "_")
    if key not in COLUMNS:
        raise ConfigError(f"--sort {column!r} is not a column; choose one of {', '.join(COLUMNS)}")
    return key


def sort_rows(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """Rows by ``column``: AUCs, scores and counts best first, the rest ascending; missing values last."""
    key = check_sort(column)

    def absent(r: dict[str, Any]) -> bool:
        return r[key] is None or r[key] == "" or (isinstance(r[key], float) and math.isnan(r[key]))

    present, missing = [r for r in rows if not absent(r)], [r for r in rows if absent(r)]
    numeric = all(isinstance(r[key], (int, float)) for r in present)
    present.sort(key=lambda r: (r[key] if numeric else str(r[key]).lower(), r["run"]))
    if key in BEST_FIRST:
        present.sort(key=lambda r: r[key], reverse=True)  # stable: equal values keep the name order
    return present + missing


# ---------------------------------------------------------------------------------------------- as text


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s")


def _score(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


# header -> how a row shows in it: the printed table and index.html show the same cells
DISPLAY = {
    "run": lambda r: r["run"],
    "kind": lambda r: r["kind"] or "?",
    "model": lambda r: r["model"] or "",
    "recipe": lambda r: r["recipe"] or "",
    "px": lambda r: "" if r["img_size"] is None else str(r["img_size"]),
    "epochs": lambda r: "" if r["epochs"] is None else str(r["epochs"]),
    "folds": lambda r: f"{r['folds_done'] or 0}/{'?' if r['folds_planned'] is None else r['folds_planned']}",
    "CV AUC": lambda r: _score(r["cv_auc"]),
    "TTA AUC": lambda r: "" if r["cv_auc_tta"] is None else f"{r['cv_auc_tta']:.4f} x{r['tta']}",
    "time": lambda r: "" if r["train_s"] is None else _duration(r["train_s"]),
    "public": lambda r: _score(r["public_best"]),
    "private": lambda r: _score(r["private_best"]),
    "subs": lambda r: str(r["submissions"] or 0),
}
NUMERIC = {"px", "epochs", "folds", "CV AUC", "TTA AUC", "time", "public", "private", "subs"}  # right-aligned
TIME_NOTE = (
    "px: input size; TTA AUC: out-of-fold AUC with N views (xN); time: training summed over folds, from "
    "train.log time stamps (each fold session's first line to its last epoch line; a probe's: probe.json)"
)


def cells(row: dict[str, Any]) -> list[str]:
    return [show(row) for show in DISPLAY.values()]
