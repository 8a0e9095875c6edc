"""Command: train (cross-validated timm training on the packed store; see ``hcd_kit.training.loop``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import app, handle_errors


def parse_folds(spec: str | None) -> list[int] | str | None:
    """None (not given: every fold, or with --resume the run's own) -> None; 'all' -> 'all'; '0,2' -> [0, 2]."""
    from hcd_kit.errors import ConfigError

    if spec is None:
        return None
    if spec.strip().lower() == "all":
        return "all"
    try:
        folds = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--fold must be 'all', a fold number or a list like 0,2; got '{spec}'") from None
    if not folds:
        raise ConfigError("--fold is empty; use 'all', a fold number or a list like 0,2")
    return folds


@app.command()
@handle_errors
def train(
    data_dir: Annotated[Path, typer.Option(help="Competition folder with packed/ (hcd prepare) and folds.csv (hcd folds).")],
    fold: Annotated[Optional[str], typer.Option(help="Fold(s) to train: 'all', one number, or a list like 0,2 \\[default: all; with --resume, the folds the run was started for].")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints, logs and OOF go \\[default: runs/MODEL].")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with TrainConfig keys; flags override it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted folds from last.pt; finished folds are skipped.")] = False,
    model: Annotated[Optional[str], typer.Option(help="Any timm model name \\[default: resnet18].")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help="Start from ImageNet weights (hub) \\[default: on].")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local pretrained weights file for offline use (implies --pretrained).")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Upscale the 96 px patches to this size on the device \\[default: 96].")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per fold \\[default: 8].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size per process (x ranks under ddp) \\[default: 128].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate \\[default: 1e-3].")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw or sgd (Nesterov momentum).")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Per-step LR schedule: onecycle or cosine (with warm-up).")] = None,
    ema: Annotated[Optional[bool], typer.Option("--ema/--no-ema", help="Validate and save an EMA of the weights \\[default: off].")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop a fold after N epochs without better val AUC; 0 = never.")] = None,
    imbalance: Annotated[Optional[str], typer.Option(help="none, pos-weight (BCE weight neg/pos) or balanced (50/50 resampling).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (fp16 on CUDA, bf16 on CPU), fp16, bf16 or fp32.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="auto, single, dp (DataParallel), ddp (under torchrun) or fold-parallel.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=2**32 - 1, help="Seed for weights init, shuffling and augmentation (0 to 2^32-1).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch; 0 = cores / processes.")] = None,
) -> None:
    """Train a timm model on one fold, several or all, keeping honest out-of-fold (OOF) predictions.

    Needs DIR/packed (`hcd prepare`) and DIR/folds.csv (`hcd folds`).
    Writes RUN/config.toml, RUN/train.log and, per fold, RUN/foldK/ best.pt, last.pt, history.csv, oof.csv.
    oof.csv (id,fold,prob,label) holds the fold's validation predictions from its best epoch.
    Mixed precision is on by default; a step with a NaN/inf loss is skipped and counted, never trained on.

    Examples:

      hcd train --data-dir data --fold all --model resnet18 --epochs 8

      hcd train --data-dir data --run-dir runs/resnet18 --resume  (after an interruption)

      torchrun --nproc_per_node 2 -m hcd_kit train --data-dir data --fold 0 --strategy ddp

      hcd train --data-dir data --fold all --strategy fold-parallel  (one fold per GPU at a time)
    """
    from hcd_kit.training.loop import resolve_config, train as run_training

    folds = parse_folds(fold)
    overrides = dict(
        model=model, pretrained=pretrained, weights=None if weights is None else str(weights), img_size=img_size,
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, ema=ema,
        patience=patience, imbalance=imbalance, precision=precision, strategy=strategy, device=device,
        seed=seed, threads=threads,
    )
    cfg, run = resolve_config(config, overrides, run_dir, resume)
    run_training(cfg, data_dir, run, folds=folds, resume=resume)
