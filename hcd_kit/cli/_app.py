"""The Typer app, its global ``--debug`` switch, and the mapping of hcd errors to one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Callable, Sequence, TypeVar

import typer

from hcd_kit.console import err_console
from hcd_kit.errors import HcdError

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
    rich_markup_mode="markdown",
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
        except OSError as exc:  # the file system said no: a full disk, a read-only folder, a file as a folder
            if os.environ.get("HCD_DEBUG"):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}", 1) from None
        except KeyboardInterrupt:
            if os.environ.get("HCD_DEBUG"):
                raise
            raise fail("interrupted; finished work is kept: run the command again to go on "
                       "(hcd train needs --resume)", 130) from None

    return wrapper  # type: ignore[return-value]


def main(args: Sequence[str] | None = None) -> None:
    """The ``hcd`` console script: the Typer app, with a wrong flag or command reported like every other
    hcd error, as one line on stderr (exit 2), instead of a boxed usage panel.

    Usage errors are recognised by the click exception protocol (``format_message``, ``exit_code``, ``ctx``)
    rather than by class, because Typer has moved click's classes between releases.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        code = app(args=argv, prog_name="hcd", standalone_mode=False)  # a typer.Exit comes back as its code
    except Exception as exc:
        name = type(exc).__name__
        if name == "NoArgsIsHelpError":  # `hcd kernel` alone: show that group's help, as Typer would
            path = exc.ctx.command_path.split()[1:] if getattr(exc, "ctx", None) else []  # type: ignore[attr-defined]
            app(args=[*path, "--help"], prog_name="hcd")
        if name == "Abort":  # e.g. Ctrl-D at a prompt
            err_console.print("[bold red]error:[/] aborted")
            sys.exit(1)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {exc.format_message()}{hint}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
