"""One training step, as ``hcd train`` runs it: the fold's trainer, the batch's input and the update.

``build_trainer`` makes a fold's model (set up for fine-tuning by ``finetune.prepare_model``), optimiser,
per-step schedule, GradScaler, EMA and loss from a ``TrainConfig``; ``train_input`` turns a uint8 batch into
the augmented, upscaled, normalised input on the device; ``train_step`` does forward, loss, backward, clipping
and the optimiser, schedule and EMA updates, skipping (not applying) a step whose loss or gradients are not
finite. The training loop and ``benchmarks/train.py`` both use these, so the benchmark times exactly the step
that trains.

    env = Env(device, amp_dtype(device, cfg.precision))
    t = build_trainer(cfg, steps_per_epoch, train_labels, env)
    loss = train_step(t, train_input(images, index, epoch, cfg, env.device), labels, env, cfg.grad_clip)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from hcd_kit.device import autocast, grad_scaler
from hcd_kit.model import create_model
from hcd_kit.preprocess import normalise, resize, to_float_nchw
from hcd_kit.training.augment import augment_batch, mixup
from hcd_kit.training.checkpoint import Trainer
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.distributed import DistInfo, all_true
from hcd_kit.training.finetune import param_groups, prepare_model
from hcd_kit.training.optim import Ema, build_optimizer, build_schedule


@dataclass
class Env:
    """Where a fold runs: its device, autocast dtype (None = fp32) and place in a DDP job."""

    device: torch.device
    dtype: torch.dtype | None
    info: DistInfo = field(default_factory=DistInfo)


def build_trainer(cfg: TrainConfig, steps_per_epoch: int, train_labels: np.ndarray, env: Env) -> Trainer:
    """Model, optimiser, per-step schedule, GradScaler, EMA and loss of one fold, as ``cfg`` says."""
    model = create_model(cfg.model, cfg.pretrained, cfg.weights, cfg.drop_rate, cfg.drop_path, img_size=cfg.img_size)
    model = prepare_model(model, cfg).to(env.device)  # --train-blocks, --lora, --grad-ckpt
    if env.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum,
                                groups=param_groups(model, cfg))  # --layer-decay: one lr per layer
    return Trainer(
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, cfg.schedule, cfg.epochs * steps_per_epoch,
                                 round(cfg.warmup_epochs * steps_per_epoch)),
        scaler=grad_scaler(env.device, env.dtype),
        ema=Ema(model, cfg.ema_decay) if cfg.ema else None,
        loss_fn=_loss_fn(cfg.imbalance, train_labels, env.device, cfg.label_smoothing),
    )


class SmoothedBCE(nn.Module):
    """Binary cross-entropy on logits against targets pulled toward 1/2: ``y (1 - e) + e / 2``."""

    def __init__(self, smoothing: float, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target * (1.0 - self.smoothing) + 0.5 * self.smoothing)


def _loss_fn(imbalance: str, labels: np.ndarray, device: torch.device, smoothing: float = 0.0) -> nn.Module:
    weight = None
    if imbalance == "pos-weight":
        pos = max(1, int(labels.sum()))
        weight = torch.tensor([(len(labels) - pos) / pos], dtype=torch.float32, device=device)
    return SmoothedBCE(smoothing, weight)


def train_input(
    images: torch.Tensor, index: np.ndarray, epoch: int, cfg: TrainConfig, device: torch.device
) -> torch.Tensor:
    """uint8 NHWC ``images`` (store rows ``index``) -> augmented, upscaled, normalised float NCHW on ``device``.

    Uses ``cfg.augment``, ``cfg.seed`` and ``cfg.img_size``; the draws depend on (seed, epoch, row) only.
    """
    x = to_float_nchw(images.to(device, non_blocking=True))
    x = augment_batch(x, torch.from_numpy(index), epoch, cfg.seed, cfg.augment)
    x = normalise(resize(x, cfg.img_size))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_batch(batch, epoch: int, cfg: TrainConfig, env: Env) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch -> (input, targets) on the device: ``train_input``, then mixup when ``cfg.mixup`` asks
    (draws keyed on seed, epoch and rows, like the augmentation). Training and its speed measurement share it."""
    x = train_input(batch.images, batch.index, epoch, cfg, env.device)
    y = batch.labels.to(env.device, non_blocking=True)
    if cfg.mixup > 0:
        x, y = mixup(x, y, batch.index, epoch, cfg.seed, cfg.mixup)
    return x, y


def train_step(
    t: Trainer, x: torch.Tensor, y: torch.Tensor, env: Env, grad_clip: float,
    adjust_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float | None:
    """One optimisation step on a prepared batch; returns its loss, or None when it was skipped.

    Forward under autocast, loss (then ``adjust_loss``, a test hook), backward, gradient clipping
    (``grad_clip`` 0 = off), optimiser step, schedule step (on skipped steps too: it counts batches) and EMA
    update. A non-finite loss never reaches ``backward`` or the GradScaler, so the loss scale is untouched.
    Under float16 the scaler itself handles overflowing gradients (it skips the step and lowers the scale:
    normal dynamics, not counted); without a scaler a non-finite gradient norm skips the step here.
    """
    with autocast(env.device, env.dtype):
        logits = t.net(x).squeeze(1)
    loss = t.loss_fn(logits.float(), y)
    if adjust_loss is not None:
        loss = adjust_loss(loss)
    ok = _backward_and_step(loss, t, grad_clip, env)
    if t.scheduler.last_epoch > 0:  # the hot path: no warnings machinery after the first step
        t.scheduler.step()
    else:  # the schedule counts batches, on skipped steps too; torch warns when that first step was skipped
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            t.scheduler.step()
    if not ok:
        return None
    if t.ema is not None:
        t.ema.update(t.model)
    return loss.item()


def _backward_and_step(loss: torch.Tensor, t: Trainer, grad_clip: float, env: Env) -> bool:
    t.optimizer.zero_grad(set_to_none=True)
    if not all_true(bool(torch.isfinite(loss)), env.info, env.device):  # every rank must agree, or DDP hangs
        return False
    t.scaler.scale(loss).backward()
    t.scaler.unscale_(t.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if not t.scaler.is_enabled() and not torch.isfinite(norm):  # gradients are all-reduced: ranks agree
        t.optimizer.zero_grad(set_to_none=True)
        return False
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return True
