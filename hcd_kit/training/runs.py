"""The run folder's bookkeeping: resolved config, plan, recorded split, per-fold outputs, log and summary.

One writer for each file ``hcd train`` keeps beside a run (see ``hcd_kit.layout.RunLayout``):
``config.toml`` (the resolved ``TrainConfig``), ``plan.json`` (the folds the run was asked for, which
``--resume`` continues), ``folds.csv`` (the split it was trained on), ``train.log``, and per fold
``history.csv`` and ``oof.csv``. It also decides what a run folder allows: no silent overwrite of a started
fold, no mixing of settings or splits in one folder, and which folds are already finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hcd_kit.config import dump_toml, load_config, read_toml, to_dict
from hcd_kit.console import console
from hcd_kit.data.store import PackedStore
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_open, atomic_write_bytes, atomic_write_text
from hcd_kit.layout import HISTORY_COLUMNS, DataLayout, RunLayout
from hcd_kit.metrics import roc_auc
from hcd_kit.training.checkpoint import FoldState, read_fold_state
from hcd_kit.training.config import RUNTIME_KEYS, TrainConfig

@dataclass
class FoldResult:
    fold: int
    best_auc: float
    best_epoch: int  # 1-based
    epochs_run: int
    skipped_steps: int
    status: str  # "trained" or "already finished"


def resolve_config(
    config_path: str | os.PathLike[str] | None,
    overrides: dict,
    run_dir: str | os.PathLike[str] | None,
    resume: bool,
    recipe: str | None = None,
) -> tuple[TrainConfig, Path]:
    """Defaults <- recipe <- TOML <- flags, and the run folder (``runs/<model>`` unless given).

    With no ``recipe`` the device's default is used (``cpu`` on a CPU, ``t4x2-fast`` on CUDA; see
    ``recipes.default_recipe``). ``--resume`` without ``--config`` starts from the run's own ``config.toml``
    (recipe already applied), so the command that resumes needs no more flags than ``--run-dir`` and ``--resume``.
    """
    from hcd_kit.device import resolve_device
    from hcd_kit.training.recipes import default_recipe, load_recipe

    name = recipe or default_recipe(resolve_device(overrides.get("device") or "auto").type)
    chosen = load_recipe(name)
    if chosen.is_blend:
        raise ConfigError(f"recipe '{name}' is a blend: train it with `hcd train --recipe {name}`, "
                          "which trains one run per member")
    cfg = load_config(TrainConfig, config_path, {**overrides, "recipe": chosen.name}, base=chosen.train)
    run = Path(run_dir) if run_dir else Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.model)
    saved = RunLayout.of(run).config
    if resume and config_path is None and saved.is_file():  # the run's recorded settings, img_size included
        cfg = load_config(TrainConfig, saved, overrides)
        if recipe is not None and cfg.recipe is not None and chosen.name != cfg.recipe:
            raise ConfigError(f"{run} was started with --recipe {cfg.recipe}; resume it without --recipe "
                              f"(or start another --run-dir for {recipe})")
    else:
        chosen_keys = {k for k, v in overrides.items() if v is not None}
        chosen_keys |= set(read_toml(config_path)) if config_path is not None else set()
        cfg = _backbone_defaults(cfg, chosen_keys)
    return cfg, run


def _backbone_defaults(cfg: TrainConfig, chosen: set[str]) -> TrainConfig:
    """A foundation model's own input size, and its pretrained weights, unless a flag or the config file chose
    otherwise (a recipe's values do not count: recipes are written for ImageNet CNNs)."""
    from hcd_kit.backbones import resolve

    backbone = resolve(cfg.model)
    size = backbone.input_size
    if "img_size" not in chosen and size is not None and size != cfg.img_size:
        console.print(f"note: --img-size {size} ({backbone.label}'s input size; patches are upscaled on the device)",
                      soft_wrap=True)
        cfg = dataclasses.replace(cfg, img_size=size)
    if "pretrained" not in chosen and backbone.kind != "timm" and not cfg.pretrained:
        console.print(f"note: --pretrained ({backbone.label} is used for its weights; --no-pretrained trains the "
                      "architecture from scratch)", soft_wrap=True)
        cfg = dataclasses.replace(cfg, pretrained=True)
    return cfg


def read_split(layout: DataLayout, store: PackedStore) -> pd.DataFrame:
    """``DIR/folds.csv`` aligned with the store: one (id, fold, row) per packed image."""
    from hcd_kit.data.folds import read_folds

    if not layout.folds_csv.is_file():
        raise DataError(f"no folds file {layout.folds_csv}; run `hcd folds --data-dir {layout.root}` first")
    return read_folds(layout.folds_csv, ids=store.ids).assign(row=np.arange(len(store)))


def check_folds(wanted: Sequence[int] | str | None, n_folds: int) -> list[int]:
    if wanted is None or wanted == "all":
        return list(range(n_folds))
    bad = [f for f in wanted if not 0 <= f < n_folds]
    if bad:
        raise ConfigError(f"--fold {bad[0]} is out of range: folds.csv has folds 0..{n_folds - 1}")
    return list(dict.fromkeys(wanted))


def check_run_dir(cfg: TrainConfig, layout: RunLayout, folds: list[int], resume: bool) -> None:
    """Refuse to mix settings in one run folder or to overwrite a fold silently."""
    started = [f for f in folds if layout.last(f).exists() or layout.best(f).exists()]
    if started and not resume:
        raise ConfigError(
            f"{layout.fold_dir(started[0])} already holds a trained fold; pass --resume to continue "
            f"(finished folds are skipped) or choose another --run-dir"
        )
    if layout.config.is_file() and layout.folds_present():
        old, new = read_toml(layout.config), to_dict(cfg)
        for key in new:
            if key not in RUNTIME_KEYS and key in old and old[key] != new[key]:
                raise ConfigError(
                    f"{layout.config} has {key} = {old[key]!r} but this run asks for {new[key]!r}; "
                    "use the same settings in one --run-dir, or a new --run-dir"
                )


def record_run(cfg: TrainConfig, data: DataLayout, run: RunLayout, wanted: list[int]) -> None:
    """Write the run's split, resolved config and plan (what a later ``--resume`` continues)."""
    run.root.mkdir(parents=True, exist_ok=True)
    _record_split(data, run)
    dump_toml(cfg, run.config)
    folds = sorted(set(run.planned_folds() or []) | set(wanted))
    atomic_write_text(run.plan, json.dumps({"folds": folds}) + "\n")


def _record_split(data: DataLayout, run: RunLayout) -> None:
    """Keep the split beside the run: OOF scores only mean something against the split they came from."""
    split = data.folds_csv.read_bytes()
    if run.folds.is_file() and run.folds.read_bytes() != split:
        raise ConfigError(
            f"{run.folds} differs from {data.folds_csv}: this run was trained on another split; "
            "use a new --run-dir (or restore the original folds.csv)"
        )
    atomic_write_bytes(run.folds, split)


def record_environment(run: RunLayout, device, choice, threads: int) -> None:
    """``RUN/environment.json``: where the run trained and why in that precision (``hcd report`` shows it)."""
    import platform

    import torch

    from hcd_kit.device import cpu_caps

    caps = cpu_caps()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if device.type == "cuda" else []
    atomic_write_text(run.environment, json.dumps({
        "device": str(device), "gpus": gpus, "precision": choice.name, "precision_reason": choice.reason,
        "cpu_isa": caps.isa, "cpu_bf16_native": caps.bf16, "threads": threads, "torch": torch.__version__,
        "python": platform.python_version(), "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=1) + "\n")


class RunLog:
    """Lines to the console and appended to ``RUN/train.log``; silent on ranks other than 0.

    ``header`` (the run's first line: model, device, precision and why) is written before the first message, or
    by ``start()``, so a run refused before it logs anything (a too-small --time-budget) leaves no file behind.
    """

    def __init__(self, path: Path, enabled: bool, header: str | None = None) -> None:
        self.path, self.enabled, self.header = path, enabled, header

    def start(self) -> None:
        """Write the header now, if it is still pending."""
        header, self.header = self.header, None
        if header is not None:
            self(header)

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        self.start()
        console.print(message, soft_wrap=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:  # a log is appended, not replaced
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def fold_result(fold: int, state: FoldState, status: str) -> FoldResult:
    skipped = sum(int(h["skipped_steps"]) for h in state.history)
    return FoldResult(fold, state.best_auc, state.best_epoch, state.epoch, skipped, status)


def finished(run: RunLayout, fold: int) -> FoldResult | None:
    """The fold's result if its ``last.pt`` says it is finished, else None."""
    path = run.last(fold)
    if not path.is_file():
        return None
    state = read_fold_state(path)
    return fold_result(fold, state, "already finished") if state.finished else None


def write_summary(results: dict[int, FoldResult], run: RunLayout, log: RunLog) -> None:
    for r in results.values():
        log(f"fold {r.fold}: best val AUC {r.best_auc:.4f} "
            f"(epoch {r.best_epoch}/{r.epochs_run}, {r.skipped_steps} skipped steps)")
    from hcd_kit.inference import read_run_oof  # the one oof.csv reader

    pooled = read_run_oof(run.root)
    if pooled is not None:
        auc = roc_auc(pooled["label"], pooled["prob"])
        log(f"CV AUC (pooled OOF of {pooled['fold'].nunique()} fold(s), {len(pooled)} images): {auc:.4f}")


def write_history(path: Path, history: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as fh:
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(fh, index=False)
