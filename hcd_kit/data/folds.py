"""``hcd folds``: the cross-validation split, written once to ``DIR/folds.csv`` (``id,fold``).

Folds are stratified on the label so every fold has the data set's positive rate. Patches cut from the
same slide look alike, so a model validated on a slide it trained on scores too high; given a CSV that maps
patch ids to slides (``--groups``), folds are also grouped: no slide spans two folds. Ids the groups file
does not know, or gives no slide, are reported and each kept as a group of its own; a file that gives a slide
to fewer than half the ids is refused (the wrong file, or ids in another form). The same seed always
gives the same folds. Bad label rows are an error naming a few (all of them go to ``DIR/folds-problems.csv``)
unless ``skip_bad`` leaves them out.

    folds = make_folds(read_labels("data/train_labels.csv"), n_folds=5, seed=0)
    write_folds(folds, "data/folds.csv")
    fold = read_folds("data/folds.csv", ids=store.ids)["fold"].to_numpy()   # aligned with the store
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.data.labels import read_labels
from hcd_kit.data.problems import Problems, forget_report, report_note, write_report
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_write_text
from hcd_kit.layout import FOLDS_REPORT, DataLayout

GROUP_COLUMNS = ("wsi", "slide", "group")


def read_groups(path: str | os.PathLike[str]) -> pd.Series:
    """A patch-id -> slide mapping from ``path``: columns ``id`` plus one of wsi/slide/group, or two unnamed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"groups file {path} not found; pass a CSV mapping patch id to slide id")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"groups file {path} is not a valid CSV ({type(exc).__name__})") from None
    header = [str(c).strip().lower() for c in table.iloc[0]] if len(table) else []
    if "id" in header:
        named = [c for c in GROUP_COLUMNS if c in header]
        if not named:
            raise DataError(f"groups file {path} has an id column but none of {', '.join(GROUP_COLUMNS)}")
        table = table.iloc[1:]
        ids, groups = table[header.index("id")], table[header.index(named[0])]
    elif table.shape[1] == 2:
        ids, groups = table[0], table[1]
    else:
        raise DataError(
            f"groups file {path} needs columns id and one of {', '.join(GROUP_COLUMNS)}, or exactly two columns"
        )
    ids = ids.str.strip()
    ids = ids.str.removesuffix(".tif")  # the community's file names patches, not ids
    mapping = pd.Series(groups.str.strip().to_numpy(), index=ids.to_numpy())
    # an empty cell (or a short row) is "slide unknown", not a slide called "": dropping it here makes those
    # ids ungrouped (reported, one group each) instead of lumping them all into one giant slide
    mapping = mapping[mapping.notna() & (mapping != "")]
    conflict = mapping.groupby(level=0).nunique()
    if (conflict > 1).any():
        bad = conflict.index[conflict > 1]
        raise DataError(f"groups file {path} maps {len(bad)} id(s) to several slides, e.g. {bad[0]}")
    return mapping[~mapping.index.duplicated()]


def make_folds(labels: pd.DataFrame, n_folds: int = 5, seed: int = 0, groups: pd.Series | None = None) -> pd.DataFrame:
    """``id,fold`` for every row of ``labels`` (columns id, label), in the same order.

    ``groups`` (id -> slide) makes folds grouped; ids it lacks become groups of their own.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = labels["label"].to_numpy()
    _check_n_folds(n_folds, y, groups is not None)
    fold = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        g = fill_groups(labels["id"], groups)[0]
        if g.nunique() < n_folds:
            raise DataError(f"only {g.nunique()} slide group(s) for {n_folds} folds; use fewer --n-folds")
        cv = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        split = cv.split(np.zeros(len(y)), y, groups=pd.factorize(g)[0])
    for k, (_, val) in enumerate(split):
        fold[val] = k
    return pd.DataFrame({"id": labels["id"].to_numpy(str), "fold": fold})


def _check_n_folds(n_folds: int, y: np.ndarray, grouped: bool) -> None:
    if n_folds < 2:
        raise ConfigError(f"--n-folds must be at least 2, got {n_folds}")
    smallest = int(np.bincount(y, minlength=2).min()) if len(y) else 0
    if not grouped and smallest < n_folds:
        raise DataError(f"the rarer class has {smallest} patch(es), fewer than --n-folds {n_folds}; use fewer folds")


def fill_groups(ids: pd.Series, groups: pd.Series) -> tuple[pd.Series, list[str]]:
    """The group of every id (ids absent from ``groups`` or with an empty slide get their own), and those ids."""
    g = pd.Series(groups.reindex(ids.to_numpy()).to_numpy(), index=ids.to_numpy(), dtype=object)
    missing = (g.isna() | (g.astype(str).str.strip() == "")).to_numpy()  # callers may pass "" or None slides
    g[missing] = [f"__own__{i}" for i in ids.to_numpy()[missing]]
    return g, ids.to_numpy(str)[missing].tolist()


def check_coverage(n_ids: int, n_ungrouped: int, path: str | os.PathLike[str]) -> int:
    """How many of ``n_ids`` patch ids the groups file at ``path`` gives a slide (all but ``n_ungrouped``, as
    ``fill_groups`` says); a ConfigError when fewer than half do (the file of another data set, or ids in another
    form), as grouping would then barely group anything."""
    matched = n_ids - n_ungrouped
    if 2 * matched < n_ids:
        raise ConfigError(
            f"groups file {path} gives a slide to {matched:,} of {n_ids:,} patch ids "
            f"({floor_percent(matched, n_ids)}); at least half must have one: pass the CSV that maps these "
            "patch ids (file names without .tif) to slides"
        )
    return matched


def floor_percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent, rounded down (49.99 % of a needed half must not read "50.0 %")."""
    return f"{math.floor(1000 * part / whole) / 10:.1f} %" if whole else "n/a"


def write_folds(folds: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``id,fold`` atomically."""
    path = Path(path)
    atomic_write_text(path, folds[["id", "fold"]].to_csv(index=False))
    return path


def read_folds(path: str | os.PathLike[str], ids=None, n_folds: int | None = None) -> pd.DataFrame:
    """``id,fold`` from ``path``, checked: folds are 0..K-1 (K = ``n_folds`` if given), each id once.

    With ``ids``, returns one row per id in that order (ids the file does not cover are a DataError; rows
    for other ids are dropped, e.g. patches ``hcd prepare --skip-bad`` left out).
    """
    path = Path(path)
    hint = "run `hcd folds` to (re)create it"
    if not path.is_file():
        raise DataError(f"{path} not found; {hint}")
    try:
        table = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a valid folds CSV ({type(exc).__name__}); {hint}") from None
    if not {"id", "fold"} <= set(table.columns):
        raise DataError(f"{path} has columns {', '.join(map(str, table.columns))}; expected id,fold; {hint}")
    fold = pd.to_numeric(table["fold"], errors="coerce")
    if fold.isna().any() or (fold % 1 != 0).any():
        raise DataError(
            f"{path}: fold of id {table['id'][fold.isna() | (fold % 1 != 0)].iloc[0]} is not an integer; {hint}"
        )
    table["fold"] = fold.astype(np.int64)
    k = n_folds if n_folds is not None else int(table["fold"].max()) + 1
    present = set(table["fold"].unique())
    if present != set(range(k)):
        raise DataError(f"{path} has folds {sorted(present)}; expected 0..{k - 1}; {hint}")
    dup = table["id"].duplicated()
    if dup.any():
        raise DataError(f"{path}: {int(dup.sum())} duplicate id(s), e.g. {table['id'][dup].iloc[0]}; {hint}")
    if ids is None:
        return table[["id", "fold"]].reset_index(drop=True)
    ids = np.asarray(ids, dtype=str)
    pos = pd.Index(table["id"]).get_indexer(ids)
    if (pos < 0).any():
        missing = ids[pos < 0]
        raise DataError(f"{path} has no fold for {len(missing)} id(s), e.g. {missing[0]}; {hint}")
    return pd.DataFrame({"id": ids, "fold": table["fold"].to_numpy()[pos]})


@dataclass
class FoldsSummary:
    path: Path
    counts: list[int]  # patches per fold
    positive_rates: list[float]
    groups: int | None = None  # number of groups, when grouped: the slides, plus one per ungrouped id
    slides: int | None = None  # number of slides the grouped ids come from
    ungrouped: list[str] = field(default_factory=list)  # ids the groups file did not know or gave no slide
    skipped: dict[str, list[str]] = field(default_factory=dict)  # bad label rows left out (skip_bad), by kind
    report: Path | None = None  # where every skipped row is listed


def create_folds(
    data_dir: str | os.PathLike[str],
    n_folds: int = 5,
    seed: int = 0,
    groups: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
) -> FoldsSummary:
    """Read ``train_labels.csv``, make the folds, write ``folds.csv`` (default ``data_dir/folds.csv``).

    Bad label rows raise a DataError unless ``skip_bad``, which leaves them out exactly as ``hcd prepare
    --skip-bad`` does, so the folds cover the same ids as such a store. Either way all of them are listed in
    ``data_dir/folds-problems.csv`` (or beside ``out`` when the data folder is read-only).
    """
    layout = DataLayout.of(data_dir)
    problems = Problems()
    labels = read_labels(layout.train_labels, problems)
    target = Path(out) if out is not None else layout.folds_csv
    places = (layout.root, target.parent)
    report = None
    if problems:
        report = write_report({"train": problems}, FOLDS_REPORT, *places)
    else:
        forget_report(FOLDS_REPORT, *places)
    if problems and not skip_bad:
        raise DataError(
            f"{layout.train_labels}: {problems.summary()}; {report_note(report)}; "
            "fix the file, or pass --skip-bad to leave those rows out"
        )
    slides = read_groups(groups) if groups is not None else None  # id -> slide, from the --groups file
    ungrouped: list[str] = []
    if slides is not None:
        slides, ungrouped = fill_groups(labels["id"], slides)  # every id's group, once (make_folds keeps them)
        check_coverage(len(labels), len(ungrouped), groups)
    folds = make_folds(labels, n_folds, seed, slides)
    path = write_folds(folds, target)
    y = labels["label"].to_numpy()
    counts = [int((folds["fold"] == k).sum()) for k in range(n_folds)]
    rates = [float(y[folds["fold"].to_numpy() == k].mean()) if counts[k] else float("nan") for k in range(n_folds)]
    summary = FoldsSummary(path, counts, rates, skipped=problems.as_dict(), report=report)
    if slides is not None:
        summary.ungrouped = ungrouped
        summary.groups = int(slides.nunique())
        summary.slides = summary.groups - len(summary.ungrouped)
    return summary
