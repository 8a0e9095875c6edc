"""Commands: ``hcd prepare`` (pack the patches into the memory-mapped store) and ``hcd folds`` (CV split)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command
from hcd_kit.console import console


class SplitChoice(str, Enum):  # noqa: UP042  (Typer renders a str Enum's values as the choices)
    train = "train"
    test = "test"
    all = "all"


DataDir = Annotated[Path, typer.Option(metavar="DIR", help="Competition folder: train/, test/, train_labels.csv, ...")]


@command()
def prepare(
    data_dir: DataDir = Path("data"),
    out_dir: Annotated[
        Optional[Path], typer.Option(metavar="DIR", show_default="DATA_DIR/packed", help="Where to write the store.")
    ] = None,
    split: Annotated[
        SplitChoice,
        typer.Option(metavar="SPLIT", help="Which split to pack; 'all' packs every split whose folder exists."),
    ] = SplitChoice.all,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad", metavar="", help="Leave out bad images/rows (recorded in the manifest) instead of failing."
        ),
    ] = False,
    workers: Annotated[
        Optional[int], typer.Option(min=1, metavar="N", show_default="all cores", help="Processes to decode with.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", metavar="", help="Pack again even when the manifest says the inputs are unchanged."),
    ] = False,
) -> None:
    """Decode every TIFF patch once into a memory-mapped uint8 store that training reads at memory speed.

    Writes OUT_DIR/{train,test}_images.npy (uint8 N x 96 x 96 x 3), OUT_DIR/{train,test}_ids.csv (id[,label], same
    row order) and, last, OUT_DIR/manifest.json. Corrupt, truncated, wrong-size, non-RGB and missing images and
    bad label rows stop the command: the error names a few, DATA_DIR/prepare-problems.csv lists them all,
    and no store is written unless you pass --skip-bad (then the manifest lists what was left out).
    Re-running on unchanged inputs does nothing, unless a packed file is damaged (then that split is packed
    again) or you pass --force.

    Example: hcd prepare --data-dir data
    """
    from hcd_kit.data import prepare as run_prepare
    from hcd_kit.layout import StoreLayout

    splits = ("train", "test") if split is SplitChoice.all else (split.value,)
    summary = run_prepare(data_dir, out_dir=out_dir, splits=splits, skip_bad=skip_bad, workers=workers, force=force)
    for r in summary.splits.values():
        if r.up_to_date:
            console.print(f"{r.split}: {r.count:,} images, up to date (nothing to do)")
        else:
            rate = f", {r.images_per_s:,.0f} images/s" if r.seconds > 0 else ""
            console.print(f"{r.split}: packed {r.count:,} images{rate}")
        for kind, names in r.skipped.items():
            console.print(f"{r.split}: [yellow]skipped {len(names)} {kind}[/] ({_some(names)})", soft_wrap=True)
    if any(r.skipped for r in summary.splits.values()):
        console.print(f"every skipped input is listed in {StoreLayout(summary.out).manifest}", soft_wrap=True)
    console.print(f"store: {summary.out}", soft_wrap=True)


@command()
def folds(
    data_dir: DataDir = Path("data"),
    n_folds: Annotated[int, typer.Option(metavar="N", help="Number of folds.")] = 5,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=2**32 - 1,
            metavar="N",
            help="Shuffle seed (0 to 2^32-1); the same seed always gives the same folds.",
        ),
    ] = 0,
    groups: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="CSV mapping patch id to slide (id + wsi/slide/group, or two columns): no slide spans two folds.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(metavar="FILE", show_default="DATA_DIR/folds.csv", help="Where to write.")
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            metavar="",
            help="Leave out bad label rows (as `hcd prepare --skip-bad` does) instead of failing.",
        ),
    ] = False,
) -> None:
    """Split the training patches into stratified cross-validation folds and write DATA_DIR/folds.csv (id,fold).

    Reads only train_labels.csv (no packed store needed). With --groups, folds are also grouped by slide,
    so validation never sees a slide the model trained on; ids missing from that file, or with no slide
    there, are reported and each kept as its own group, and a file that gives a slide to fewer than half
    the ids is refused. Bad label rows (duplicate or empty ids, labels
    other than 0/1) are listed in DATA_DIR/folds-problems.csv and stop the command unless you pass
    --skip-bad. Prints the size and positive rate of every fold.

    Example: hcd folds --data-dir data --n-folds 5 --seed 0
    """
    from hcd_kit.data import create_folds
    from hcd_kit.data.folds import floor_percent

    summary = create_folds(data_dir, n_folds=n_folds, seed=seed, groups=groups, out=out, skip_bad=skip_bad)
    for kind, names in summary.skipped.items():
        console.print(f"[yellow]skipped {len(names)} {kind}[/] ({_some(names)})", soft_wrap=True)
    if summary.skipped and summary.report is not None:
        console.print(f"every skipped row is listed in {summary.report}", soft_wrap=True)
    if summary.groups is not None:
        n, other = sum(summary.counts), len(summary.ungrouped)
        rest = f"; the other {other:,} each form a group of their own, {summary.groups:,} groups in all"
        console.print(
            f"grouped {n - other:,} of {n:,} patches ({floor_percent(n - other, n)}) into "
            f"{summary.slides:,} slides{rest if other else ''}",
            soft_wrap=True,
        )
    if summary.ungrouped:
        console.print(
            f"[yellow]{len(summary.ungrouped)} id(s) not in {groups} or with no slide there[/] "
            f"({_some(summary.ungrouped)})",
            soft_wrap=True,
        )
    for k, (n, rate) in enumerate(zip(summary.counts, summary.positive_rates)):
        console.print(f"fold {k}: {n:,} patches, {rate:.1%} positive")
    console.print(f"wrote {summary.path}", soft_wrap=True)


def _some(names: list[str], n: int = 3) -> str:
    """The first few names, and "..." when there are more (full lists go to files, not the terminal)."""
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")
