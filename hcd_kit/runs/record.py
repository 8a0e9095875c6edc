"""What ``hcd train`` records beside a run: its config, plan, split, data folder, environment and histories.

The one writer of ``RUN/config.toml`` (the resolved training config), ``RUN/plan.json`` (the folds the run was
asked for, which ``--resume`` continues), ``RUN/folds.csv`` (the split it was trained on), ``RUN/data.json``
(the data folder and the fingerprint of its packed train store), ``RUN/environment.json`` (device, precision
and why), ``RUN/budget.json`` (its time plan), ``RUN/pseudo.json`` (the pseudo-label file it trains with) and
each fold's ``history.csv``; and the reader of ``data.json``, through which ``hcd predict`` and
``hcd report`` find the run's data without ``--data-dir``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hcd_kit.config import dump_toml
from hcd_kit.damage import damaged, first_line, read_json
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text
from hcd_kit.layout import HISTORY_COLUMNS, DataLayout, RunLayout

DEFAULT_DATA_DIR = Path("data")  # where a run without data.json (and a command without --data-dir) looks


def record_run(cfg: Any, data: DataLayout, run: RunLayout, wanted: list[int]) -> None:
    """Write the run's split, resolved config (a dataclass), data folder and plan (what ``--resume`` continues)."""
    run.root.mkdir(parents=True, exist_ok=True)
    record_split(data, run)
    dump_toml(cfg, run.config)
    record_data(data, run)
    folds = sorted(set(run.planned_folds() or []) | set(wanted))
    atomic_write_text(run.plan, json.dumps({"folds": folds}) + "\n")


def record_split(data: DataLayout, run: RunLayout) -> None:
    """Keep the split beside the run: OOF scores only mean something against the split they came from."""
    split = data.folds_csv.read_bytes()
    if run.folds.is_file() and run.folds.read_bytes() != split:
        raise ConfigError(
            f"{run.folds} differs from {data.folds_csv}: this run was trained on another split; "
            "use a new --run-dir (or restore the original folds.csv)"
        )
    atomic_write_bytes(run.folds, split)


def _train_fingerprint(data: DataLayout) -> str | None:
    from hcd_kit.data.store import read_manifest

    record = read_manifest(data.packed_dir).get("train")
    return record.fingerprint if record is not None else None


def record_data(data: DataLayout, run: RunLayout) -> None:
    """``RUN/data.json``: the data folder (absolute) and its packed train store's fingerprint."""
    atomic_write_text(
        run.data,
        json.dumps({"data_dir": str(data.root.resolve()), "train_fingerprint": _train_fingerprint(data)}, indent=1)
        + "\n",
    )


def _recorded(run: RunLayout, fix: str) -> dict | None:
    """``RUN/data.json`` as a dict with a ``data_dir``; None for a run without one; ``damaged`` otherwise."""
    try:
        info = read_json(run.data, fix)
    except FileNotFoundError:
        return None
    if not isinstance(info.get("data_dir"), str) or not info["data_dir"]:
        raise damaged(run.data, "no data_dir in it", fix)
    return info


def retrain_fold(run: RunLayout, fold: int) -> str:
    """The fix for a damaged file of a trained fold (``best.pt``, ``oof.csv``): the command that trains it again."""
    try:
        info = _recorded(run, "")
    except DataError:
        info = None
    data = info["data_dir"] if info else "DIR"
    return (
        f"delete {run.fold_dir(fold)} and train that fold again: "
        f"`hcd train --data-dir {data} --run-dir {run.root} --fold {fold} --resume`"
    )


def run_data_dir(
    run_dir: str | os.PathLike[str],
    given: str | os.PathLike[str] | None,
    warn: Callable[[str], None] = lambda line: None,
) -> Path:
    """The data folder a command on ``run_dir`` uses: ``given`` (--data-dir) if any, else the one the run
    trained on (``RUN/data.json``, if it still exists), else ``./data``. ``warn`` hears, in one line, when the
    packed train store there changed since the run trained (its OOF ids and patches may no longer match).
    A damaged ``data.json`` is a one-line DataError: pass --data-dir."""
    if given is not None:
        return Path(given)
    run = RunLayout.of(run_dir)
    info = _recorded(run, "pass --data-dir DIR (the data folder the run trained on)")
    if info is None:  # a run from before hcd recorded it: the old default
        return DEFAULT_DATA_DIR
    folder = Path(info["data_dir"])
    if not folder.is_dir():
        warn(f"{run.data} names {folder}, which no longer exists; using ./{DEFAULT_DATA_DIR} (pass --data-dir)")
        return DEFAULT_DATA_DIR
    now = _train_fingerprint(DataLayout.of(folder))
    if info.get("train_fingerprint") and now and now != info["train_fingerprint"]:
        warn(
            f"the packed train store in {folder} changed since {run.root} trained on it (another fingerprint); "
            "its OOF rows and patches may not match the run"
        )
    return folder


def write_budget_record(run: RunLayout, record: dict[str, Any]) -> None:
    """``RUN/budget.json``: the time plan the run was started with (speeds, epochs, seconds), and when."""
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run.budget, json.dumps({**record, "planned_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n"
    )


def read_budget_record(run: RunLayout) -> dict[str, Any]:
    """``RUN/budget.json`` as a dict; {} when it is missing or damaged (the run's time is then measured afresh)."""
    try:
        record = json.loads(run.budget.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    numbers = isinstance(record, dict) and all(
        isinstance(record[k], (int, float)) and not isinstance(record[k], bool)
        for k in ("predict_s", "epoch_s")
        if k in record
    )
    return record if numbers else {}


def write_pseudo_record(run: RunLayout, record: dict[str, Any]) -> None:
    """``RUN/pseudo.json``: the pseudo-label file a run trains with (path, sha256, counts), written once."""
    atomic_write_json(run.pseudo, record)


def read_pseudo_record(run: RunLayout) -> dict[str, Any] | None:
    """``RUN/pseudo.json``, None when the run has none; a one-line DataError when it is damaged."""
    try:
        record = json.loads(run.pseudo.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{run.pseudo} is unreadable ({first_line(exc)}); restore it or use a new --run-dir") from None
    if not isinstance(record, dict) or not {"file", "sha256"} <= record.keys():
        raise DataError(f"{run.pseudo} is not a pseudo-label record; restore it or use a new --run-dir")
    return record


def record_environment(run: RunLayout, info: dict[str, Any]) -> None:
    """``RUN/environment.json``: where the run trained and why in that precision (``hcd report`` shows it)."""
    atomic_write_text(
        run.environment, json.dumps({**info, "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n"
    )


def write_history(path: Path, history: list[dict]) -> None:
    """One fold's ``history.csv`` (``HISTORY_COLUMNS``), written atomically."""
    with atomic_open(path, "w", newline="") as fh:
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(fh, index=False)
