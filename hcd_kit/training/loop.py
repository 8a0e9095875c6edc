"""Cross-validated training of a timm backbone on the packed store: one fold at a time, resumable.

``train(cfg, data_dir, run_dir, folds)`` trains the requested folds of ``DIR/folds.csv`` on
``DIR/packed`` and writes, per fold (``hcd_kit.layout.RunLayout``): ``best.pt`` (best validation AUC),
``last.pt`` (everything needed to resume, rewritten atomically every epoch), ``history.csv`` and ``oof.csv``
(the fold's validation probabilities from the best weights, so the union over folds is an honest
out-of-fold CV estimate). Every step runs under autocast (float16 + GradScaler on CUDA, bfloat16 on the
CPU); a step whose loss or gradients are not finite is skipped and counted instead of poisoning the
weights, and ``max_bad_steps`` of them in a row stop the fold with a clear error. Augmentation runs on
the device, batch-wise, with draws keyed on (seed, epoch, row), so resumed and DDP runs see the same
images as an uninterrupted single-process run.

    cfg = load_config(TrainConfig, "train.toml", {"epochs": 3})
    results = train(cfg, "data", "runs/resnet18", folds=[0, 1])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from hcd_kit.training.augment import AugmentConfig, augment_batch
from hcd_kit.config import dump_toml, load_config, read_toml, to_dict
from hcd_kit.console import console, progress
from hcd_kit.device import Precision, amp_dtype, autocast, grad_scaler, resolve_device
from hcd_kit.training.distributed import (
    DistInfo, all_true, gather_arrays, init_distributed, is_fold_worker, launched_by_torchrun, shutdown_distributed,
    sum_across, wrap_model,
)
from hcd_kit.errors import ConfigError, DataError, TrainingError
from hcd_kit.fsutil import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text
from hcd_kit.data.loader import BatchLoader
from hcd_kit.metrics import roc_auc
from hcd_kit.model import DEFAULT_MODEL, check_model_name, create_model, save_weights
from hcd_kit.training.optim import Ema, build_optimizer, build_schedule
from hcd_kit.layout import DataLayout
from hcd_kit.preprocess import normalise, resize, to_float_nchw, to_input
from hcd_kit.layout import RunLayout
from hcd_kit.data.store import PackedStore, open_store

Strategy = Literal["auto", "single", "dp", "ddp", "fold-parallel"]
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "images_per_s", "skipped_steps"]
# Keys that may differ between the sessions of one run: where it runs, not what it computes.
_PRECISION_NAMES = {None: "fp32", torch.float16: "fp16 (GradScaler)", torch.bfloat16: "bf16"}
RUNTIME_KEYS = {"device", "strategy", "threads", "fold_workers", "val_batch_size"}


@dataclass
class TrainConfig:
    model: str = DEFAULT_MODEL  # any timm name; small ImageNet CNNs do well on 96 px tissue
    pretrained: bool = True  # ImageNet weights: the largest single gain on 220k small patches
    weights: str | None = None  # local pretrained weights file (offline Kaggle kernels); implies pretrained
    drop_rate: float = 0.0  # dropout before the head
    img_size: int = 96  # upscale on the device; 96 keeps T4 throughput, 128-192 can add AUC for more time
    epochs: int = 8
    batch_size: int = 128  # per process: under DDP the global batch is batch_size x world size
    val_batch_size: int = 0  # 0 = 2 x batch_size (no gradients, so twice fits)
    lr: float = 1e-3  # peak learning rate (AdamW); use ~0.05 for sgd
    weight_decay: float = 1e-2
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # sgd only (Nesterov)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    warmup_epochs: float = 0.5  # a short warm-up keeps early fp16 steps from blowing up
    grad_clip: float = 2.0  # max gradient norm, 0 = off; caps the rare huge step that turns into NaN
    ema: bool = False  # validate/save an exponential moving average of the weights
    ema_decay: float = 0.999
    patience: int = 0  # stop a fold after this many epochs without a better val AUC; 0 = never
    imbalance: Literal["none", "pos-weight", "balanced"] = "none"  # train is ~40% positive: mild
    precision: Precision = "auto"  # auto: fp16 on CUDA, bf16 on CPU
    strategy: Strategy = "auto"  # auto: DataParallel on 2+ GPUs, else one device
    device: str = "auto"
    seed: int = 0
    max_bad_steps: int = 50  # consecutive non-finite steps before the fold is stopped
    threads: int = 0  # CPU threads for torch; 0 = cores / processes on this machine
    fold_workers: int = 0  # fold-parallel workers; 0 = one per GPU (2 on the CPU)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "img_size", "max_bad_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{key}' must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"config key 'lr' must be positive, got {self.lr}")
        if not 0 <= self.drop_rate < 1:
            raise ConfigError(f"config key 'drop_rate' must be in [0, 1), got {self.drop_rate}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"config key 'ema_decay' must be in (0, 1), got {self.ema_decay}")
        for key in ("patience", "val_batch_size", "threads", "fold_workers", "warmup_epochs", "grad_clip", "seed",
                    "weight_decay", "momentum"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")


@dataclass
class Hooks:
    """Callbacks for tests and tools (not on the CLI)."""

    loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # (global step, loss) -> loss to use
    epoch_end: Callable[[int, int], None] | None = None  # (fold, epoch) after last.pt of that epoch


@dataclass
class FoldResult:
    fold: int
    best_auc: float
    best_epoch: int  # 1-based
    epochs_run: int
    skipped_steps: int
    status: str  # "trained" or "already finished"


@dataclass
class _FoldState:
    """What ``last.pt`` carries besides the optimiser and friends."""

    epoch: int = 0  # epochs finished
    best_score: float = -math.inf
    best_auc: float = math.nan
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    finished: bool = False


# ------------------------------------------------------------------------------------------ set-up


def resolve_config(
    config_path: str | os.PathLike[str] | None,
    overrides: dict,
    run_dir: str | os.PathLike[str] | None,
    resume: bool,
) -> tuple[TrainConfig, Path]:
    """Defaults <- TOML <- flags, and the run folder (``runs/<model>`` unless given).

    ``--resume`` without ``--config`` starts from the run's own ``config.toml``, so the command that
    resumes needs no more flags than ``--run-dir`` and ``--resume``.
    """
    cfg = load_config(TrainConfig, config_path, overrides)
    run = Path(run_dir) if run_dir else Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.model)
    saved = RunLayout.of(run).config
    if resume and config_path is None and saved.is_file():
        cfg = load_config(TrainConfig, saved, overrides)
    return cfg, run


def _read_folds(layout: DataLayout, store: PackedStore) -> pd.DataFrame:
    """``DIR/folds.csv`` aligned with the store: one (id, fold, row) per packed image."""
    from hcd_kit.data.folds import read_folds

    if not layout.folds_csv.is_file():
        raise DataError(f"no folds file {layout.folds_csv}; run `hcd folds --data-dir {layout.root}` first")
    return read_folds(layout.folds_csv, ids=store.ids).assign(row=np.arange(len(store)))


def _record_split(data: DataLayout, run: RunLayout) -> None:
    """Keep the split beside the run: OOF scores only mean something against the split they came from."""
    split = data.folds_csv.read_bytes()
    if run.folds.is_file() and run.folds.read_bytes() != split:
        raise ConfigError(
            f"{run.folds} differs from {data.folds_csv}: this run was trained on another split; "
            "use a new --run-dir (or restore the original folds.csv)"
        )
    atomic_write_bytes(run.folds, split)


def _planned(run: RunLayout) -> list[int] | None:
    """The folds recorded in ``RUN/plan.json``; None (all folds) for a run without one."""
    try:
        folds = json.loads(run.plan.read_text(encoding="utf-8"))["folds"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{run.plan} is damaged; delete it (or pass --fold) to resume") from None
    return [int(k) for k in folds]


def _record_plan(run: RunLayout, wanted: list[int]) -> None:
    folds = sorted(set(_planned(run) or []) | set(wanted))
    atomic_write_text(run.plan, json.dumps({"folds": folds}) + "\n")


def _check_folds(wanted: Sequence[int] | str | None, n_folds: int) -> list[int]:
    if wanted is None or wanted == "all":
        return list(range(n_folds))
    bad = [f for f in wanted if not 0 <= f < n_folds]
    if bad:
        raise ConfigError(f"--fold {bad[0]} is out of range: folds.csv has folds 0..{n_folds - 1}")
    return list(dict.fromkeys(wanted))


def _check_run_dir(cfg: TrainConfig, layout: RunLayout, folds: list[int], resume: bool) -> None:
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


def _set_threads(threads: int, info: DistInfo) -> None:
    n = threads or max(1, (os.cpu_count() or 1) // max(1, info.local_world_size))
    torch.set_num_threads(n)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


class _Log:
    """Lines to the console and appended to ``RUN/train.log``; silent on ranks other than 0."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        console.print(message, soft_wrap=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:  # a log is appended, not replaced
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


# ------------------------------------------------------------------------------------------ entry point


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    folds: Sequence[int] | str | None = None,
    resume: bool = False,
    hooks: Hooks | None = None,
) -> dict[int, FoldResult]:
    """Train ``folds`` and return {fold: FoldResult}; every input is checked before training.

    ``folds``: fold numbers, or ``"all"``; None means all too, except with ``resume``, where it means the
    folds the run was started for (``RUN/plan.json``).
    """
    if launched_by_torchrun() and cfg.strategy != "ddp":  # else every rank trains alone and all write the same files
        raise ConfigError("started by torchrun but --strategy is not ddp: add --strategy ddp (or run plain `hcd train`)")
    device = resolve_device(cfg.device)
    info = DistInfo()
    if cfg.strategy == "ddp":
        info, device = init_distributed(device)
    try:
        data, run = DataLayout.of(data_dir), RunLayout.of(run_dir)
        return _train(cfg, data, run, folds, resume, hooks or Hooks(), device, info)
    finally:
        if cfg.strategy == "ddp":
            shutdown_distributed()


def _train(
    cfg: TrainConfig, data: DataLayout, run: RunLayout, folds: Sequence[int] | str | None, resume: bool,
    hooks: Hooks, device: torch.device, info: DistInfo,
) -> dict[int, FoldResult]:
    check_model_name(cfg.model)
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise ConfigError(f"weights file not found: {cfg.weights}")
    dtype = amp_dtype(device, cfg.precision)
    store = open_store(data.packed_dir, "train")
    table = _read_folds(data, store)
    if folds is None and resume:
        folds = _planned(run)  # `--resume` alone continues what the run was started for, not every fold
    wanted = _check_folds(folds, int(table["fold"].max()) + 1)
    _check_run_dir(cfg, run, wanted, resume)
    if info.is_main and not is_fold_worker():  # a worker's one device and --strategy single are not the run's
        run.root.mkdir(parents=True, exist_ok=True)
        _record_split(data, run)
        dump_toml(cfg, run.config)
        _record_plan(run, wanted)
    log = _Log(run.log, info.is_main)
    if cfg.strategy == "fold-parallel":
        return _fold_parallel(cfg, data, run, wanted, resume, log)

    _set_threads(cfg.threads, info)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    where = f"{device}" + (f" x{info.world_size} ranks (ddp)" if info.distributed else "")
    precision = _PRECISION_NAMES[dtype]
    log(f"train {cfg.model} @ {cfg.img_size}px on {where}, precision {precision}, folds {wanted} -> {run.root}")
    results = {}
    for fold in wanted:
        done = _finished(run, fold) if resume else None
        if done is not None:
            log(f"fold {fold}: already finished (best val AUC {done.best_auc:.4f} at epoch {done.best_epoch}); skipped")
            results[fold] = done
            continue
        try:
            results[fold] = _run_fold(cfg, fold, store, table, run, _Env(device, dtype, info), resume, hooks, log)
        except KeyboardInterrupt:
            log(f"fold {fold}: interrupted; {run.last(fold)} keeps the last finished epoch: add --resume to continue")
            raise
    _summary(results, run, log)
    return results


def _summary(results: dict[int, FoldResult], run: RunLayout, log: _Log) -> None:
    for r in results.values():
        log(f"fold {r.fold}: best val AUC {r.best_auc:.4f} "
            f"(epoch {r.best_epoch}/{r.epochs_run}, {r.skipped_steps} skipped steps)")
    oof = [pd.read_csv(run.oof(f), dtype={"id": str}) for f in run.folds_present() if run.oof(f).is_file()]
    if oof:
        pooled = pd.concat(oof)
        auc = roc_auc(pooled["label"], pooled["prob"])
        log(f"CV AUC (pooled OOF of {len(oof)} fold(s), {len(pooled)} images): {auc:.4f}")


def _read_checkpoint(path: Path) -> dict:
    """``last.pt`` as a dict, or a one-line DataError saying how to recover from a damaged file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "scheduler", "state"} <= set(ckpt):
            raise ValueError("not a checkpoint written by hcd train")
        return ckpt
    except (RuntimeError, KeyError, ValueError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise _unresumable(path, exc) from None


def _unresumable(path: Path, exc: BaseException) -> DataError:
    first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return DataError(f"cannot resume from {path} ({first}); delete it to restart the fold")


def _finished(run: RunLayout, fold: int) -> FoldResult | None:
    path = run.last(fold)
    if not path.is_file():
        return None
    ckpt = _read_checkpoint(path)
    if not ckpt["state"]["finished"]:
        return None
    return _result(fold, _FoldState(**ckpt["state"]), "already finished")


def _result(fold: int, state: _FoldState, status: str) -> FoldResult:
    skipped = sum(int(h["skipped_steps"]) for h in state.history)
    return FoldResult(fold, state.best_auc, state.best_epoch, state.epoch, skipped, status)


def _fold_parallel(cfg: TrainConfig, data: DataLayout, run: RunLayout, folds: list[int], resume: bool, log: _Log):
    from hcd_kit.training.distributed import fold_devices, python_module_cmd, run_fold_parallel

    devices = fold_devices(cfg.device, cfg.fold_workers)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // len(devices))  # share the cores, don't fight
    log(f"fold-parallel: folds {folds} over {len(devices)} worker(s) on {', '.join(devices)}; "
        f"worker logs in {run.root}/fold*/worker.log")
    cmd = [*python_module_cmd(), "train", "--data-dir", str(data.root), "--run-dir", str(run.root),
           "--config", str(run.config)]
    run_fold_parallel(cmd + (["--resume"] if resume else []), folds, devices, run.root, threads)
    results = {f: r for f in folds if (r := _finished(run, f)) is not None}
    _summary(results, run, log)
    return results


# ------------------------------------------------------------------------------------------ one fold


def _split(table: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    train_rows = np.sort(table.loc[table["fold"] != fold, "row"].to_numpy(np.int64))
    val_rows = np.sort(table.loc[table["fold"] == fold, "row"].to_numpy(np.int64))
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(
            f"fold {fold} has {len(train_rows)} training and {len(val_rows)} validation images; re-run `hcd folds`"
        )
    return train_rows, val_rows


def balanced_rows(rows: np.ndarray, labels: np.ndarray, seed: int, fold: int, epoch: int) -> np.ndarray:
    """An epoch's worth of ``rows`` drawn with replacement, half positive and half negative."""
    pos, neg = rows[labels[rows] == 1], rows[labels[rows] == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise DataError(f"fold {fold}'s training images are all one class; --imbalance balanced needs both")
    rng = np.random.default_rng([seed, fold, epoch, 0xBA1])
    half = len(rows) // 2
    return np.concatenate([rng.choice(pos, half), rng.choice(neg, len(rows) - half)])


def _loss_fn(imbalance: str, labels: np.ndarray, device: torch.device) -> nn.Module:
    if imbalance == "pos-weight":
        pos = max(1, int(labels.sum()))
        weight = torch.tensor([(len(labels) - pos) / pos], dtype=torch.float32, device=device)
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    return nn.BCEWithLogitsLoss()


@dataclass
class _Env:
    """Where a fold runs: its device, autocast dtype (None = fp32) and place in a DDP job."""

    device: torch.device
    dtype: torch.dtype | None
    info: DistInfo


@dataclass
class _Trainer:
    """Everything one fold trains and checkpoints."""

    model: nn.Module  # the bare model: checkpointed, averaged by the EMA
    net: nn.Module  # what the forward pass calls: the model, or its DataParallel / DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: Ema | None
    loss_fn: nn.Module


def _build(cfg: TrainConfig, steps: int, train_labels: np.ndarray, env: _Env) -> _Trainer:
    model = create_model(cfg.model, cfg.pretrained, cfg.weights, cfg.drop_rate).to(env.device)
    if env.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    return _Trainer(
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, cfg.schedule, cfg.epochs * steps, round(cfg.warmup_epochs * steps)),
        scaler=grad_scaler(env.device, env.dtype),
        ema=Ema(model, cfg.ema_decay) if cfg.ema else None,
        loss_fn=_loss_fn(cfg.imbalance, train_labels, env.device),
    )


def _run_fold(
    cfg: TrainConfig, fold: int, store: PackedStore, table: pd.DataFrame, run: RunLayout, env: _Env,
    resume: bool, hooks: Hooks, log: _Log,
) -> FoldResult:
    train_rows, val_rows = _split(table, fold)
    info = env.info
    loader = BatchLoader(
        store.images, store.labels, train_rows, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed + fold,
        drop_last=True, rank=info.rank, world_size=info.world_size, pin_memory=env.device.type == "cuda",
    )  # drop_last: a tiny last batch gives a noisy step (and BatchNorm fails on one image)
    global_batch = cfg.batch_size * info.world_size
    if len(loader) == 0:
        raise ConfigError(
            f"fold {fold}: {len(train_rows)} training images make no full batch of {global_batch}; lower --batch-size"
        )
    _seed(cfg.seed + fold)  # identical initial weights on every rank and every resumed session
    t = _build(cfg, len(loader), store.labels[train_rows], env)
    state = _FoldState()
    if resume and run.last(fold).is_file():
        state = _load_checkpoint(run.last(fold), t)
        log(f"fold {fold}: resuming after epoch {state.epoch} (best val AUC so far {state.best_auc:.4f})")
    t.net = wrap_model(t.model, cfg.strategy, env.device, info)
    log(f"fold {fold}: {len(train_rows)} train / {len(val_rows)} val images, "
        f"{len(loader)} steps/epoch of {global_batch}")

    for epoch in range(state.epoch, cfg.epochs):
        loader.set_epoch(epoch)
        if cfg.imbalance == "balanced":
            loader.indices = balanced_rows(train_rows, store.labels, cfg.seed, fold, epoch)
        stats = _train_epoch(t, loader, cfg, fold, epoch, env, hooks)
        evaluated = t.ema.module if t.ema is not None else t.model
        val_batch = cfg.val_batch_size or 2 * cfg.batch_size
        probs = _predict_rows(evaluated, store, val_rows, val_batch, cfg.img_size, env)
        labels = store.labels[val_rows]
        auc, val_loss = roc_auc(labels, probs), _bce(labels, probs)
        score = auc if math.isfinite(auc) else -val_loss  # a single-class fold has no AUC: fall back to loss
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_auc, state.best_epoch = score, auc, epoch + 1
            if info.is_main:
                save_weights(evaluated, run.best(fold))
                _write_oof(run.oof(fold), store.ids[val_rows], fold, probs, labels)
        state.epoch = epoch + 1
        lr = t.optimizer.param_groups[0]["lr"]
        state.history.append(dict(epoch=epoch + 1, lr=lr, train_loss=stats["loss"], val_loss=val_loss, val_auc=auc,
                                  images_per_s=stats["images_per_s"], skipped_steps=stats["skipped"]))
        stalled = cfg.patience > 0 and state.epoch - state.best_epoch >= cfg.patience
        state.finished = stalled or state.epoch == cfg.epochs
        if info.is_main:
            _write_history(run.history(fold), state.history)
            _save_checkpoint(run.last(fold), t, state)
        log(f"fold {fold} epoch {epoch + 1}/{cfg.epochs}: train_loss {stats['loss']:.4f} val_loss {val_loss:.4f} "
            f"val_auc {auc:.4f}{' *' if improved else ''} lr {lr:.2e} "
            f"{stats['images_per_s']:,.0f} img/s skipped {stats['skipped']}")
        if hooks.epoch_end is not None:
            hooks.epoch_end(fold, epoch)
        if stalled:
            log(f"fold {fold}: no better val AUC for {cfg.patience} epoch(s); stopping early")
            break
    return _result(fold, state, "trained")


# ------------------------------------------------------------------------------------------ steps


def _train_epoch(
    t: _Trainer, loader: BatchLoader, cfg: TrainConfig, fold: int, epoch: int, env: _Env, hooks: Hooks
) -> dict:
    """One pass over ``loader``: returns the mean loss (all ranks), skipped steps and images/s."""
    t.net.train()
    steps, world = len(loader), env.info.world_size
    total, skipped, streak, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = progress("img") if env.info.is_main else None
    with bar or contextlib.nullcontext(), warnings.catch_warnings():
        # The schedule advances on skipped steps too (it counts batches); torch warns when the very first
        # optimizer step is one of them.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        title = f"fold {fold} epoch {epoch + 1}/{cfg.epochs}"
        task = bar.add_task(title, total=steps * loader.batch_size * world) if bar else None
        for i, batch in enumerate(loader):
            x = _train_input(batch, epoch, cfg, env.device)
            y = batch.labels.to(env.device, non_blocking=True)
            with autocast(env.device, env.dtype):
                logits = t.net(x).squeeze(1)
            loss = t.loss_fn(logits.float(), y)
            if hooks.loss is not None:
                loss = hooks.loss(epoch * steps + i, loss)
            ok = _step(loss, t.model, t.optimizer, t.scaler, cfg.grad_clip, env)
            t.scheduler.step()
            if ok:
                streak = 0
                total += loss.item()
                if t.ema is not None:
                    t.ema.update(t.model)
            else:
                skipped, streak = skipped + 1, streak + 1
                if streak >= cfg.max_bad_steps:
                    raise TrainingError(
                        f"fold {fold} epoch {epoch + 1}: {streak} consecutive steps with non-finite loss or gradients; "
                        "lower --lr, try --precision fp32, or check the data (last.pt keeps the last good epoch)"
                    )
            seen += len(y) * world
            if bar:
                bar.advance(task, len(y) * world)
    elapsed = time.perf_counter() - start
    total, good = sum_across([total, steps - skipped], env.info)  # every rank's losses, not just rank 0's
    return dict(loss=total / good if good else math.nan, skipped=skipped, images_per_s=seen / max(elapsed, 1e-9))


def _train_input(batch, epoch: int, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """uint8 NHWC batch -> augmented, upscaled, normalised float NCHW on ``device``."""
    x = to_float_nchw(batch.images.to(device, non_blocking=True))
    x = augment_batch(x, torch.from_numpy(batch.index), epoch, cfg.seed, cfg.augment)
    x = normalise(resize(x, cfg.img_size))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _step(loss: torch.Tensor, model: nn.Module, optimizer, scaler, grad_clip: float, env: _Env) -> bool:
    """Backward + optimiser step; False (and no update at all) when the loss or gradients are not finite.

    A non-finite loss never reaches ``backward`` or the GradScaler, so the loss scale is untouched. Under
    float16 the scaler itself handles overflowing gradients (it skips the step and lowers the scale: normal
    dynamics, not counted); without a scaler a non-finite gradient norm skips the step here.
    """
    optimizer.zero_grad(set_to_none=True)
    if not all_true(bool(torch.isfinite(loss)), env.info, env.device):  # every rank must agree, or DDP hangs
        return False
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if not scaler.is_enabled() and not torch.isfinite(norm):  # gradients are all-reduced: ranks agree
        optimizer.zero_grad(set_to_none=True)
        return False
    scaler.step(optimizer)
    scaler.update()
    return True


@torch.inference_mode()
def _predict_rows(
    model: nn.Module, store: PackedStore, rows: np.ndarray, batch_size: int, img_size: int, env: _Env
) -> np.ndarray:
    """Sigmoid probabilities for store ``rows`` (in that order); under DDP each rank does a slice."""
    was_training = model.training
    model.eval()
    cuda = env.device.type == "cuda"
    mine = np.array_split(rows, env.info.world_size)[env.info.rank]
    loader = BatchLoader(store.images, None, mine, batch_size=batch_size, shuffle=False, pin_memory=cuda)
    idx, out = [], []
    for batch in loader:
        x = to_input(batch.images, img_size, env.device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(env.device, env.dtype):
            logits = model(x).squeeze(1)
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
        idx.append(batch.index)
    model.train(was_training)
    local_idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    local_p = np.concatenate(out) if out else np.zeros(0, np.float32)
    all_idx, all_p = gather_arrays([local_idx, local_p], env.info)
    order = pd.Series(np.arange(len(all_idx)), index=all_idx).loc[rows].to_numpy()
    return all_p[order].astype(np.float64)


def _bce(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


# ------------------------------------------------------------------------------------------ files


def _write_oof(path: Path, ids: np.ndarray, fold: int, probs: np.ndarray, labels: np.ndarray) -> None:
    frame = pd.DataFrame({"id": ids, "fold": fold, "prob": probs, "label": labels.astype(np.int64)})
    with atomic_open(path, "w", newline="") as fh:
        frame.to_csv(fh, index=False)


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as fh:
        pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(fh, index=False)


def _save_checkpoint(path: Path, t: _Trainer, state: _FoldState) -> None:
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    ckpt = {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "ema": t.ema.state_dict() if t.ema is not None else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng},  # dropout, drop-path
        "state": vars(state),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _load_checkpoint(path: Path, t: _Trainer) -> _FoldState:
    ckpt = _read_checkpoint(path)
    try:
        t.model.load_state_dict(ckpt["model"])
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.scheduler.load_state_dict(ckpt["scheduler"])
        # A fold started on the CPU (bf16) or in fp32 saved a disabled scaler's empty state: resumed on CUDA
        # under fp16, the scaler starts afresh (its scale adapts within a few steps) instead of failing.
        if ckpt["scaler"] and t.scaler.is_enabled():
            t.scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise _unresumable(path, exc) from None
    if t.ema is not None:
        if ckpt["ema"] is None:
            raise ConfigError(f"{path} was trained without --ema; resume with the same settings")
        t.ema.load_state_dict(ckpt["ema"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    cuda_rng = ckpt["rng"]["cuda"]
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)  # on another GPU count the CUDA streams simply start afresh
    return _FoldState(**ckpt["state"])
