"""Command: models (the registry of pathology foundation models, with licence, gating, size and cost)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from hcd_kit.cli._app import command
from hcd_kit.training.costs import COMPETITION_SIZE

PATCHES = sum(COMPETITION_SIZE)  # the competition's train + test patches: one pass of `hcd embed`


def _hours(images_per_s: float, views: int = 1) -> str:
    if not images_per_s or math.isnan(images_per_s):
        return "n/a"
    h = PATCHES * views / images_per_s / 3600
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min"


@command()
def models(
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the registry as JSON.")] = False,
) -> None:
    """List the pathology foundation models hcd knows: hub id, licence, gating, input size, features, cost.

    Any of these names works as --model for `hcd embed` (frozen features, then `hcd probe`) and
    `hcd train` (fine-tuning), as do any timm name, hf-hub:ORG/NAME and local-dir:FOLDER. The registry
    supplies what timm alone does not know: extra create_model arguments, the normalisation and the input
    size (96 px patches are upscaled on the device).

    Gated models need an access request on their hub page and a token (HF_TOKEN) where the hub is reachable;
    on Kaggle, either internet on with the token as a Kaggle secret (`hcd kernel push --hub-secret NAME`)
    or a private dataset of the weights (`hcd weights push NAME`, then `--pretrained-from`). Models whose
    licence forbids redistribution (NC-ND) may only be kept as a private copy for your own use.

    T4 img/s is a rough estimate (multiply-adds at the input size against ~12 TFLOP/s of effective fp16 on
    one T4); the embed column is one view of all 277,483 competition patches on T4 x2 at that rate.
    PCam is the published linear-probe balanced accuracy on PatchCamelyon (kaiko-ai's eva leaderboard).

    Example: hcd models
    """
    from rich.table import Table

    from hcd_kit.backbones import entries
    from hcd_kit.console import console

    rows = entries()
    if as_json:
        out = [
            {
                "name": e.name,
                "hub": e.hub,
                "url": e.url,
                "architecture": e.architecture,
                "input_size": e.input_size,
                "features": e.features,
                "pool": e.pool,
                "params_m": e.params_m,
                "licence": e.licence,
                "gated": e.gated,
                "redistribute": e.redistribute,
                "t4_images_per_s": round(e.t4_images_per_s, 1),
                "pcam": e.pcam,
                "about": e.about,
            }
            for e in rows
        ]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="pathology foundation models (--model NAME)")
    table.add_column("name", no_wrap=True)
    table.add_column("licence", overflow="fold")
    for col, justify in (
        ("gated", "center"),
        ("rehost", "center"),
        ("px", "right"),
        ("dim", "right"),
        ("T4 img/s", "right"),
        ("embed", "right"),
        ("PCam", "right"),
    ):
        # a narrow terminal folds a header or a number onto two lines rather than cut it short with "…"
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for e in rows:
        table.add_row(
            f"[bold]{e.name}[/]",
            e.licence,
            "yes" if e.gated else "no",
            "yes" if e.redistribute else "no",
            str(e.input_size),
            str(e.features),
            f"{e.t4_images_per_s:,.0f}",
            _hours(2 * e.t4_images_per_s),
            f"{e.pcam:.3f}" if e.pcam else "",
        )
    console.print(table)
    console.print(
        "px: input size; dim: feature length; embed: one view of all competition patches on T4 x2; "
        "PCam: published linear-probe balanced accuracy",
        soft_wrap=True,
    )
    for e in rows:
        console.print(f"  {e.name:<14} {e.url}  {e.about}", soft_wrap=True, markup=False)
    console.print(
        "gated: request access on the hub page (https://huggingface.co/ORG/NAME) and set HF_TOKEN; "
        "offline, use local-dir:FOLDER or --weights FILE",
        soft_wrap=True,
    )
