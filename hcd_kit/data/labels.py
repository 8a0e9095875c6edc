"""Reading and checking the competition's CSVs (``train_labels.csv``, ``sample_submission.csv``).

Every command that needs labels or the test id order reads them through here, so a bad row is reported
the same way everywhere: by kind, with a count and the first few ids, in one line. ``Problems`` is that
report; ``hcd prepare`` also files its image problems (corrupt, truncated, ...) in one.

A malformed file (not a CSV, missing columns, empty) is always an error. Row problems (duplicate ids,
labels other than 0/1, empty ids) raise by default; pass a ``Problems`` to collect them instead and get
back only the clean rows (``hcd prepare --skip-bad``, ``hcd folds --skip-bad``). A one-line error shows
only a few names, so commands also write every problem to a small report CSV (``write_report``).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from hcd_kit.errors import DataError
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

    def merge(self, other: "Problems", prefix: str = "") -> None:
        for kind, names in other.by_kind.items():
            self.extend(kind, (prefix + n for n in names))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kind.values())

    def __bool__(self) -> bool:
        return len(self) > 0

    def names(self) -> set[str]:
        return {n for v in self.by_kind.values() for n in v}

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


def _read_csv(path: Path, what: str, hint: str) -> pd.DataFrame:
    """Read every cell as a string; DataError naming the file for anything that is not a usable CSV."""
    if not path.is_file():
        raise DataError(f"{path} not found; {hint}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a {what} CSV") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a valid {what} CSV ({detail})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _require_columns(table: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} has columns {', '.join(table.columns) or '(none)'}; expected {','.join(columns)} "
            f"(missing {', '.join(missing)})"
        )


def _check_ids(table: pd.DataFrame, problems: Problems) -> pd.Series:
    """Mark empty and duplicated ids (every copy of a duplicate: which label is right is unknown)."""
    ids = table["id"].str.strip()
    empty = ids == ""
    problems.extend("empty id", (f"row {i + 2}" for i in ids.index[empty]))
    dup = ids.duplicated(keep=False) & ~empty
    problems.extend("duplicate id", ids[dup & ~ids.duplicated()].tolist())
    return ~(empty | dup)


def _finish(problems: Problems, collect: Problems | None, path: Path, hint: str) -> None:
    if collect is not None:
        collect.merge(problems)
    elif problems:
        raise DataError(f"{path}: {problems.summary()}; {hint}")


# Said only when the caller did not collect the problems. Labels: both commands that read them (`hcd prepare`,
# `hcd folds`) can drop bad rows. The sample submission is read whole by `hcd predict` and `hcd ensemble`,
# which cannot drop rows: the submission must list every id Kaggle expects.
LABELS_HINT = "fix the file, or leave those rows out with `hcd prepare --skip-bad` / `hcd folds --skip-bad`"
SAMPLE_HINT = "fix the file or fetch it again with `hcd download`; a submission needs every row of it"


def read_labels(path: str | os.PathLike[str], problems: Problems | None = None) -> pd.DataFrame:
    """``train_labels.csv`` as a DataFrame with ``id`` (str) and ``label`` (int 0/1), in file order.

    Without ``problems`` any bad row raises a DataError; with it, bad rows are recorded there and dropped.
    """
    path = Path(path)
    table = _read_csv(path, "labels (id,label)", "run `hcd download` or pass --data-dir")
    _require_columns(table, path, ["id", "label"])
    found = Problems()
    good = _check_ids(table, found)
    label = table["label"].str.strip()
    bad_label = ~label.isin(["0", "1"]) & good
    found.extend("label not 0/1", (f"{i} ({v!r})" for i, v in zip(table["id"][bad_label], label[bad_label])))
    _finish(found, problems, path, LABELS_HINT)
    keep = good & ~bad_label
    return pd.DataFrame(
        {"id": table["id"][keep].str.strip().to_numpy(str), "label": label[keep].astype(int).to_numpy()}
    )


def read_sample_submission(path: str | os.PathLike[str], problems: Problems | None = None) -> pd.DataFrame:
    """``sample_submission.csv`` as a DataFrame with ``id`` (str), in file order (the submission's order)."""
    path = Path(path)
    table = _read_csv(path, "submission (id,label)", "run `hcd download` or pass --data-dir")
    _require_columns(table, path, ["id"])
    found = Problems()
    good = _check_ids(table, found)
    _finish(found, problems, path, SAMPLE_HINT)
    return pd.DataFrame({"id": table["id"][good].str.strip().to_numpy(str)})
