"""One training step, as ``hcd train`` runs it: the fold's trainer, the batch's input and the update.

``build_trainer`` makes a fold's model (set up for fine-tuning by ``finetune.prepare_model``, in the memory
format ``device.place_model`` picks), optimiser, per-step schedule, GradScaler, EMA and loss from a
``TrainConfig``; ``train_input`` turns a uint8 batch into the augmented, upscaled, normalised input on the
device; ``train_step`` does forward, loss, backward, clipping and the optimiser, schedule and EMA updates,
skipping (not applying) a step whose loss or gradients are not finite. The training loop and
``benchmarks/train.py`` both use these, so the benchmark times exactly the step that trains.

On CUDA the step never waits for the GPU: the optimiser is fused, and whether a step is applied is a tensor on
the device that the fused kernel reads (``found_inf``), the way GradScaler drives it; the loss comes back as a
device tensor (NaN for a skipped step) that the loop sums on the device and reads at log intervals. Under DDP
the ranks agree through an all-reduce of that tensor, not through the host.

    env = Env(device, amp_dtype(device, cfg.precision))
    t = build_trainer(cfg, steps_per_epoch, train_labels, env)
    loss = train_step(t, train_input(images, index, epoch, cfg, env.device), labels, env, cfg.grad_clip)
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hcd_kit.device import autocast, grad_scaler, model_input, place_model
from hcd_kit.model import create_model
from hcd_kit.preprocess import normalise, resize, to_float_nchw
from hcd_kit.training.augment import augment_batch, mixup
from hcd_kit.training.checkpoint import Trainer
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.distributed import DistInfo, all_ranks
from hcd_kit.training.finetune import param_groups, prepare_model
from hcd_kit.training.optim import Ema, Swa, build_optimizer, build_schedule


@dataclass
class Env:
    """Where a fold runs: its device, autocast dtype (None = fp32) and place in a DDP job."""

    device: torch.device
    dtype: torch.dtype | None
    info: DistInfo = field(default_factory=DistInfo)


def build_trainer(cfg: TrainConfig, steps_per_epoch: int, train_labels: np.ndarray, env: Env) -> Trainer:
    """Model, optimiser, per-step schedule, GradScaler, EMA and loss of one fold, as ``cfg`` says."""
    model = create_model(cfg.model, cfg.pretrained, cfg.weights, cfg.drop_rate, cfg.drop_path, img_size=cfg.img_size)
    model = place_model(prepare_model(model, cfg), env.device)  # --train-blocks, --lora, --grad-ckpt
    optimizer = build_optimizer(
        model,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        cfg.momentum,
        groups=param_groups(model, cfg),  # --layer-decay: one lr per layer
        fused=env.device.type == "cuda",
    )  # skips a bad step on the GPU, no host sync
    return Trainer(
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=build_schedule(
            optimizer, cfg.schedule, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
        ),
        scaler=grad_scaler(env.device, env.dtype),
        ema=Ema(model, cfg.ema_decay) if cfg.ema else None,
        loss_fn=_loss_fn(cfg.imbalance, train_labels, env.device, cfg.label_smoothing),
        swa=Swa(model, cfg.swa_epochs, cfg.epochs) if cfg.swa_epochs else None,
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
    return normalise(resize(x, cfg.img_size))  # train_step puts it in the model's memory format


def train_batch(batch, epoch: int, cfg: TrainConfig, env: Env) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch -> (input, targets) on the device: ``train_input``, then mixup when ``cfg.mixup`` asks
    (draws keyed on seed, epoch and rows, like the augmentation). Training and its speed measurement share it."""
    x = train_input(batch.images, batch.index, epoch, cfg, env.device)
    y = batch.labels.to(env.device, non_blocking=True)
    if cfg.mixup > 0:
        x, y = mixup(x, y, batch.index, epoch, cfg.seed, cfg.mixup)
    return x, y


def train_step(
    t: Trainer,
    x: torch.Tensor,
    y: torch.Tensor,
    env: Env,
    grad_clip: float,
    adjust_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimisation step on a prepared batch; returns its loss as a 0-d float32 tensor on the device, NaN
    when the step was skipped (``float(loss)`` reads it; the loop reads its sums at log intervals instead).

    Forward under autocast (input in the model's memory format), loss (then ``adjust_loss``, a test hook),
    backward, gradient clipping (``grad_clip`` 0 = off), optimiser step, schedule step (on skipped steps too: it
    counts batches) and EMA update. A step is applied only when its loss (on every DDP rank) and its gradient
    norm are finite; a non-finite loss is reported as a skipped step. Under float16 an overflowing gradient is
    the GradScaler's business: the step is not applied and the scale drops (normal dynamics, not counted).
    """
    with autocast(env.device, env.dtype):
        logits = t.net(model_input(x, t.model)).squeeze(1)
    loss = t.loss_fn(logits.float(), y)
    if adjust_loss is not None:
        loss = adjust_loss(loss)
    counted = _backward_and_step(loss, t, grad_clip, env)
    if t.scheduler.last_epoch > 0:  # the hot path: no warnings machinery after the first step
        t.scheduler.step()
    else:  # the schedule counts batches, on skipped steps too; torch warns when that first step was skipped
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            t.scheduler.step()
    if t.ema is not None:  # a skipped step left the weights as they were: the average moves toward them as usual
        t.ema.update(t.model)
    return torch.where(counted, loss.detach().float(), torch.full_like(loss.detach().float(), math.nan))


def _backward_and_step(loss: torch.Tensor, t: Trainer, grad_clip: float, env: Env) -> torch.Tensor:
    """Backward, clip and (maybe) step; returns the device-side flag "this step counts as done"."""
    t.optimizer.zero_grad(set_to_none=True)
    finite = all_ranks(torch.isfinite(loss.detach()), env.info)  # every rank must agree, or DDP hangs
    t.scaler.scale(loss).backward()  # a non-finite loss gives non-finite gradients: nothing below applies them
    t.scaler.unscale_(t.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    applied = finite & torch.isfinite(norm)  # gradients are all-reduced: every rank gets the same norm
    _optimizer_step(t.optimizer, applied)
    t.scaler.update()  # float16: the scale follows the inf checks unscale_ recorded (a no-op when disabled)
    return finite if t.scaler.is_enabled() else applied


def _optimizer_step(optimizer: torch.optim.Optimizer, applied: torch.Tensor) -> None:
    """``optimizer.step()`` where ``applied``; decided on the device by a fused optimiser (its kernels skip the
    update, step count included, where ``found_inf`` is 1), on the host otherwise (free on the CPU)."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~applied).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(applied):
        optimizer.step()


class LossMeter:
    """An epoch's step losses (``train_step``'s tensors, NaN = skipped), summed on the device: the sums, the
    skipped steps and the longest run of consecutive skips are read by the host only in ``worst_streak`` and
    ``totals`` (the loop asks every ``CHECK_EVERY`` steps and at the epoch's end)."""

    CHECK_EVERY = 16  # steps between host reads: one sync per 16 steps, and a runaway fold stops within 16

    def __init__(self, device: torch.device) -> None:
        zero = functools.partial(torch.zeros, (), dtype=torch.float64, device=device)
        self.total, self.good, self.skipped, self.streak, self.worst = (zero() for _ in range(5))

    def add(self, loss: torch.Tensor) -> None:
        bad = torch.isnan(loss)
        self.total += torch.where(bad, 0.0, loss.double())
        self.good += ~bad
        self.skipped += bad
        self.streak = (self.streak + 1) * bad  # back to 0 on a good step
        self.worst = torch.maximum(self.worst, self.streak)

    def worst_streak(self) -> int:
        return int(self.worst)

    def totals(self) -> tuple[float, int, int]:
        """(sum of the counted losses, counted steps, skipped steps)."""
        return float(self.total), int(self.good), int(self.skipped)
