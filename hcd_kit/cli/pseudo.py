"""Command: pseudo (confident test predictions -> a pseudo-label file for `hcd train --pseudo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command


@command()
def pseudo(
    pred: Annotated[
        Path,
        typer.Option(
            metavar="FILE",
            help="Test predictions: an id,label submission (label = probability), e.g. from `hcd predict`.",
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(
            metavar="DIR", help="Competition folder whose packed test store (`hcd prepare`) the ids belong to."
        ),
    ] = Path("data"),
    min_confidence: Annotated[
        float, typer.Option(metavar="C", help="Keep prob >= C as label 1 and prob <= 1 - C as label 0; C in (0.5, 1).")
    ] = 0.95,
    max_per_class: Annotated[
        Optional[int],
        typer.Option(metavar="N", show_default="no limit", help="Keep at most the N most confident ids of each class."),
    ] = None,
    out: Annotated[Path, typer.Option(metavar="FILE", help="Pseudo-label CSV to write (id,label,prob).")] = Path(
        "pseudo-labels.csv"
    ),
) -> None:
    """Select confident test predictions as pseudo-labels for another round of training.

    Reads --pred, keeps the ids the model is sure about (prob >= C becomes label 1, prob <= 1 - C label 0)
    and writes OUT as id,label,prob in the packed test store's order. Every id must be in DATA_DIR's packed
    test store. `hcd train --pseudo OUT` adds these test patches to every fold's training part, never to a
    validation part, so the out-of-fold AUC stays honest.

    Example: hcd pseudo --pred submissions/r18_tta8.csv --min-confidence 0.97 --out pseudo.csv
    """
    from hcd_kit.console import console
    from hcd_kit.data import write_pseudo
    from hcd_kit.inference import select_pseudo

    sel = select_pseudo(pred, data_dir, min_confidence=min_confidence, max_per_class=max_per_class)
    write_pseudo(out, sel.frame)
    low = 1 - sel.min_confidence
    capped = f" ({sel.capped} more confident ones left out by --max-per-class)" if sel.capped else ""
    console.print(
        f"kept {len(sel.frame)} of {sel.total} test predictions at confidence {sel.min_confidence:g}: "
        f"{sel.positives} as label 1 (prob >= {sel.min_confidence:g}), {sel.negatives} as label 0 "
        f"(prob <= {low:.4g}){capped}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"wrote {out}. Next: hcd train --data-dir {data_dir} --pseudo {out} --run-dir RUN",
        soft_wrap=True,
        highlight=False,
    )
