"""The Typer app and what every command shares: the global ``--debug`` and ``--version`` switches, a ``--help``
flag rendered without a type label, the options several commands share (``--device``, ``--precision``), the
``--fold`` spec parser, and the mapping of hcd errors to one line on stderr and an exit code."""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.markup import escape

from hcd_kit.choices import DEVICE_HELP, PRECISION_HELP, Precision
from hcd_kit.console import err_console
from hcd_kit.errors import ConfigError, HcdError, Interrupted
from hcd_kit.fsutil import disk_full, is_disk_full

F = TypeVar("F", bound=Callable)


def _show_help(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(ctx.get_help(), nl=False)
        raise typer.Exit()


# Typer's own --help shows a `<bool>` type label; this one has none (an empty metavar) and does the same.
HelpFlag = Annotated[
    Optional[bool],
    typer.Option(
        "--help",
        is_eager=True,
        expose_value=False,
        callback=_show_help,
        metavar="",
        show_default=False,
        help="Show this message and exit.",
    ),
]
_HELP_PARAM = inspect.Parameter("help_", inspect.Parameter.KEYWORD_ONLY, annotation=HelpFlag, default=None)

app = typer.Typer(
    name="hcd",
    help=(
        "hcd: the Histopathologic Cancer Detection toolkit.\n\n"
        "Pipeline: download -> prepare -> folds -> train -> cv -> predict -> submit (or run it all as a "
        "Kaggle kernel). Pathology foundation models: models -> embed -> probe -> ensemble with CNN runs. Try `hcd demo` first: it runs end to end offline on real patches shipped with hcd.\n\n"
        "Example: hcd demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"hcd {version('hcd-kit')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("hcd (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", metavar="", help="Show full tracebacks instead of one-line errors.")
    ] = False,
    _version: Annotated[
        Optional[bool],
        typer.Option(
            "--version",
            is_eager=True,
            callback=_show_version,
            metavar="",
            show_default=False,
            help="Print hcd's version and exit.",
        ),
    ] = None,
    _help: HelpFlag = None,
) -> None:
    if debug:
        os.environ["HCD_DEBUG"] = "1"


def group(name: str, help: str) -> typer.Typer:
    """A sub-command group of ``hcd`` (e.g. ``hcd kernel``) whose own help has the same --help flag."""
    sub = typer.Typer(help=help, no_args_is_help=True)

    def _group_options(_help: HelpFlag = None) -> None:
        pass

    sub.callback()(_group_options)
    app.add_typer(sub, name=name)
    return sub


COMPETITION = "histopathologic-cancer-detection"
# The slug is longer than the help column at 80 columns, so the default is said in words (rich would cut it).
Competition = Annotated[
    str,
    typer.Option(
        metavar="SLUG",
        show_default=False,
        help="Kaggle competition slug, as in its URL \\[default: histopathologic cancer detection's].",
    ),
]
# --device and --precision, as every command that has them spells them (hcd train's come from TrainConfig)
Device = Annotated[str, typer.Option(metavar="DEVICE", help=DEVICE_HELP)]
PrecisionOption = Annotated[Precision, typer.Option(help=PRECISION_HELP)]
# --batch-size and --fold of the commands that predict with a run's folds (predict, evaluate)
ViewBatch = Annotated[
    int,
    typer.Option(
        metavar="N", help="Views per forward pass (batch-size / tta patches in all their views); raise it on a big GPU."
    ),
]
FoldsToUse = Annotated[str, typer.Option(metavar="FOLDS", help="Folds to use: all, one number, or a list like 0,2.")]


def command(
    on: typer.Typer = app, name: str | None = None, signature: inspect.Signature | None = None
) -> Callable[[F], F]:
    """Register a function as a command of ``on``: hcd errors become one line (``handle_errors``) and the
    --help flag is added. ``signature`` replaces the function's own (for options generated from a dataclass).
    """

    def register(fn: F) -> F:
        sig = signature or inspect.signature(fn, eval_str=True)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            kwargs.pop("help_", None)  # Typer passes every parameter of the signature, even an eager flag's
            return fn(*args, **kwargs)

        wrapped = handle_errors(call)
        wrapped.__signature__ = sig.replace(parameters=[*sig.parameters.values(), _HELP_PARAM])  # type: ignore[attr-defined]
        on.command(name)(wrapped)
        return fn

    return register


def parse_folds(spec: str | None) -> list[int] | None:
    """The --fold spec: not given or 'all' -> None (every fold); '2' -> [2]; '0,2' -> [0, 2]."""
    if spec is None or spec.strip().lower() == "all":
        return None
    try:
        folds = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--fold must be 'all', a fold number or a list like 0,2; got '{spec}'") from None
    if not folds:
        raise ConfigError("--fold is empty; use 'all', a fold number or a list like 0,2")
    return folds


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
            raise fail(escape(str(exc)), exc.exit_code) from None  # plain text: "hcd-kit[lora]" is no markup
        except OSError as exc:  # the file system said no: a full disk, a read-only folder, a file as a folder
            if os.environ.get("HCD_DEBUG"):
                raise
            if exc.filename and is_disk_full(exc):  # a writer outside fsutil (the kaggle client, an extraction)
                raise fail(escape(str(disk_full(Path(exc.filename), None, cause=exc))), 1) from None
            where = f": {exc.filename}" if exc.filename else ""
            raise fail(f"{exc.strerror or exc}{where}", 1) from None
        except KeyboardInterrupt as exc:
            if os.environ.get("HCD_DEBUG"):
                raise
            raise interrupted(exc) from None

    return wrapper  # type: ignore[return-value]


def interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    """Ctrl-C, SIGTERM or SIGHUP: one line on how to go on, and exit code 128 + the signal (130, 143, 129)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
    return fail(
        f"interrupted{by}; finished work is kept: run the command again to go on (hcd train needs --resume)",
        128 + signum,
    )


def _raise_interrupted(signum: int, _frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once, as the sender meant
    raise Interrupted(signum)


def stop_signals_as_interrupts() -> dict:
    """SIGTERM (Kaggle at a session's time limit, ``kill``, a scheduler) and SIGHUP (the terminal closed) end a
    command as Ctrl-C does: the step in flight is abandoned, the atomic writes keep the last consistent files,
    one line says how to go on, and the exit code is 128 + the signal (143, 129). A signal that was ignored when
    hcd started (``nohup`` ignores SIGHUP) stays ignored. Returns the handlers it replaced."""
    replaced = {}
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return replaced
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, _raise_interrupted)
    return replaced


def main(args: Sequence[str] | None = None) -> None:
    """The ``hcd`` console script: the Typer app, with a wrong flag or command reported like every other
    hcd error, as one line on stderr (exit 2), instead of a boxed usage panel.

    Usage errors are recognised by the click exception protocol (``format_message``, ``exit_code``, ``ctx``)
    rather than by class, because Typer has moved click's classes between releases.
    """
    argv = list(sys.argv[1:] if args is None else args)
    replaced = stop_signals_as_interrupts()
    try:
        code = _run(argv)
    finally:
        for sig, handler in replaced.items():  # main() called in-process (tests) leaves the handlers as it found them
            signal.signal(sig, handler)
    sys.exit(code)


def _run(argv: list[str]) -> int:
    try:
        code = app(args=argv, prog_name="hcd", standalone_mode=False)  # a typer.Exit comes back as its code
    except Exception as exc:
        name = type(exc).__name__
        if name == "NoArgsIsHelpError":  # `hcd kernel` alone: Typer has printed that group's help already
            return 0
        if name == "Abort":  # e.g. Ctrl-D at a prompt
            err_console.print("[bold red]error:[/] aborted")
            return 1
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {exc.format_message()}{hint}", soft_wrap=True, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # before or after a command's body (parsing, imports)
        if os.environ.get("HCD_DEBUG"):
            raise
        return interrupted(exc).exit_code
    return code if isinstance(code, int) else 0
