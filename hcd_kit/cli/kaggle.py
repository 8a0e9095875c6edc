"""Commands that submit to Kaggle: submit and submissions (the ledger), and the option types every Kaggle
command shares (``cli/kernel.py`` has the kernel and dataset commands).

Every Kaggle call goes through ``hcd_kit.kaggle.api`` (credentials check, time limit, retries, one-line
errors); the library modules are ``hcd_kit.kaggle.submit`` and ``hcd_kit.kaggle.ledger``. Credentials come
from KAGGLE_USERNAME + KAGGLE_KEY, ~/.kaggle/kaggle.json or KAGGLE_API_TOKEN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import COMPETITION, Competition, command, fail

Timeout = Annotated[
    Optional[float],
    typer.Option(
        metavar="SECONDS", show_default="$HCD_KAGGLE_TIMEOUT or 120", help="Seconds one Kaggle call may take."
    ),
]
TransferTimeout = Annotated[float, typer.Option(metavar="SECONDS", help="Seconds the whole transfer may take.")]
LEDGER_DEFAULT = "submissions/ledger.jsonl of the nearest folder up that has submissions/"
Ledger = Annotated[Optional[Path], typer.Option(metavar="FILE", show_default=LEDGER_DEFAULT, help="Ledger file.")]
Poll = Annotated[float, typer.Option(metavar="SECONDS", help="Seconds between the first polls (backs off to 60 s).")]
Name = Annotated[str, typer.Option(metavar="NAME", help="Kernel slug, or owner/slug.")]
DatasetWait = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        help="Seconds to wait until Kaggle has processed the upload (READY: a kernel pushed next attaches it; a "
        "version pushed before gets HTTP 403). A new version also waits for the previous one first.",
    ),
]
DatasetPoll = Annotated[
    float, typer.Option(metavar="SECONDS", help="Seconds between the first status calls while Kaggle processes it.")
]
NoWait = Annotated[
    bool,
    typer.Option(
        "--no-wait",
        metavar="",
        help="Return once the upload is accepted, without waiting for READY (`hcd kernel push|run` still waits "
        "for it before pushing a kernel that attaches it).",
    ),
]


def push_and_report(
    folder, notes: str, ref: str, transfer_timeout: float, wait_timeout: float, no_wait: bool, poll: float
) -> None:
    """Push the assembled dataset ``folder`` (waiting for READY unless ``no_wait``) and say what was done."""
    from hcd_kit.kaggle import push_dataset

    res = push_dataset(
        folder,
        notes,
        transfer_timeout=transfer_timeout,
        wait_timeout=None if no_wait else wait_timeout,
        on_status=dataset_status_line(ref),
        poll=poll,
    )
    dataset_pushed(res, no_wait)


def dataset_pushed(res, no_wait: bool) -> None:
    """Print what `hcd dataset push` / `hcd weights push` did."""
    from hcd_kit.console import console

    what = "created" if res.created else "new version of"
    state = "; Kaggle is processing it (not waited for)" if no_wait else f", {res.status.upper()}"
    console.print(f"{what} dataset {res.ref}{state} {res.url}".rstrip(), soft_wrap=True, highlight=False)


def dataset_status_line(ref: str):
    """``on_status`` for ``push_dataset``: one line per new processing status while it waits."""
    import time

    from hcd_kit.console import console

    seen: list[str] = []
    start = time.monotonic()

    def show(status: str) -> None:
        if status != "ready" and status not in seen:
            seen.append(status)
            console.print(
                f"  dataset {ref}: Kaggle is processing it ({status}, {time.monotonic() - start:.0f} s); waiting "
                "until it is READY",
                soft_wrap=True,
                highlight=False,
            )

    return show


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


@command()
def submit(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", dir_okay=False, help="Submission CSV (id,label), e.g. from `hcd predict`.")
    ],
    message: Annotated[str, typer.Option("--message", "-m", metavar="TEXT", help="Description shown on Kaggle.")],
    wait: Annotated[bool, typer.Option(metavar="", help="Wait until Kaggle scores it and print the scores.")] = False,
    data_dir: Annotated[Path, typer.Option(metavar="DIR", help="Folder with sample_submission.csv.")] = Path("data"),
    competition: Competition = COMPETITION,
    timeout: Timeout = None,
    wait_timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds --wait waits for a score.")] = 3600.0,
    ledger: Ledger = None,
    poll_interval: Poll = 10.0,
) -> None:
    """Check a submission file, upload it to the competition, and record it in the ledger.

    The file must have the header id,label, exactly the ids of DATA_DIR/sample_submission.csv and labels
    in [0, 1]; otherwise every problem is listed and nothing is uploaded. An accepted submission is
    appended to the ledger (file sha256, message, the runs / CV AUC / TTA from the `<file>.json` sidecar
    `hcd predict` writes, Kaggle's ref, status and scores): --ledger, else submissions/ledger.jsonl of
    the nearest folder from here up that has a submissions/ folder (the project's, from any subfolder;
    the walk stops at the top of a git checkout), else of the current folder.

    Example: hcd submit runs/r18/submission.csv -m "resnet18 5 folds tta8" --wait
    """
    from hcd_kit.console import console
    from hcd_kit.kaggle import ledger_path, submit_file, wait_for_score
    from hcd_kit.layout import DataLayout

    path = ledger_path(ledger)
    rec = submit_file(file, message, DataLayout.of(data_dir).sample_submission, competition, path, timeout)
    cv = f" (CV AUC {rec.cv_auc:.5f})" if rec.cv_auc is not None else ""
    console.print(f"submitted {file} as ref {rec.ref}{cv}; recorded in {path}", soft_wrap=True)
    if wait:
        rec = wait_for_score(
            rec,
            path,
            wait_timeout=wait_timeout,
            poll=poll_interval,
            timeout=timeout,
            on_poll=lambda r: console.print(f"  submission {r.ref}: {r.status}"),
        )
        if rec.status == "ERROR":
            from rich.markup import escape

            why = f": {escape(rec.error_description)}" if rec.error_description else "; see its page for the reason"
            raise fail(f"Kaggle could not score submission {rec.ref}{why}")
        console.print(f"public score {_score(rec.public_score)}  private score {_score(rec.private_score)}")


@command()
def submissions(
    refresh: Annotated[
        bool, typer.Option(metavar="", help="Fetch current status and scores from Kaggle first.")
    ] = True,
    ledger: Ledger = None,
    timeout: Timeout = None,
) -> None:
    """List the ledger of submissions (newest last) with their runs, CV AUC and Kaggle scores; a failed
    one (ERROR) shows Kaggle's reason.

    With --refresh (the default) unfinished records are updated from Kaggle and saved back to the ledger.
    The ledger is --ledger, else the one `hcd submit` writes: submissions/ledger.jsonl of the nearest
    folder from here up that has a submissions/ folder, else of the current folder.

    Example: hcd submissions --no-refresh
    """
    from rich.markup import escape
    from rich.table import Table

    from hcd_kit.console import console, err_console
    from hcd_kit.errors import KaggleError
    from hcd_kit.kaggle import ledger_path, read_ledger, refresh_ledger

    path = ledger_path(ledger)
    records = read_ledger(path)
    if refresh and records:
        try:
            records = refresh_ledger(path, timeout)
        except KaggleError as exc:  # the local ledger is still worth showing
            err_console.print(f"[yellow]warning:[/] scores not refreshed: {exc}", soft_wrap=True)
    if not records:
        console.print(f"no submissions recorded in {path} yet; make one with `hcd submit FILE -m MSG`", soft_wrap=True)
        return
    console.print(f"ledger: {path}", soft_wrap=True)  # a path in the title would be folded to the table's width
    table = Table(title="submissions")
    table.add_column("ref / UTC", no_wrap=True)
    table.add_column("message / file, runs, tta", overflow="fold", ratio=1)
    for col in ("CV AUC", "status", "public", "private"):  # the numbers compared: never cut short
        table.add_column(col, no_wrap=True, justify="right")
    for r in records:
        source = ", ".join([Path(r.file).name, *(Path(x).name for x in r.runs)] + ([f"tta {r.tta}"] if r.tta else []))
        table.add_row(
            f"{r.ref or '-'}\n[dim]{r.time[:16].replace('T', ' ')}[/]",
            f"{escape(r.message)}\n[dim]{escape(source)}[/]"
            + (f"\n[red]error: {escape(r.error_description)}[/]" if r.error_description else ""),
            _score(r.cv_auc),
            r.status,
            _score(r.public_score),
            _score(r.private_score),
        )
    console.print(table)
