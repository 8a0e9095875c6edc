"""Command: recipes (the named training recipes, what each is based on and what it costs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


@command()
def recipes(
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            show_default="the competition's 220,025 + 57,458 patches; hcd-mini's 3,284 + 546 for the CPU",
            help="Size the costs for this competition folder's patches (train_labels.csv, sample_submission.csv).",
        ),
    ] = None,
    figures: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="A GPU report from `python benchmarks/gpu.py --json --out FILE`: its measured figures replace the published ones.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the training recipes: backbone, input size, epochs, what each is based on, and its expected cost.

    Costs cover five folds plus `hcd predict --tta 8`: on Kaggle's T4 x2 for the competition's data, and on a
    2-core CPU for hcd-mini's size (or both for --data-dir's). Where each throughput figure comes from is
    printed under the table. Train one with `hcd train --recipe NAME` (flags override it); with no --recipe,
    `hcd train` uses cpu on a CPU and t4x2-fast on CUDA.

    Examples:

      hcd recipes

      hcd recipes --figures gpu-report.json --json
    """
    import pandas as pd

    from hcd_kit.console import console
    from hcd_kit.layout import DataLayout
    from hcd_kit.training.costs import COMPETITION_SIZE, MINI_SIZE, rates, read_figures, run_seconds
    from hcd_kit.training.recipes import list_recipes, load_recipe

    figs = read_figures(figures) if figures else None
    sizes = {"t4x2": COMPETITION_SIZE, "cpu": MINI_SIZE}
    if data_dir is not None:
        layout = DataLayout.of(data_dir)
        n = (
            len(pd.read_csv(layout.train_labels, usecols=[0])),
            len(pd.read_csv(layout.sample_submission, usecols=[0])),
        )
        sizes = {"t4x2": n, "cpu": n}
    rows, sources = [], {}

    def cost(recipe, hardware: str) -> float | None:
        parts = [load_recipe(m.recipe) for m in recipe.members] or [recipe]
        total = 0.0
        for part in parts:
            cfg = part.config()
            r = rates(cfg.model, cfg.img_size, hardware, figs)
            if r is None:
                return None
            sources.setdefault(r.source, len(sources) + 1)
            total += run_seconds(r, cfg.epochs, *sizes[hardware])
        return total

    for r in list_recipes():
        epochs = (
            " + ".join(str(load_recipe(m.recipe).config().epochs) for m in r.members)
            if r.is_blend
            else str(r.config().epochs)
        )
        rows.append(
            {
                "name": r.name,
                "backbone": r.model,
                "input": r.img_size,
                "epochs": epochs,
                "t4x2_seconds": cost(r, "t4x2"),
                "cpu_seconds": cost(r, "cpu"),
                "for": r.hardware,
                "description": r.description,
                "based_on": r.based_on,
            }
        )
    if as_json:
        print(json.dumps({"recipes": rows, "sizes": sizes, "sources": {v: k for k, v in sources.items()}}, indent=1))
        return
    from rich.table import Table

    table = Table(title="hcd recipes (hcd train --recipe NAME)")
    for col in (
        "name",
        "backbone",
        "input",
        "epochs",
        f"T4 x2, {sizes['t4x2'][0]:,} patches",
        f"2-core CPU, {sizes['cpu'][0]:,} patches",
    ):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            row["backbone"],
            row["input"],
            row["epochs"],
            _hours(row["t4x2_seconds"]),
            _hours(row["cpu_seconds"]),
        )
    console.print(table)
    for row in rows:
        console.print(
            f"[bold]{row['name']}[/]: {row['description']} Based on {row['based_on']}.", soft_wrap=True, highlight=False
        )
    console.print("Costs are for 5 folds + TTA x8 prediction; throughput from:")
    for source, i in sources.items():
        console.print(f"  [{i}] {source}", soft_wrap=True, highlight=False)
