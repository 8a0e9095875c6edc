"""The report of bad inputs every data command shares: problems grouped by kind, one line, and a full CSV.

A bad row or image is reported the same way everywhere: by kind, with a count and the first few names, in
one line (``Problems.summary``). A one-line error shows only a few names, so commands also write every
problem to a small ``split,name,problem`` report CSV (``write_report``) and remove it after a clean run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hcd_kit.fsutil import atomic_write_text


class Problems:
    """Named inputs that failed a check, grouped by kind (``"corrupt"``, ``"duplicate id"``, ...)."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, name: str) -> None:
        self.by_kind.setdefault(kind, []).append(name)

    def extend(self, kind: str, names) -> None:
        names = list(names)
        if names:
            self.by_kind.setdefault(kind, []).extend(names)

    def merge(self, other: Problems, prefix: str = "") -> None:
        for kind, names in other.by_kind.items():
            self.extend(kind, (prefix + n for n in names))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kind.values())

    def __bool__(self) -> bool:
        return len(self) > 0

    def summary(self, examples: int = 3) -> str:
        """One line: ``2 corrupt (a.tif, b.tif); 1 missing (c.tif)`` with at most ``examples`` names each."""
        parts = []
        for kind, names in self.by_kind.items():
            shown = ", ".join(names[:examples]) + (", ..." if len(names) > examples else "")
            parts.append(f"{len(names)} {kind} ({shown})")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.by_kind.items()}


def write_report(problems: dict[str, Problems], name: str, *folders: Path) -> Path | None:
    """Write every problem as ``split,name,problem`` lines to ``<folder>/<name>`` and return that path.

    The first folder that exists and takes the write wins: the data folder may be read-only (a Kaggle
    input), and the report must never be the reason a command fails, so None means none could be written.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "name", "problem"])
    for split, found in problems.items():
        writer.writerows((split, n, kind) for kind, names in found.by_kind.items() for n in names)
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir():
            continue
        try:
            atomic_write_text(folder / name, buf.getvalue())
            return folder / name
        except OSError:
            continue
    return None


def forget_report(name: str, *folders: Path) -> None:
    """Remove the report an earlier run left: after a clean run it would only mislead."""
    for folder in folders:
        try:
            (Path(folder) / name).unlink(missing_ok=True)
        except OSError:  # a read-only data folder: no report of ours can be there
            pass


def report_note(path: Path | None) -> str:
    """The clause an error adds to point at the full list (or to say why there is none)."""
    return f"full list in {path}" if path is not None else "no folder would take the full list (read-only?)"
