"""Rendering: the report's Jinja2 template filled with a context dict, written atomically as one file."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from hcd_kit.fsutil import atomic_write_text

TEMPLATE = "report.html.j2"
TEMPLATES = Path(__file__).with_name("templates")


def fmt(x: Any, digits: int = 4) -> str:
    """A score for a table cell: "–" for a missing or non-finite one."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def render(context: dict[str, Any]) -> str:
    """The HTML of the report (autoescaped: ids, paths and messages are text, never markup)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["j2", "html"]),
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    return env.get_template(TEMPLATE).render(fmt=fmt, **context)


def write(path: str | os.PathLike[str], html: str) -> Path:
    atomic_write_text(path, html)
    return Path(path)
