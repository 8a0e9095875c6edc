"""Command: ``hcd download`` (fetch and unpack the competition data through the Kaggle API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import COMPETITION, Competition, command, fail


@command()
def download(
    competition: Competition = COMPETITION,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", metavar="DIR", help="Folder to fill with train/, test/ and the two CSVs.")
    ] = Path("data"),
    stall_timeout: Annotated[
        Optional[float],
        typer.Option(
            metavar="SECONDS",
            show_default="$HCD_KAGGLE_TIMEOUT or 120",
            help="Give up after this many seconds without progress.",
        ),
    ] = None,
    retries: Annotated[
        Optional[int],
        typer.Option(
            metavar="N",
            min=0,
            show_default="$HCD_KAGGLE_RETRIES or 3",
            help="Retries on HTTP 429/5xx, with exponential backoff.",
        ),
    ] = None,
) -> None:
    """Download the competition data (needs Kaggle credentials and accepted competition rules).

    Streams the competition zip into DATA_DIR/.hcd-download/, checks every member (CRC; no absolute
    paths, '..', symlinks, or top-level names hcd uses itself such as packed/ and folds.csv), extracts
    it and moves train/, test/, train_labels.csv and sample_submission.csv into DATA_DIR, then writes
    DATA_DIR/.hcd-download.json last. Running it
    again over a complete download does nothing; after an interruption it resumes or redoes what is
    missing. Credentials: KAGGLE_USERNAME + KAGGLE_KEY, ~/.kaggle/kaggle.json or KAGGLE_API_TOKEN.

    Example: hcd download --data-dir data
    """
    if stall_timeout is not None and stall_timeout <= 0:  # the library takes any number: checked here, once
        raise fail("--stall-timeout must be positive (seconds without progress before giving up)", 2)
    from hcd_kit.console import console
    from hcd_kit.kaggle import download_competition

    result = download_competition(data_dir, competition, stall_timeout=stall_timeout, retries=retries)
    size = f"{result.archive_bytes / 1e9:.2f} GB" if result.archive_bytes >= 1e8 else f"{result.archive_bytes:,} bytes"
    if result.skipped:
        console.print(
            f"{competition} is already downloaded and complete in {data_dir} ({result.files:,} files); nothing to do",
            soft_wrap=True,
        )
    else:
        console.print(
            f"downloaded {competition} into {data_dir}: {result.files:,} files "
            f"({', '.join(result.entries)}) from a {size} archive",
            soft_wrap=True,
        )
