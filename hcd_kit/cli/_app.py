"""The Typer app, its global ``--debug`` switch, and the mapping of hcd errors to one line and an exit code."""

from __future__ import annotations

import functools
import os
from typing import Annotated, Callable, TypeVar

import typer

from ..console import err_console
from ..errors import HcdError

app = typer.Typer(
    name="hcd",
    help=(
        "hcd: the Histopathologic Cancer Detection toolkit.\n\n"
        "Pipeline: download -> prepare -> folds -> train -> cv -> predict -> submit (or run it all as a "
        "Kaggle kernel). Try `hcd demo` first: it runs end to end offline on real patches shipped with hcd."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable)


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    if debug:
        os.environ["HCD_DEBUG"] = "1"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Run a command body, turning an ``HcdError`` into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HcdError as exc:
            if os.environ.get("HCD_DEBUG"):
                raise
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            if os.environ.get("HCD_DEBUG"):
                raise
            raise fail("interrupted; nothing finished was lost, run the same command again to resume", 130) from None

    return wrapper  # type: ignore[return-value]
