"""Command: runs (every run in one table; see ``hcd_kit.runs.table``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command

_WIDE_ONLY = ("kind", "recipe", "px", "epochs", "subs")  # columns left out of the printed table below 130 columns


@command()
def runs(
    dirs: Annotated[Optional[list[Path]], typer.Argument(metavar="DIR", hidden=True)] = None,  # in the docstring
    sort: Annotated[
        str,
        typer.Option(
            metavar="COLUMN",
            help="Sort by this column (a --json key, e.g. cv_auc, cv_auc_tta, public_best, model, "
            "train_s, run); AUCs and scores best first, the rest ascending, missing last.",
        ),
    ] = "cv_auc",
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print the rows as a JSON list instead.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", metavar="", help="Print the rows as CSV instead.")] = False,
    ledger: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            show_default="submissions/ledger.jsonl of the nearest folder up that has submissions/",
            help="Submission ledger whose records give each run's best public and private scores.",
        ),
    ] = None,
    page: Annotated[
        bool,
        typer.Option(
            "--page/--no-page",
            metavar="",
            help="Write index.html (the table, with links to each run's report.html) into the first DIR.",
        ),
    ] = True,
) -> None:
    """Every run in one table: model, recipe, input size, epochs, folds done, CV AUC with and without TTA,
    training time, and the best public and private scores of its submissions.

    Finds the runs under runs/, or in each DIR given (a run folder, or one holding runs). CV AUC is the pooled
    out-of-fold AUC of RUN/fold*/oof.csv (as `hcd cv`); TTA AUC is that of RUN/oof_tta{N}.csv for the largest N
    (`hcd predict --tta N`); the time is summed over folds from train.log; the scores come from the ledger's
    submissions whose sidecar names the run. A broken run is a row with a note. Also writes DIR/index.html (for
    the first DIR; its parent when DIR is itself a run), a self-contained page with the same table and a link to each run's report.html (`hcd report`).

    Example: hcd runs --sort cv_auc_tta
    """
    import csv
    import json
    import sys

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from hcd_kit.console import console, err_console
    from hcd_kit.errors import ConfigError, DataError, HcdError
    from hcd_kit.kaggle.ledger import ledger_path, read_ledger
    from hcd_kit.runs.page import write_page
    from hcd_kit.runs.table import (
        COLUMNS,
        DISPLAY,
        NUMERIC,
        TIME_NOTE,
        cells,
        check_sort,
        find_runs,
        is_run,
        runs_table,
    )

    if as_json and as_csv:
        raise ConfigError("--json and --csv both print the rows: choose one")
    check_sort(sort)
    folders = dirs or [Path("runs")]
    if not dirs and not folders[0].is_dir():
        raise DataError("no runs/ folder here; train a run first (`hcd train`) or pass the folder(s) holding runs")
    found = find_runs(folders)
    if not found:
        raise DataError(f"no run folders in {', '.join(map(str, folders))}; pass a run folder or one that holds runs")
    try:
        records = read_ledger(ledger_path(ledger))
    except (HcdError, OSError) as exc:  # the scores are a column, not the point: the table goes on without them
        err_console.print(
            f"[yellow]warning:[/] {escape(str(exc))}; the public/private columns are left blank", soft_wrap=True
        )
        records = []
    rows = runs_table(found, folders, records, sort)
    if page:
        home = folders[0].parent if is_run(folders[0]) else folders[0]  # never inside a run folder
        written = write_page(rows, home / "index.html")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv:
        out = csv.DictWriter(sys.stdout, fieldnames=list(COLUMNS), lineterminator="\n")
        out.writeheader()
        out.writerows(rows)
    else:
        narrow = console.width < 130  # then the columns that matter least stay in --json, --csv and index.html
        shown = [h for h in DISPLAY if not (narrow and h in _WIDE_ONLY)]
        caption = TIME_NOTE + (f". Hidden at this width: {', '.join(_WIDE_ONLY)}" if narrow else "")
        table = Table(title=f"{len(rows)} run(s)", caption=caption, box=box.MINIMAL, pad_edge=False)
        for head in shown:
            numeric = head in NUMERIC
            table.add_column(head, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
        for row in rows:
            table.add_row(*(cell for head, cell in zip(DISPLAY, cells(row)) if head in shown))
        console.print(table)
        for row in rows:
            if row["note"]:
                console.print(f"[yellow]note[/] {escape(row['run'])}: {escape(row['note'])}", soft_wrap=True)
    if page:
        err_console.print(f"wrote {written}", soft_wrap=True, highlight=False)
