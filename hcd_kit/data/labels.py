"""Reading and checking the competition's CSVs (``train_labels.csv``, ``sample_submission.csv``).

Every command that needs labels or the test id order reads them through here (the one reader of each),
so a bad row is reported the same way everywhere (a ``hcd_kit.data.problems.Problems``).

A malformed file (not a CSV, missing columns, empty) is always an error. Row problems (duplicate ids,
labels other than 0/1, empty ids) raise by default; pass a ``Problems`` to collect them instead and get
back only the clean rows (``hcd prepare --skip-bad``, ``hcd folds --skip-bad``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from hcd_kit.data.problems import Problems
from hcd_kit.errors import DataError


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


def listed_ids(path: str | os.PathLike[str]) -> set[str]:
    """Every id a labels or sample CSV names, bad rows included (an image whose row is bad is not "unlisted")."""
    path = Path(path)
    return set(_read_csv(path, "id", "run `hcd download` or pass --data-dir")["id"].str.strip())
