"""``hcd evaluate``'s files and what it reads from a run: ``RUN/evaluations/<name>.json``, one per labelled folder
the run's fold ensemble was scored on, the ids the run trained on (an evaluation on them is refused), and the
Youden threshold of its out-of-fold predictions.

The record (``evaluation_record``) holds the scores and where they came from; ``hcd report`` lists every one::

    path = new_evaluation_path("runs/r18", "hospital-b")     # refuses an existing name unless force=True
    write_evaluation(path, record)
    records, notes = read_evaluations("runs/r18")            # every evaluation, by name; notes for damaged files
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hcd_kit.choices import TtaViews
from hcd_kit.config import check_choice, read_toml
from hcd_kit.damage import first_line
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_write_json
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.metrics import (
    bootstrap_auc,
    calibration,
    finite_or_none,
    roc_auc,
    threshold_scores,
    youden_threshold,
)

EVALUATIONS = "evaluations"  # RUN/evaluations/<name>.json
FORMAT = 1
CALIBRATION_BINS = 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class EvaluationResult:
    path: Path  # RUN/evaluations/<name>.json
    record: dict[str, Any]  # what the file holds
    images_per_s: float  # patches per second per fold model, all views included (a probe run: embedding them)
    notes: list[str] = field(default_factory=list)


def check_evaluate_options(tta: int, batch_size: int, n_boot: int) -> None:
    check_choice("--tta", tta, TtaViews)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if n_boot < 0:
        raise ConfigError(f"--bootstrap must be >= 0 (0: no interval), got {n_boot}")


def overlap_notes(record: dict[str, Any]) -> list[str]:
    """What the user must know about the overlap of an evaluation (``record["overlap"]``), as lines."""
    overlap = record["overlap"]
    if not overlap["checked"]:
        return [f"overlap with the training data not checked: {overlap['source']}"]
    if not overlap["ids"]:
        return []
    line = f"{overlap['ids']} of the {record['n']} patches were in the training data ({overlap['source']})"
    unseen = record.get("unseen")
    if not unseen:
        return [line + "; none is unseen"]
    auc = "n/a" if unseen["auc"] is None else f"{unseen['auc']:.4f}"
    return [line + f"; on the {unseen['n']} others alone: AUC {auc}"]


def evaluations_dir(run_dir: str | os.PathLike[str]) -> Path:
    return RunLayout.of(run_dir).root / EVALUATIONS


def evaluation_name(name: str | None, data_dir: str | os.PathLike[str]) -> str:
    """``--name`` checked, or the data folder's own name made into one (``hospital b`` -> ``hospital-b``)."""
    if name is None:
        made = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data_dir).resolve().name).strip("-._")
        return made[:100] or "evaluation"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit; got {name!r}"
        )
    return name


def new_evaluation_path(run_dir: str | os.PathLike[str], name: str, force: bool = False) -> Path:
    """``RUN/evaluations/<name>.json``; a one-line ConfigError when it exists and ``force`` is not given."""
    path = evaluations_dir(run_dir) / f"{name}.json"
    if path.exists() and not force:
        raise ConfigError(
            f"{path} exists: {RunLayout.of(run_dir).root} was already evaluated as {name!r}; "
            "pass --force to replace it, or another --name"
        )
    return path


def run_kind(run_dir: str | os.PathLike[str]) -> str:
    """``"probe"`` for a run of ``hcd probe``, else ``"train"``; a one-line ConfigError for a folder that is no run."""
    path = RunLayout.of(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{path} not found; --run-dir must be a run folder written by `hcd train` or `hcd probe`")
    return "probe" if read_toml(path, fix="restore it").get("kind") == "probe" else "train"


def open_labelled(data_dir: str | os.PathLike[str]):
    """``DIR``'s labelled patches (its packed train store, packed from ``train/`` + ``train_labels.csv`` first
    when needed); a one-line DataError for a folder without labelled patches."""
    from hcd_kit.data import open_split
    from hcd_kit.data.store import open_store

    layout = DataLayout.of(data_dir)
    if not layout.root.is_dir():
        raise DataError(f"{layout.root} is not a folder; --data-dir must hold train/*.tif and train_labels.csv")
    packed = layout.packed.images("train").is_file()
    if not packed and not (layout.train_dir.is_dir() and layout.train_labels.is_file()):
        missing = layout.train_labels if layout.train_dir.is_dir() else layout.train_dir
        raise DataError(
            f"{layout.root} has no labelled patches (no {missing.name}): `hcd evaluate` needs the competition "
            "layout, train/*.tif with their labels in train_labels.csv"
        )
    store = open_split(layout.root, "train") if layout.train_dir.is_dir() else open_store(layout.packed_dir, "train")
    if len(store) == 0:
        raise DataError(f"{layout.root} has no labelled patches to evaluate (its train store is empty)")
    return store


def training_ids(run_dir: str | os.PathLike[str]) -> tuple[set[str] | None, str]:
    """Every id the run's fold models trained or validated on, and where that was read: the split it recorded
    (``RUN/folds.csv``), else its folds' ``oof.csv`` ids; pseudo-labelled ids are added. (None, why) when
    the run keeps no record of them."""
    from hcd_kit.data import read_folds, read_pseudo
    from hcd_kit.runs.oof import read_run_oof
    from hcd_kit.runs.record import read_pseudo_record

    run = RunLayout.of(run_dir)
    if run.folds.is_file():
        seen, source = set(read_folds(run.folds)["id"]), str(run.folds)
    elif (oof := read_run_oof(run.root)) is not None:
        seen, source = set(oof["id"]), f"{run.root}/fold*/oof.csv (the run keeps no folds.csv)"
    else:
        return None, f"{run.root} keeps neither folds.csv nor fold*/oof.csv"
    record = read_pseudo_record(run)
    if record is not None and Path(record["file"]).is_file():
        seen |= set(read_pseudo(record["file"])["id"])
        source += f" and {record['file']}"
    return seen, source


def check_overlap(
    run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], ids: np.ndarray, allow: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """A mask of ``ids`` the run never saw, and the overlap for the record. Ids the run trained on are a
    one-line ConfigError unless ``allow``: its scores on them would flatter it."""
    seen, source = training_ids(run_dir)
    ids = np.asarray(ids, dtype=str)
    if seen is None:
        return np.ones(len(ids), bool), {"checked": False, "source": source, "ids": None, "example": None}
    unseen = ~np.isin(ids, np.array(sorted(seen), dtype=str))
    n = int((~unseen).sum())
    example = str(ids[~unseen][0]) if n else None
    if n and not allow:
        raise ConfigError(
            f"{n} of the {len(ids)} patches of {data_dir} are in the data {RunLayout.of(run_dir).root} trained on "
            f"({source}), e.g. {example}; evaluate on patches it never saw, or pass --allow-overlap to score "
            "them anyway (the overlap is reported)"
        )
    return unseen, {"checked": True, "source": source, "ids": n, "example": example}


def oof_threshold(run_dir: str | os.PathLike[str], folds: list[int], tta: int) -> tuple[float, str]:
    """The Youden threshold of the selected folds' pooled out-of-fold predictions, made like the evaluation's:
    ``RUN/oof_tta{tta}.csv`` when it covers those folds, else ``fold*/oof.csv`` (1 view); 0.5 without OOF."""
    from hcd_kit.runs.oof import read_run_oof, read_tta_oof

    run = RunLayout.of(run_dir)
    oof, source = read_tta_oof(run.root, tta) if tta > 1 else None, run.oof_tta(tta).name
    if oof is not None and set(folds) <= set(oof["fold"]):
        oof = oof[oof["fold"].isin(folds)]
    else:
        oof, source = read_run_oof(run.root, folds), "fold*/oof.csv"
    if oof is None or oof["label"].nunique() < 2:
        return 0.5, "0.5 (the run has no out-of-fold predictions with both classes)"
    return youden_threshold(oof["label"], oof["prob"]), source


def _scores(labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_auc(labels, probs, n_boot=n_boot, seed=seed)
    cal = calibration(labels, probs, CALIBRATION_BINS)
    at = threshold_scores(labels, probs, threshold)
    return {
        "n": int(len(labels)),
        "positives": int(np.sum(labels)),
        "auc": finite_or_none(roc_auc(labels, probs)),
        "auc_ci": [finite_or_none(lo), finite_or_none(hi)],
        "at_threshold": {k: (v if isinstance(v, int) else finite_or_none(v)) for k, v in at.items()},
        "calibration": {
            "brier": finite_or_none(cal.brier),
            "ece": finite_or_none(cal.ece),
            "bins": CALIBRATION_BINS,
            "mean_prob": finite_or_none(float(np.mean(probs))) if len(probs) else None,
            "observed_rate": finite_or_none(float(np.mean(labels))) if len(labels) else None,
        },
    }


def evaluation_record(
    labels: np.ndarray,
    probs: np.ndarray,
    fold_probs: dict[int, np.ndarray],
    unseen: np.ndarray,
    *,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    **about: Any,
) -> dict[str, Any]:
    """The JSON record of one evaluation: the ensemble's ``probs`` scored against ``labels`` (AUC with its
    bootstrap 95 % interval, the ``threshold``'s accuracy / sensitivity / specificity, calibration), each
    fold's AUC, and the same scores on the ``unseen`` rows alone when some were seen in training.
    ``about`` (name, run_dir, data_dir, tta, ...) is stored as given."""
    labels, probs = np.asarray(labels, np.int64), np.asarray(probs, np.float64)
    record = {"format": FORMAT, **about, "threshold": threshold, "bootstrap": {"resamples": n_boot, "seed": seed}}
    record.update(_scores(labels, probs, threshold, n_boot, seed))
    record["fold_auc"] = {str(k): finite_or_none(roc_auc(labels, p)) for k, p in fold_probs.items()}
    if not unseen.all() and unseen.any():
        record["unseen"] = _scores(labels[unseen], probs[unseen], threshold, n_boot, seed)
    return record


def write_evaluation(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write one evaluation record (atomically) and return its path."""
    atomic_write_json(path, record)
    return Path(path)


def read_evaluations(run_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ``RUN/evaluations/*.json``, sorted by name; a damaged file is a note, not an error."""
    folder = evaluations_dir(run_dir)
    records, notes = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            notes.append(f"{path} is unreadable ({first_line(exc)}); run `hcd evaluate` again with --force")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("n"), int):
            notes.append(f"{path} is not an evaluation record; run `hcd evaluate` again with --force")
            continue
        records.append({**record, "name": record.get("name") or path.stem, "file": str(path)})
    return records, notes
