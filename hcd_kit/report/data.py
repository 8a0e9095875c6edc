"""Everything the report says about a run, read from its folder (and the data folder and ledger beside it).

``collect(run_dir, data_dir, ledger)`` returns a ``RunData``: the resolved config, the environment, the
out-of-fold predictions with and without test-time augmentation, each fold's history and training time,
and the submissions made from the run. Nothing here draws or renders; a part that cannot be read becomes a
note in ``RunData.notes`` (keyed by section) instead of an error, except a folder that is not a run at all.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.metrics import roc_auc
from hcd_kit.runs.cv import CvReport, cv_report, read_histories
from hcd_kit.runs.oof import read_tta_oof


@dataclass
class FoldTime:
    fold: int
    seconds: float
    epochs: int  # epochs logged (over every session of a resumed fold)
    sessions: int  # 1, or more when the fold was resumed


@dataclass
class Submission:
    file: str
    in_run: bool  # the file lies in the run folder (else a blend that names the run)
    time: str | None = None
    message: str | None = None
    status: str | None = None
    public_score: float | None = None
    private_score: float | None = None
    cv_auc: float | None = None
    tta: int | None = None
    runs: int = 1


@dataclass
class RunData:
    run: RunLayout
    config: dict[str, Any]
    kind: str  # "train" or "probe"
    cv: CvReport
    tta: dict[int, pd.DataFrame]  # views -> oof_tta{views}.csv
    histories: dict[int, pd.DataFrame]
    times: list[FoldTime]
    submissions: list[Submission]
    environment: list[tuple[str, str]]
    notes: dict[str, str] = field(default_factory=dict)  # section id -> why it is short or empty

    @property
    def config_rows(self) -> list[tuple[str, str]]:
        return flatten(self.config)

    @property
    def pooled(self) -> pd.DataFrame:
        return self.cv.oof


def flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"augment": {"color": 0.1}}`` -> ``[("augment.color", "0.1")]``: one row per leaf, tables last."""
    rows, nested = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            nested += flatten(value, f"{prefix}{key}.")
        else:
            rows.append(
                (
                    f"{prefix}{key}",
                    json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value),
                )
            )
    return rows + nested


def read_run_config(run: RunLayout) -> dict[str, Any]:
    if not run.root.is_dir():
        raise DataError(f"run folder {run.root} not found; pass the --run-dir of a `hcd train` or `hcd probe` run")
    if not run.config.is_file():
        raise ConfigError(f"{run.config} not found; --run-dir must be a run folder of `hcd train` or `hcd probe`")
    return read_toml(run.config)


def tta_frames(run: RunLayout) -> tuple[dict[int, pd.DataFrame], list[str]]:
    """Every readable ``oof_tta{n}.csv`` of the run, by its number of views, and why others were left out."""
    out, skipped = {}, []
    for path in sorted(run.root.glob("oof_tta*.csv")):
        m = re.fullmatch(r"oof_tta(\d+)\.csv", path.name)
        if m:
            try:
                out[int(m.group(1))] = read_tta_oof(run.root, int(m.group(1)))
            except DataError as exc:
                skipped.append(f"left out: {exc}")
    return out, skipped


def num(x: float | None, digits: int = 4) -> str:
    """A figure for the page: "n/a" for a missing or non-finite one."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def auc_rows(cv: CvReport, tta: dict[int, pd.DataFrame]) -> tuple[list[str], list[list[str]]]:
    """The OOF AUC table: header, then one row per fold and a pooled row (1 view, then each TTA file)."""
    views = sorted(tta)
    header = ["fold", "n", "positives", "AUC 1 view", *[f"AUC TTA x{v}" for v in views]]

    rows = []
    for f in cv.folds:
        extra = []
        for v in views:
            part = tta[v][tta[v]["fold"] == f.fold]
            extra.append(num(roc_auc(part["label"], part["prob"])) if len(part) else "–")
        rows.append([str(f.fold), f"{f.n:,}", f"{f.positives:,}", num(f.auc), *extra])
    pooled = [num(roc_auc(tta[v]["label"], tta[v]["prob"])) for v in views]
    rows.append(["pooled", f"{cv.n:,}", f"{cv.positives:,}", num(cv.overall_auc), *pooled])
    return header, rows


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) fold (\d+)(:| epoch (\d+)/\d+:) ?(.*)$")


def fold_times(run: RunLayout) -> list[FoldTime]:
    """Wall time per fold from ``train.log``: each session runs from its "fold K: N train / M val" (or
    "resuming") line to its last "fold K epoch" line; sessions of a resumed fold are summed."""
    if not run.log.is_file():
        return []
    spans: dict[int, list[list[datetime]]] = {}
    epochs: dict[int, int] = {}
    fresh: dict[int, bool] = {}  # a session started and no epoch logged yet
    for line in run.log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        when, k = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"), int(m.group(2))
        if m.group(4) is not None:  # an epoch line closes the current session so far
            if spans.get(k):
                spans[k][-1][1] = when
            epochs[k], fresh[k] = epochs.get(k, 0) + 1, False
        elif (" train / " in m.group(5) or m.group(5).startswith("resuming")) and not fresh.get(k):
            spans.setdefault(k, []).append([when, when])  # ("resuming" then "N train": one session)
            fresh[k] = True
    out = []
    for k in sorted(spans):
        if epochs.get(k):
            seconds = sum((b - a).total_seconds() for a, b in spans[k])
            out.append(FoldTime(k, float(seconds), epochs[k], len(spans[k])))
    return out


def probe_seconds(run: RunLayout) -> float | None:
    try:
        return float(json.loads((run.root / "probe.json").read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(cfg: dict[str, Any], data_dir: Path, run: RunLayout) -> list[tuple[str, str]]:
    """Versions, the accelerators of this machine, where the run trained and the packed store's manifest."""
    import torch

    rows = [
        ("hcd-kit", _version("hcd-kit")),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("timm", _version("timm")),
        ("numpy", _version("numpy")),
        ("torch CUDA build", torch.version.cuda or "none"),
    ]
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    rows.append(("GPUs (this machine)", ", ".join(gpus) or "none"))
    if run.log.is_file():
        first = next(
            (
                ln
                for ln in run.log.read_text(encoding="utf-8", errors="replace").splitlines()
                if " train " in ln and " on " in ln
            ),
            None,
        )
        if first:
            rows.append(("training (train.log)", first[20:]))
    rows.append(("run device setting", str(cfg.get("device", "–"))))
    try:  # RUN/environment.json: where the run trained, in which precision and why
        trained = json.loads(run.environment.read_text(encoding="utf-8"))
        rows.append(("precision (training)", f"{trained['precision']} ({trained['precision_reason']})"))
        rows.append(
            (
                "CPU (training)",
                f"{trained['cpu_isa']}, {'native' if trained['cpu_bf16_native'] else 'no native'} "
                f"bf16, {trained['threads']} thread(s)",
            )
        )
    except (OSError, ValueError, KeyError, TypeError):  # a run from before hcd recorded it
        pass
    packed = DataLayout.of(data_dir).packed
    try:
        manifest = json.loads(packed.manifest.read_text(encoding="utf-8"))
        rows.append(
            ("packed store", f"{packed.root} (format {manifest.get('format')}, created {manifest.get('created')})")
        )
        for split, rec in (manifest.get("splits") or {}).items():
            rows.append(
                (
                    f"packed {split}",
                    f"{rec.get('count')} patches, positives {rec.get('positives')}, "
                    f"fingerprint {str(rec.get('fingerprint'))[:16]}…",
                )
            )
    except (OSError, ValueError, AttributeError):
        rows.append(("packed store", f"none at {packed.root}"))
    return rows


def submissions(run: RunLayout, ledger: Path) -> tuple[list[Submission], str | None]:
    """The ledger's records of files in the run folder or blends naming it, then unsubmitted files in it."""
    from hcd_kit.kaggle.ledger import read_ledger

    root = run.root.resolve()
    note = None
    try:
        records = read_ledger(ledger)
    except DataError as exc:
        records, note = [], f"ledger unreadable: {exc}"
    if not ledger.is_file():
        note = f"no ledger at {ledger} (pass --ledger FILE): only files in the run folder are listed"
    out, seen = [], set()
    for r in records:
        in_run = Path(r.file).resolve().parent == root
        if in_run or any(Path(x).resolve() == root for x in r.runs):
            out.append(
                Submission(
                    r.file,
                    in_run,
                    r.time,
                    r.message,
                    r.status,
                    r.public_score,
                    r.private_score,
                    r.cv_auc,
                    r.tta,
                    max(1, len(r.runs)),
                )
            )
            seen.add(str(Path(r.file).resolve()))
    for path in sorted(run.root.glob("*.csv")):
        if path.name.startswith("submission") and str(path.resolve()) not in seen:
            out.append(Submission(str(path), True, status="not submitted"))
    return out, note


def collect(
    run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], ledger: str | os.PathLike[str]
) -> RunData:
    run = RunLayout.of(run_dir)
    cfg = read_run_config(run)
    kind = "probe" if cfg.get("kind") == "probe" else "train"
    cv = cv_report(run.root)
    notes: dict[str, str] = {}
    tta, skipped = tta_frames(run)
    if cv.warnings or skipped:
        notes["oof-auc"] = " ".join(cv.warnings + skipped)
    histories = read_histories(run.root)
    if not histories:
        notes["learning-curves"] = (
            "a probe run has no epochs: `hcd probe` fits a linear head per fold"
            if kind == "probe"
            else "no fold*/history.csv in the run folder"
        )
    times = fold_times(run)
    if not times:
        secs = probe_seconds(run)
        notes["training-time"] = (
            f"probe fitted in {secs:.1f} s (probe.json); no per-fold log"
            if secs is not None
            else "no fold timings in train.log"
        )
    subs, note = submissions(run, Path(ledger))
    if note:
        notes["submissions"] = note
    return RunData(run, cfg, kind, cv, tta, histories, times, subs, environment(cfg, Path(data_dir), run), notes)
