"""A fold's resumable checkpoint, ``RUN/foldK/last.pt``, and its progress, ``RUN/foldK/state.json``: their one
writer and their one reader.

``last.pt`` holds everything one fold trains (model, optimiser, schedule, GradScaler, EMA), the torch RNG
states (dropout, drop-path) and the fold's progress (``FoldState``), so an interrupted fold resumes exactly
where its last finished epoch left it. ``state.json`` repeats the progress alone, so whoever only asks how far
a fold got (``--resume`` skipping finished folds, ``hcd cv``) reads a few hundred bytes instead of loading the
optimiser state (gigabytes for a ViT-L fine-tune). Both are rewritten atomically every epoch, ``last.pt``
first, so ``state.json`` never claims more than ``last.pt`` holds.

A finished fold (its last epoch, or stopped early by ``--patience`` or ``--time-budget``) never resumes, so it
keeps no ``last.pt``: its final ``state.json`` (finished) is written, then ``last.pt`` is removed. Killed between
the two, the fold holds both, and ``--resume`` still skips it. What it keeps is ``best.pt`` (the weights),
``state.json``, ``history.csv`` and ``oof.csv``; a Kaggle kernel's saved output stays small
(``checkpoint_size`` estimates both files before a kernel is pushed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_path, payload_bytes
from hcd_kit.layout import CheckpointSize
from hcd_kit.runs.state import FoldState, read_state, write_state
from hcd_kit.training.optim import Ema, Swa


@dataclass
class Trainer:
    """Everything one fold trains and checkpoints."""

    model: nn.Module  # the bare model: checkpointed, averaged by the EMA
    net: nn.Module  # what the forward pass calls: the model, or its DataParallel / DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: Ema | None
    loss_fn: nn.Module
    swa: Swa | None = None  # --swa-epochs

    @property
    def evaluated(self) -> nn.Module:
        """What a fold validates and saves as best.pt: the EMA, the SWA mean once an epoch is in it, or the model."""
        if self.ema is not None:
            return self.ema.module
        return self.swa.module if self.swa is not None and self.swa.count else self.model


def save_checkpoint(path: Path, t: Trainer, state: FoldState) -> None:
    """Write ``last.pt`` (``path``), then ``state.json`` beside it; for a finished fold, ``state.json`` alone, then
    ``last.pt`` goes (a finished fold never resumes, and its optimiser state would be gigabytes of dead weight)."""
    if state.finished:
        write_state(state_path(path), state)
        Path(path).unlink(missing_ok=True)
        return
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    ckpt = {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(),
        "ema": t.ema.state_dict() if t.ema is not None else None,
        "swa": t.swa.state_dict() if t.swa is not None else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng},  # dropout, drop-path
        "state": vars(state),
    }
    with atomic_path(path, size=payload_bytes(ckpt)) as tmp:
        torch.save(ckpt, tmp)
    write_state(state_path(path), state)


def state_path(last: Path) -> Path:
    """``foldK/state.json`` beside ``foldK/last.pt`` (``RunLayout.state``)."""
    return Path(last).with_name("state.json")


def load_checkpoint(path: Path, t: Trainer) -> FoldState:
    """Restore ``t`` and the RNG states from ``last.pt``; returns the fold's progress."""
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
    if t.swa is not None:
        if ckpt.get("swa") is None:
            raise ConfigError(f"{path} was trained without --swa-epochs; resume with the same settings")
        t.swa.load_state_dict(ckpt["swa"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    cuda_rng = ckpt["rng"]["cuda"]
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)  # on another GPU count the CUDA streams simply start afresh
    return FoldState(**ckpt["state"])


def read_fold_state(path: Path) -> FoldState:
    """Only the progress of the fold whose ``last.pt`` is ``path`` (is it finished, its best AUC, its history):
    from ``state.json`` (a finished fold has no ``last.pt``), or from ``last.pt`` itself for a fold written before
    hcd kept ``state.json``."""
    try:
        state = read_state(state_path(path))
    except DataError as exc:  # damaged: last.pt holds the same progress
        try:
            return FoldState(**_read_checkpoint(path)["state"])
        except DataError:
            raise exc from None
    return state if state is not None else FoldState(**_read_checkpoint(path)["state"])


def _read_checkpoint(path: Path) -> dict:
    """``last.pt`` as a dict, or a one-line DataError saying how to recover from a damaged file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "scheduler", "state"} <= set(ckpt):
            raise ValueError("not a checkpoint written by hcd train")
        return ckpt
    except Exception as exc:  # noqa: BLE001 - a damaged file makes torch raise any kind (KeyError, IndexError, ...)
        from hcd_kit.damage import torch_problem

        why = exc if isinstance(exc, (ValueError, OSError)) else ValueError(torch_problem(path, exc))
        raise _unresumable(path, why) from None


def _unresumable(path: Path, exc: BaseException) -> DataError:
    first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return DataError(f"cannot resume from {path} ({first}); delete it to restart the fold")


def size_of(t: Trainer) -> CheckpointSize:
    """The sizes of the fold ``t`` trains, from its built model (what ``hcd train`` checks before a fold)."""
    weights = payload_bytes(t.model.state_dict())
    trained = sum(p.numel() * p.element_size() for p in t.model.parameters() if p.requires_grad)
    moments = 1 if isinstance(t.optimizer, torch.optim.SGD) else 2
    return CheckpointSize(weights, moments * trained, weights if t.ema is not None or t.swa is not None else 0)


def checkpoint_size(cfg) -> CheckpointSize | None:
    """``best.pt`` and ``last.pt`` of one fold trained with ``cfg`` (a ``TrainConfig``), from the model's size on
    the meta device (nothing downloaded or allocated); None when the model cannot be sized offline.

    The weights train in fp32 (mixed precision keeps fp32 masters), so every moment is as large as the trained
    parameters: all of them, or none of the backbone's with --lora (only the small adapters and the head train).
    --train-blocks is counted as training everything (an upper bound)."""
    from hcd_kit.backbones import resolve
    from hcd_kit.model import model_size

    try:
        size = resolve(cfg.model).input_size or cfg.img_size  # a foundation model trains at its own input size
    except ConfigError:
        return None
    sized = model_size(cfg.model, size)
    if sized is None:
        return None
    trained = 0 if cfg.lora else sized.param_bytes
    moments = 1 if cfg.optimizer == "sgd" else 2
    averaged = sized.state_bytes if cfg.ema or cfg.swa_epochs else 0  # a second copy of the weights in last.pt
    return CheckpointSize(sized.state_bytes, moments * trained, averaged)
