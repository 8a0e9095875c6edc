"""One fold's epoch: its training and validation rows, the balanced draw, and the pass over the loader.

``train_epoch`` runs ``step.train_step`` over every batch, keeps the loss on the device (``step.LossMeter``, read
every 16 steps: on CUDA the loop never waits for the GPU between steps), and stops the fold with a clear error
after ``max_bad_steps`` non-finite steps in a row.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from hcd_kit.console import progress
from hcd_kit.data.loader import BatchLoader
from hcd_kit.errors import DataError, TrainingError
from hcd_kit.training.checkpoint import Trainer
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.distributed import sum_across
from hcd_kit.training.step import Env, LossMeter, train_batch, train_step
from hcd_kit.training.trackers import Tracking


def split_rows(table: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
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


def train_epoch(
    t: Trainer,
    loader: BatchLoader,
    cfg: TrainConfig,
    fold: int,
    epoch: int,
    env: Env,
    adjust_loss: Callable[[int, torch.Tensor], torch.Tensor] | None,
    tracker: Tracking,
) -> dict:
    """One pass over ``loader``: returns the mean loss (all ranks), skipped steps and images/s.
    ``adjust_loss(step, loss)`` (``Hooks.loss``, tests) may change each step's loss."""
    t.net.train()
    steps, world = len(loader), env.info.world_size
    meter, seen = LossMeter(env.device), 0
    start = time.perf_counter()
    bar = progress("img") if env.info.is_main else None
    with bar or contextlib.nullcontext():
        title = f"fold {fold} epoch {epoch + 1}/{cfg.epochs}"
        task = bar.add_task(title, total=steps * loader.batch_size * world) if bar else None
        for i, batch in enumerate(loader):
            x, y = train_batch(batch, epoch, cfg, env)
            adjust = functools.partial(adjust_loss, epoch * steps + i) if adjust_loss is not None else None
            loss = train_step(t, x, y, env, cfg.grad_clip, adjust)  # a device tensor: no wait for the GPU here
            meter.add(loss)
            tracker.step(fold, epoch * steps + i, loss, t.optimizer.param_groups[0]["lr"])
            if (i + 1) % meter.CHECK_EVERY == 0 or i + 1 == steps:
                if meter.worst_streak() >= cfg.max_bad_steps:  # skipped steps changed nothing: stopping late is safe
                    raise TrainingError(
                        f"fold {fold} epoch {epoch + 1}: {cfg.max_bad_steps} consecutive steps with non-finite loss "
                        "or gradients; lower --lr, try --precision fp32, or check the data (last.pt keeps the last "
                        "good epoch)"
                    )
            seen += len(y) * world
            if bar:
                bar.advance(task, len(y) * world)
    if t.swa is not None:
        t.swa.update(t.model, epoch)  # the weights this epoch ended with, if it is one of the last
    elapsed = time.perf_counter() - start
    total, good, skipped = meter.totals()
    total, good = sum_across([total, good], env.info)  # every rank's losses, not just rank 0's
    return dict(loss=total / good if good else math.nan, skipped=skipped, images_per_s=seen / max(elapsed, 1e-9))
