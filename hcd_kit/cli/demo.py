"""Command: demo (the whole pipeline offline on real patches; see ``hcd_kit.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import Device, command


@command()
def demo(
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            show_default="the shipped sample",
            help="Competition-layout folder to run on (only read, never written).",
        ),
    ] = None,
    work_dir: Annotated[
        Path,
        typer.Option(
            metavar="DIR", help="Where the demo writes everything (data links, packed store, run, submission)."
        ),
    ] = Path("hcd-demo"),
    recipe: Annotated[
        str,
        typer.Option(metavar="NAME", help="Recipe to train (see `hcd recipes`); pretrained weights are never used."),
    ] = "cpu",
    model: Annotated[
        Optional[str],
        typer.Option(metavar="NAME", show_default="the recipe's (resnet10t)", help="timm model to train from scratch."),
    ] = None,
    epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            show_default="the recipe's (20; the shipped sample: as many as fit --time-budget)",
            help="Epochs per fold (on 2 CPU cores hcd-mini's 20 take 15-35 minutes).",
        ),
    ] = None,
    time_budget: Annotated[
        Optional[str],
        typer.Option(
            metavar="DURATION",
            show_default="2m for the shipped sample without --epochs, else none",
            help="Time for training and prediction: the planner measures this machine and trains as many epochs as fit (like `hcd train --time-budget`).",
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(min=1, metavar="N", show_default="the recipe's (64)", help="Training batch size.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, metavar="N", help="Seed for weights, shuffling and augmentation.")] = 0,
    device: Device = "auto",
) -> None:
    """Run the pipeline end to end, offline, and say what it did.

    With no options it uses real competition patches shipped inside hcd (240 labelled, 40 test): prepare
    (pack) -> 5 folds -> loader throughput -> train a small model on every fold -> out-of-fold AUC ->
    predict with TTA x8 and the fold ensemble -> a validated submission.csv, all under --work-dir.
    No Kaggle account or network needed.

    Example: hcd demo --epochs 2 --work-dir hcd-demo
    """
    from rich.table import Table

    from hcd_kit.console import console
    from hcd_kit.demo import run_demo

    res = run_demo(
        work_dir=work_dir,
        data_dir=data_dir,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        seed=seed,
        recipe=recipe,
        time_budget=time_budget,
    )
    cfg = res.config
    table = Table(title="hcd demo: what it did", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # paths wrap, never cropped with "…"
    table.add_row("data", f"{res.n_train} labelled + {res.n_test} test patches in {res.data_dir}")
    table.add_row("prepare", ", ".join(f"{k}: {v:,.0f} img/s" for k, v in res.prepare_ips.items()))
    table.add_row("loader", f"{res.loader_ips:,.0f} img/s")
    chosen = f" (chosen for --time-budget {cfg.time_budget})" if cfg.time_budget else ""
    table.add_row(
        "train",
        f"recipe {recipe}: {cfg.model}, 5 folds x {cfg.epochs} epochs{chosen} in {res.seconds.get('train', 0):.0f} s",
    )
    table.add_row("precision", res.precision)
    table.add_row("CV (out-of-fold) AUC", f"{res.cv_auc:.4f}")
    if res.oof_auc_tta is not None:
        table.add_row("OOF AUC 1 view -> TTA x8", f"{res.oof_auc_1view:.4f} -> {res.oof_auc_tta:.4f}")
    if res.submission is not None:
        table.add_row("submission", f"{res.submission} (validated)")
    table.add_row("plots", ", ".join(str(p) for p in res.plots))
    table.add_row("total", f"{sum(res.seconds.values()):.0f} s")
    console.print(table)
    console.print("Next: `hcd download --data-dir data` with your Kaggle credentials, then the README's steps.")
