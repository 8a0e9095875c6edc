"""The training loop: cross-validated training of a timm backbone on the packed store, one fold at a time.

``train(cfg, data_dir, run_dir, folds)`` trains the requested folds of ``DIR/folds.csv`` on ``DIR/packed``
and writes, per fold (``hcd_kit.layout.RunLayout``): ``best.pt`` (best validation AUC), ``last.pt``
(everything needed to resume, every epoch until the fold finishes, then deleted) and ``state.json`` (its
progress), ``history.csv`` and ``oof.csv`` (the fold's validation probabilities from the best weights, so the
union over folds is an honest out-of-fold CV estimate). The run folder is held (``locks.hold_run``) while it
trains, and each fold first checks that the disk can hold its checkpoints (``preflight``).
Every step runs under autocast (float16 + GradScaler on CUDA, bfloat16 on a CPU that has it natively, else
float32: ``device.choose_precision``); a step whose loss or gradients are not finite is skipped and counted
instead of poisoning the weights, and ``max_bad_steps`` of them in a row stop the fold with a clear error.
The step's loss stays on the device (``step.LossMeter``), so on CUDA the loop never waits for the GPU between
steps. Augmentation runs on the device, batch-wise, with draws
keyed on (seed, epoch, row), so resumed and DDP runs see the same images as an uninterrupted run.

Reads top to bottom: ``train`` (entry) -> ``_train`` (set-up, fold loop) -> ``_run_fold`` (epochs,
validation, checkpoints) -> ``epoch.train_epoch``, whose step is ``step.train_step``. Run-folder bookkeeping
lives in ``runs.py``, ``last.pt`` in ``checkpoint.py``, validation in ``validate.py``, and ``--time-budget``
(the plan, the deadline, the run's ETA) in ``speed.py`` and ``budget.py``, ``--tracker`` in ``trackers.py``.

    cfg = load_config(TrainConfig, "train.toml", {"epochs": 3})
    results = train(cfg, "data", "runs/resnet18", folds=[0, 1])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from hcd_kit.data.loader import BatchLoader
from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.device import choose_precision, cpu_threads, resolve_device, set_threads
from hcd_kit.errors import ConfigError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.locks import hold_run
from hcd_kit.metrics import roc_auc
from hcd_kit.model import check_model_name, save_weights, weights_source
from hcd_kit.runs.log import RunLog
from hcd_kit.runs.oof import write_oof
from hcd_kit.runs.record import record_run, write_history
from hcd_kit.runs.state import FoldState
from hcd_kit.training.checkpoint import load_checkpoint, save_checkpoint
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.distributed import (
    DistInfo,
    fold_devices,
    init_distributed,
    launched_by_torchrun,
    run_fold_parallel,
    shutdown_distributed,
    wrap_model,
)
from hcd_kit.training.epoch import balanced_rows, split_rows, train_epoch
from hcd_kit.training.finetune import trainable_summary
from hcd_kit.training.preflight import check_fold_space
from hcd_kit.training.pseudo import check_pseudo, training_source
from hcd_kit.training.runs import (
    FoldResult,
    check_folds,
    check_run_dir,
    finished,
    fold_result,
    read_split,
    record_environment,
    write_summary,
)
from hcd_kit.training.speed import RunClock, start_budget
from hcd_kit.training.step import Env, build_trainer
from hcd_kit.training.trackers import Tracking, check_tracker, tracking
from hcd_kit.training.validate import bce as _bce
from hcd_kit.training.validate import predict_rows as _predict_rows


@dataclass
class Hooks:
    """Callbacks for tests and tools (not on the CLI)."""

    loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # (global step, loss) -> loss to use
    epoch_end: Callable[[int, int], None] | None = None  # (fold, epoch) after last.pt of that epoch


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
        raise ConfigError(
            "started by torchrun but --strategy is not ddp: add --strategy ddp (or run plain `hcd train`)"
        )
    with hold_run(run_dir):  # one writer per run folder (rank 0 holds it for a DDP job)
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
    cfg: TrainConfig,
    data: DataLayout,
    run: RunLayout,
    folds: Sequence[int] | str | None,
    resume: bool,
    hooks: Hooks,
    device: torch.device,
    info: DistInfo,
    record: bool = True,
    clock: RunClock | None = None,
) -> dict[int, FoldResult]:
    """Check everything, record the run (unless ``record`` is off, as in a fold-parallel worker, whose one
    device and single strategy are not the run's settings), then train fold after fold."""
    check_model_name(cfg.model)
    weights_source(cfg.model, cfg.pretrained, cfg.weights)  # offline hub or a missing file: one line, now
    check_tracker(cfg.tracker)  # --tracker's package: one line now, not after a fold
    choice = choose_precision(device, cfg.precision)  # bf16 on a CPU only where it is native; says why
    env = Env(device, choice.dtype, info)
    store = open_store(data.packed_dir, "train")
    table = read_split(data, store)
    if folds is None and resume:
        folds = run.planned_folds()  # `--resume` alone continues what the run was started for, not every fold
    wanted = check_folds(folds, int(table["fold"].max()) + 1)
    check_run_dir(cfg, run, wanted, resume)
    threads = set_threads(cfg.threads, env.info.local_world_size)
    where = f"{env.device}" + (f" x{env.info.world_size} ranks (ddp)" if env.info.distributed else "")
    log = RunLog(
        run.log,
        env.info.is_main,
        f"train {cfg.model} @ {cfg.img_size}px on {where}, precision "
        f"{choice.label}, {threads} CPU thread(s), folds {wanted} -> {run.root}",
    )  # the log's first line
    if clock is None:  # --time-budget: planned once, here; a fold-parallel worker has the parent's clock
        cfg, clock = start_budget(cfg, data, run, store, table, wanted, env, resume, log)
    check_pseudo(cfg, data, run, write=record and env.info.is_main)  # --pseudo: RUN/pseudo.json
    log.start()  # every check passed: the run folder may be written
    if record and env.info.is_main:
        record_run(cfg, data, run, wanted)
        record_environment(run, env.device, choice, threads)
    if cfg.strategy == "fold-parallel":
        return _fold_parallel(cfg, data, run, wanted, resume, log, clock)

    set_threads(cfg.threads, env.info.local_world_size)  # the time plan may have set its own
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    results = {}
    with tracking(cfg, run.root, env.info.is_main, None if record else f"fold{wanted[0]}") as tracker:  # --tracker
        for fold in wanted:
            done = finished(run, fold) if resume else None
            if done is not None:
                log(
                    f"fold {fold}: already finished (best val AUC {done.best_auc:.4f} at epoch {done.best_epoch}); "
                    "skipped"
                )
                results[fold] = done
                continue
            try:
                left = len(wanted) - wanted.index(fold)  # this fold and those after it: their best.pt must fit
                results[fold] = _run_fold(cfg, fold, store, table, run, env, resume, hooks, log, clock, tracker, left)
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP
                if finished(run, fold) is not None:
                    log(f"fold {fold}: interrupted after it finished; --resume skips it")
                elif run.last(fold).is_file():
                    log(
                        f"fold {fold}: interrupted; {run.last(fold)} keeps the last finished epoch: add --resume to "
                        "continue"
                    )
                else:  # last.pt is written at the end of each epoch: none yet
                    log(
                        f"fold {fold}: interrupted before its first epoch finished, so nothing was kept for it; "
                        "add --resume to restart it (finished folds are kept)"
                    )
                raise
        write_summary(results, run, log)
        tracker.results(results, run.root)
    return results


def _fold_parallel(
    cfg: TrainConfig,
    data: DataLayout,
    run: RunLayout,
    folds: list[int],
    resume: bool,
    log: RunLog,
    clock: RunClock,
) -> dict[int, FoldResult]:
    devices = fold_devices(cfg.device, cfg.fold_workers)
    threads = cfg.threads or max(1, cpu_threads() // len(devices))  # share the CPUs, don't fight
    log(
        f"fold-parallel: folds {folds} over {len(devices)} worker(s) on {', '.join(devices)}; "
        f"worker logs in {run.root}/fold*/worker.log"
    )
    worker_cfg = dataclasses.replace(cfg, strategy="single", threads=threads)
    worker = functools.partial(_fold_worker, worker_cfg, str(data.root), str(run.root), resume, clock)
    run_fold_parallel(worker, folds, devices, run.root)
    results = {f: r for f in folds if (r := finished(run, f)) is not None}
    write_summary(results, run, log)
    return results


def _fold_worker(
    cfg: TrainConfig, data_dir: str, run_dir: str, resume: bool, clock: RunClock, fold: int, device: str
) -> None:
    """One fold on one device, in a fold-parallel worker process: the parent owns RUN/config.toml and plan.json."""
    cfg = dataclasses.replace(cfg, device=device)
    data, run = DataLayout.of(data_dir), RunLayout.of(run_dir)
    _train(cfg, data, run, [fold], resume, Hooks(), resolve_device(device), DistInfo(), record=False, clock=clock)


# ------------------------------------------------------------------------------------------ one fold


def _run_fold(
    cfg: TrainConfig,
    fold: int,
    store: PackedStore,
    table: pd.DataFrame,
    run: RunLayout,
    env: Env,
    resume: bool,
    hooks: Hooks,
    log: RunLog,
    clock: RunClock,
    tracker: Tracking,
    folds_left: int = 1,
) -> FoldResult:
    train_rows, val_rows = split_rows(table, fold)
    info = env.info
    src = training_source(cfg, fold, store, train_rows, run, log)  # + --pseudo test rows
    train_rows = src.rows
    loader = BatchLoader(
        src.images,
        src.labels,
        train_rows,
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=cfg.seed + fold,
        drop_last=True,
        rank=info.rank,
        world_size=info.world_size,
        pin_memory=env.device.type == "cuda",
    )  # drop_last: a tiny last batch gives a noisy step (and BatchNorm fails on one image)
    global_batch = cfg.batch_size * info.world_size
    if len(loader) == 0:
        raise ConfigError(
            f"fold {fold}: {len(train_rows)} training images make no full batch of {global_batch}; lower --batch-size"
        )
    torch.manual_seed(cfg.seed + fold)  # identical initial weights on every rank and every resumed session
    t = build_trainer(cfg, len(loader), src.labels[train_rows], env)
    state = FoldState()
    if resume and run.last(fold).is_file():
        state = load_checkpoint(run.last(fold), t)
        log(f"fold {fold}: resuming after epoch {state.epoch} (best val AUC so far {state.best_auc:.4f})")
    if info.is_main:
        check_fold_space(t, run, fold, folds_left)  # one line now, not a full disk after the fourth fold
    t.net = wrap_model(t.model, cfg.strategy, env.device, info)
    log(
        f"fold {fold}: {len(train_rows)} train / {len(val_rows)} val images, "
        f"{len(loader)} steps/epoch of {global_batch}; {trainable_summary(t.model, cfg)}"
    )
    clock.start_fold(fold, state.epoch)  # the run's ETA; with --time-budget, this fold's share of the time

    for epoch in range(state.epoch, cfg.epochs):
        loader.set_epoch(epoch)
        if cfg.imbalance == "balanced":
            loader.indices = balanced_rows(train_rows, src.labels, cfg.seed, fold, epoch)
        stats = train_epoch(t, loader, cfg, fold, epoch, env, hooks.loss, tracker)
        evaluated = t.evaluated  # the model, or its EMA / SWA average
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
                write_oof(run.oof(fold), store.ids[val_rows], fold, probs, labels)
        state.epoch = epoch + 1
        lr = t.optimizer.param_groups[0]["lr"]
        state.history.append(
            dict(
                epoch=epoch + 1,
                lr=lr,
                train_loss=stats["loss"],
                val_loss=val_loss,
                val_auc=auc,
                images_per_s=stats["images_per_s"],
                skipped_steps=stats["skipped"],
            )
        )
        tracker.epoch(fold, state.history[-1])
        stalled = cfg.patience > 0 and state.epoch - state.best_epoch >= cfg.patience
        late = clock.epoch_done(fold, state.epoch, info) and not stalled  # --time-budget: the next epoch won't fit
        state.finished = stalled or late or state.epoch == cfg.epochs
        if info.is_main:
            write_history(run.history(fold), state.history)
            save_checkpoint(run.last(fold), t, state)
        log(
            f"fold {fold} epoch {epoch + 1}/{cfg.epochs}: train_loss {stats['loss']:.4f} val_loss {val_loss:.4f} "
            f"val_auc {auc:.4f}{' *' if improved else ''} lr {lr:.2e} "
            f"{stats['images_per_s']:,.0f} img/s skipped {stats['skipped']}{clock.eta()}"
        )
        if hooks.epoch_end is not None:
            hooks.epoch_end(fold, epoch)
        if stalled:
            log(f"fold {fold}: no better val AUC for {cfg.patience} epoch(s); stopping early")
            break
        if late:
            log(
                f"fold {fold}: stopped early for the time budget after epoch {state.epoch}/{cfg.epochs} (best.pt keeps "
                f"epoch {state.best_epoch}); the next epoch would end past this fold's share of the budget"
            )
            break
    return fold_result(fold, state, "trained")
