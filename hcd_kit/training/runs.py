"""The run folder's bookkeeping: resolved config, plan, recorded split, per-fold outputs, log and summary.

One writer for each file ``hcd train`` keeps beside a run (see ``hcd_kit.layout.RunLayout``):
``config.toml`` (the resolved ``TrainConfig``), ``plan.json`` (the folds the run was asked for, which
``--resume`` continues), ``folds.csv`` (the split it was trained on), ``train.log``, and per fold
``history.csv`` and ``oof.csv``. It also decides what a run folder allows: no silent overwrite of a started
fold, no mixing of settings or splits in one folder, and which folds are already finished.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.config import load_config, read_toml, to_dict
from hcd_kit.console import console
from hcd_kit.data.store import PackedStore
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.metrics import roc_auc
from hcd_kit.runs import record as runs_record
from hcd_kit.runs.log import RunLog
from hcd_kit.runs.oof import read_run_oof
from hcd_kit.runs.state import FoldState
from hcd_kit.training.checkpoint import read_fold_state
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
        raise ConfigError(
            f"recipe '{name}' is a blend: train it with `hcd train --recipe {name}`, which trains one run per member"
        )
    cfg = load_config(TrainConfig, config_path, {**overrides, "recipe": chosen.name}, base=chosen.train)
    run = Path(run_dir) if run_dir else Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.model)
    saved = RunLayout.of(run).config
    if resume and config_path is None and saved.is_file():  # the run's recorded settings, img_size included
        if "model" not in read_toml(saved):  # emptied or cut short: resuming on defaults would train another model
            raise DataError(
                f"{saved} is damaged (it names no model); restore it (train.log's first line names the model "
                "and size) or pass --config with the run's settings"
            )
        cfg = load_config(TrainConfig, saved, overrides)
        if recipe is not None and cfg.recipe is not None and chosen.name != cfg.recipe:
            raise ConfigError(
                f"{run} was started with --recipe {cfg.recipe}; resume it without --recipe "
                f"(or start another --run-dir for {recipe})"
            )
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
        console.print(
            f"note: --img-size {size} ({backbone.label}'s input size; patches are upscaled on the device)",
            soft_wrap=True,
        )
        cfg = dataclasses.replace(cfg, img_size=size)
    if "pretrained" not in chosen and backbone.kind != "timm" and not cfg.pretrained:
        console.print(
            f"note: --pretrained ({backbone.label} is used for its weights; --no-pretrained trains the "
            "architecture from scratch)",
            soft_wrap=True,
        )
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
    started = [f for f in folds if any(p.exists() for p in (layout.last(f), layout.best(f), layout.state(f)))]
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


def record_environment(run: RunLayout, device, choice, threads: int) -> None:
    """``RUN/environment.json`` (``hcd_kit.runs.record``): where the run trained and why in that precision."""
    import platform

    import torch

    from hcd_kit.device import cpu_caps

    caps = cpu_caps()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device.type == "cuda" else []
    runs_record.record_environment(
        run,
        {
            "device": str(device),
            "gpus": gpus,
            "precision": choice.name,
            "precision_reason": choice.reason,
            "cpu_isa": caps.isa,
            "cpu_bf16_native": caps.bf16,
            "threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )


def fold_result(fold: int, state: FoldState, status: str) -> FoldResult:
    skipped = sum(int(h["skipped_steps"]) for h in state.history)
    return FoldResult(fold, state.best_auc, state.best_epoch, state.epoch, skipped, status)


def finished(run: RunLayout, fold: int) -> FoldResult | None:
    """The fold's result if its progress (``state.json``, or an older run's ``last.pt``) says it is finished, else
    None. A finished fold keeps no ``last.pt`` (``checkpoint.save_checkpoint``): its ``state.json`` says so."""
    if not (run.state(fold).is_file() or run.last(fold).is_file()):
        return None
    state = read_fold_state(run.last(fold))
    return fold_result(fold, state, "already finished") if state.finished else None


def write_summary(results: dict[int, FoldResult], run: RunLayout, log: RunLog) -> None:
    for r in results.values():
        log(
            f"fold {r.fold}: best val AUC {r.best_auc:.4f} "
            f"(epoch {r.best_epoch}/{r.epochs_run}, {r.skipped_steps} skipped steps)"
        )
    pooled = read_run_oof(run.root)
    if pooled is not None:
        auc = roc_auc(pooled["label"], pooled["prob"])
        log(f"CV AUC (pooled OOF of {pooled['fold'].nunique()} fold(s), {len(pooled)} images): {auc:.4f}")
