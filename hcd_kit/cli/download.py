"""Command: ``hcd download`` (fetch and unpack the competition data through the Kaggle API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import app, fail, handle_errors


@app.command()
@handle_errors
def download(
    competition: Annotated[
        str, typer.Option(help="Kaggle competition slug, as in its URL (lowercase letters, digits, hyphens).")
    ] = "histopathologic-cancer-detection",
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder to fill with train/, test/ and the two CSVs.")
    ] = Path("data"),
    timeout: Annotated[
        Optional[float],
        typer.Option(help="Give up after this many seconds without progress \\[default: $HCD_KAGGLE_TIMEOUT or 120]."),
    ] = None,
    retries: Annotated[
        Optional[int],
        typer.Option(help="Retries on HTTP 429/5xx, with exponential backoff \\[default: $HCD_KAGGLE_RETRIES or 3]."),
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
    if timeout is not None and timeout <= 0:
        raise fail("--timeout must be positive (seconds without progress before giving up)", 2)
    if retries is not None and retries < 0:
        raise fail("--retries must be 0 or more", 2)
    from hcd_kit.console import console
    from hcd_kit.kaggle.download import download_competition

    result = download_competition(data_dir, competition, timeout=timeout, retries=retries)
    size = f"{result.archive_bytes / 1e9:.2f} GB" if result.archive_bytes >= 1e8 else f"{result.archive_bytes:,} bytes"
    if result.skipped:
        console.print(f"{competition} is already downloaded and complete in {data_dir} "
                      f"({result.files:,} files); nothing to do", soft_wrap=True)
    else:
        console.print(f"downloaded {competition} into {data_dir}: {result.files:,} files "
                      f"({', '.join(result.entries)}) from a {size} archive", soft_wrap=True)
