"""Where hcd's output goes: one rich console for results, one for errors, and a progress-bar factory.

Library code reports through these so the CLI, the demo and tests all see the same lines. Progress bars
go to stderr, show throughput and ETA, and stay out of the way of results printed on stdout.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class RateColumn(ProgressColumn):
    """Throughput of a task in ``unit``/s (rich's own speed column only knows bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"-- {self.unit}/s", style="cyan")
        return Text(f"{speed:,.0f} {self.unit}/s", style="cyan")


def progress(unit: str = "img", transient: bool = False) -> Progress:
    """A rich Progress bar with count, rate in ``unit``/s, elapsed time and ETA (on stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
