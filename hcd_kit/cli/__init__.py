"""The ``hcd`` command line: a thin Typer layer over the ``hcd_kit`` library.

Each module here registers the commands of one pipeline stage on ``app``; each command parses and checks
its options, calls one library function and prints the result. Heavy imports (torch, timm, kaggle) happen
inside the commands so that ``hcd --help`` is instant.
"""

from __future__ import annotations

from hcd_kit.cli import (  # noqa: F401,E402  (order = help order)
    cv,
    data,
    demo,
    download,
    features,
    kaggle,
    kernel,
    models,
    predict,
    pseudo,
    recipes,
    report,
    runs,
    train,
    weights,
)
from hcd_kit.cli._app import app, main  # noqa: F401  (main is the console-script entry point)

__all__ = ["app", "main"]
