"""Command group: dataset (push the Kaggle dataset that carries hcd_kit's wheel, and a run's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from hcd_kit.cli._app import command, group
from hcd_kit.cli._kernel_options import opt as _opt
from hcd_kit.cli.kaggle import DatasetPoll, DatasetWait, NoWait, TransferTimeout, push_and_report

dataset_app = group(
    "dataset",
    "Kaggle datasets that carry hcd_kit (its wheel) and trained weights into offline "
    "kernels.\n\nExample: hcd dataset push --dry-run",
)


@command(dataset_app, "push")
def dataset_push(
    run_dir: Annotated[Optional[Path], _opt("Also ship this run's config.toml and fold weights.", "DIR")] = None,
    name: Annotated[
        Optional[str], _opt("Dataset slug.", "NAME", show_default="hcd-kit, or hcd-weights with --run-dir")
    ] = None,
    wheel: Annotated[Optional[Path], _opt("Use this hcd_kit wheel instead of building one.", "FILE")] = None,
    out_dir: Annotated[
        Optional[Path], _opt("Folder to assemble the dataset in.", "DIR", show_default="build/kaggle/NAME")
    ] = None,
    notes: Annotated[str, _opt("Version notes when the dataset exists already.", "TEXT")] = "hcd update",
    dry_run: Annotated[bool, _opt("Assemble the folder but do not upload it.")] = False,
    transfer_timeout: TransferTimeout = 3600.0,
    wait_timeout: DatasetWait = 1800.0,
    no_wait: NoWait = False,
    poll_interval: DatasetPoll = 5.0,
) -> None:
    """Build and upload the Kaggle dataset that kernels install hcd_kit from (plus weights with --run-dir).

    The folder holds the hcd_kit wheel (`pip wheel` of this repository, or --wheel), and with --run-dir
    the run's config.toml and fold{k}_best.pt / fold{k}_oof.csv, plus dataset-metadata.json. The
    dataset is created, or versioned when it exists, and the command waits until Kaggle has processed it (READY),
    so a kernel pushed next attaches it: --wait-timeout, or --no-wait (then `hcd kernel push|run` waits instead).

    Example: hcd dataset push --run-dir runs/resnet18 --name hcd-weights-r18
    """
    from hcd_kit.console import console
    from hcd_kit.kaggle import WHEEL_DATASET, build_dataset, check_slug
    from hcd_kit.kaggle import api as kaggle_api

    slug = name or ("hcd-weights" if run_dir else WHEEL_DATASET)
    check_slug(slug)
    ref = f"{kaggle_api.username()}/{slug}"
    folder = out_dir or Path("build") / "kaggle" / slug
    names = build_dataset(folder, ref, wheel=wheel, run_dir=run_dir)
    console.print(f"assembled {folder}/: {', '.join(names)}", soft_wrap=True)
    if dry_run:
        return
    push_and_report(folder, notes, ref, transfer_timeout, wait_timeout, no_wait, poll_interval)
