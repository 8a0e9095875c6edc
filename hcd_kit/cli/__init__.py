"""The ``hcd`` command line: a thin Typer layer over the ``hcd_kit`` library.

Each module here registers the commands of one pipeline stage on ``app``; each command parses and checks
its options, calls one library function and prints the result. Heavy imports (torch, timm, kaggle) happen
inside the commands so that ``hcd --help`` is instant.
"""

from __future__ import annotations

from hcd_kit.cli._app import app, main  # noqa: F401  (main is the console-script entry point)

# isort: off
# The order of these imports is the order of the commands in `hcd --help`: the pipeline's.
from hcd_kit.cli import demo, download, data, recipes, models, train, cv, runs, report, predict, evaluate  # noqa: F401
from hcd_kit.cli import features, pseudo, kaggle, kernel, dataset, weights  # noqa: F401
# isort: on

__all__ = ["app", "main"]
