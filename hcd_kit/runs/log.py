"""``RUN/train.log``: the lines ``hcd train`` prints, appended with a timestamp (``RunLog``)."""

from __future__ import annotations

import time
from pathlib import Path

from hcd_kit.console import console
from hcd_kit.fsutil import append_text


class RunLog:
    """Lines to the console and appended to ``RUN/train.log``; silent on ranks other than 0.

    ``header`` (the run's first line: model, device, precision and why) is written before the first message, or
    by ``start()``, so a run refused before it logs anything (a too-small --time-budget) leaves no file behind.
    """

    def __init__(self, path: Path, enabled: bool, header: str | None = None) -> None:
        self.path, self.enabled, self.header = path, enabled, header

    def start(self) -> None:
        """Write the header now, if it is still pending."""
        header, self.header = self.header, None
        if header is not None:
            self(header)

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        self.start()
        console.print(message, soft_wrap=True)
        append_text(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")  # appended, not replaced
