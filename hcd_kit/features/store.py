"""The frozen-feature store: one backbone's features of every packed patch, memory-mapped, resumable.

This module is the format's one reader and one writer. ``hcd embed`` fills a folder FEATURES with::

    manifest.json            what was embedded and from what: the model spec as given, backbone label, kind,
                             hub id, timm architecture, weights file, input size, pool, feature dim, TTA views,
                             dtype, the packed store's identity per split (count, fingerprint, ids hash),
                             rows per split, and ``complete`` (per split and for the whole store)
    progress.json            {"train": rows done, "test": rows done}, rewritten atomically after each
                             flushed chunk: rows below it are final, so an interrupted embed goes on there
    {split}_features.npy     float16 (N, V, D), ``np.lib.format.open_memmap``: V dihedral views per patch
                             (view 0 = the patch as is, ``hcd_kit.inference.tta``), D features each
    {split}_ids.csv          id,label (train) or id (test), the packed store's row order

Row ``i`` of a split is the packed store's row ``i``. A store is readable (``open_features``) only when the
manifest says ``complete``; the settings in ``SETTINGS`` and the data identity decide whether a later
``hcd embed`` may continue or skip it (``check_compatible``) or must be told ``--force``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.damage import damaged, first_line, npy_problem, read_csv
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_write_json, atomic_write_text, reserve, sha256_file
from hcd_kit.layout import SPLITS, Split, StoreLayout

FORMAT_VERSION = 1
DTYPE = "float16"  # half the disk of float32; a linear probe cannot tell the difference
# Manifest keys that must match for a later embed to continue or skip a store (the rest is description).
SETTINGS = ("model", "weights", "pretrained", "img_size", "tta", "pool")


@dataclass(frozen=True)
class FeatureLayout:
    """The feature store's files."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    def features(self, split: str) -> Path:
        return self.root / f"{split}_features.npy"

    def ids(self, split: str) -> Path:
        return self.root / f"{split}_ids.csv"


@dataclass
class FeatureSplit:
    """One split: ``features[i]`` (V, D) are the views of patch ``ids[i]`` (label ``labels[i]``)."""

    features: np.ndarray  # float16 (N, V, D), a read-only memmap
    ids: np.ndarray  # str (N,)
    labels: np.ndarray | None  # int64 (N,) for train, None for test

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class FeatureStore:
    """A complete feature store, read-only (``open_features``)."""

    root: Path
    manifest: dict
    splits: dict[str, FeatureSplit]

    @property
    def views(self) -> int:
        return int(self.manifest["tta"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def split(self, name: str) -> FeatureSplit:
        if name not in self.splits:
            raise DataError(
                f"{self.root} has no {name} features; run `hcd embed --split {name} --out {self.root}` "
                "with the same --model and --tta"
            )
        return self.splits[name]


# --- reading ----------------------------------------------------------------------------------------------


def read_manifest(root: str | os.PathLike[str]) -> dict | None:
    """The store's manifest; None when the folder has none; DataError when it is unreadable."""
    path = FeatureLayout(Path(root)).manifest
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
            raise ValueError("no splits")
        if not all(isinstance(e, dict) for e in manifest["splits"].values()):
            raise ValueError("a split that is not a table")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is damaged ({first_line(exc)}); rebuild the store with `hcd embed --force`") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise DataError(
            f"{path} is of another format ({manifest.get('format')!r}); rebuild it with `hcd embed --force`"
        )
    return manifest


def read_progress(root: str | os.PathLike[str]) -> dict[str, int]:
    """Rows embedded so far per split ({} when absent or unreadable: a split then starts again)."""
    try:
        data = json.loads(FeatureLayout(Path(root)).progress.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _read_ids(path: Path, rows: int, fix: str) -> tuple[np.ndarray, np.ndarray | None]:
    table = read_csv(path, fix, ("id",), dtype={"id": str})
    if len(table) != rows:  # cut short: its rows, not its labels, are what is wrong
        raise damaged(path, f"{len(table)} rows for {rows} patches", fix)
    if "label" not in table.columns:
        return table["id"].to_numpy(str), None
    label = pd.to_numeric(table["label"], errors="coerce")
    if label.isna().any() or not label.isin([0, 1]).all():
        bad = table["id"][label.isna() | ~label.isin([0, 1])]
        raise DataError(
            f"{path} has no 0/1 label for {len(bad)} id(s), e.g. {bad.iloc[0]}; embed a packed "
            "train store with labels (`hcd prepare` reads train_labels.csv)"
        )
    return table["id"].to_numpy(str), label.to_numpy(np.int64)


def open_features(root: str | os.PathLike[str]) -> FeatureStore:
    """Open a complete store read-only; one-line DataError for a missing, incomplete or damaged one."""
    files = FeatureLayout(Path(root))
    manifest = read_manifest(files.root)
    if manifest is None:
        raise DataError(f"no feature store in {files.root}; run `hcd embed --out {files.root}` first")
    todo = {s: e for s, e in manifest["splits"].items() if not e.get("complete")}
    if todo or not manifest.get("complete"):
        done = read_progress(files.root)
        what = ", ".join(f"{s}: {done.get(s, 0)} of {e.get('rows')} rows" for s, e in todo.items())
        raise DataError(
            f"{files.root} is incomplete ({what or 'not finished'}); run the same `hcd embed` again to finish it"
        )
    splits, fix = {}, "rebuild it with `hcd embed --force`"
    for split, entry in manifest["splits"].items():
        try:
            want = (int(entry["rows"]), int(manifest["tta"]), int(manifest["dim"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise damaged(files.manifest, f"{split}: {first_line(exc)}", fix) from None
        if not files.features(split).is_file() or not files.ids(split).is_file():
            raise DataError(f"{files.root} has no {split} features or ids; {fix}")
        problem = npy_problem(files.features(split))  # cut short, or not a .npy: never a failed memory map
        if problem is not None:
            raise damaged(files.features(split), problem, fix)
        feats = np.load(files.features(split), mmap_mode="r")
        ids, labels = _read_ids(files.ids(split), want[0], fix)
        if feats.shape != want or feats.dtype != np.float16 or len(ids) != want[0]:
            raise DataError(
                f"{files.root} is damaged ({split}: features {feats.shape} {feats.dtype}, {len(ids)} ids, "
                f"manifest says {want}); rebuild it with `hcd embed --force`"
            )
        splits[split] = FeatureSplit(features=feats, ids=ids, labels=labels)
    return FeatureStore(root=files.root, manifest=manifest, splits=splits)


# --- deciding what an embed may do with an existing store -------------------------------------------------


def data_identity(packed_dir: str | os.PathLike[str], split: Split) -> dict:
    """What identifies a packed split: its patch count, the inputs' fingerprint, the hash of its ids file."""
    from hcd_kit.data.store import read_manifest as read_packed

    record = read_packed(packed_dir).get(split)
    files = StoreLayout.of(packed_dir)
    return {
        "count": None if record is None else record.count,
        "fingerprint": None if record is None else record.fingerprint,
        "ids_sha256": sha256_file(files.ids(split)),
    }


def check_compatible(root: Path, old: dict, settings: dict, identity: dict[str, dict]) -> None:
    """ConfigError naming the first difference between the store's manifest and what this embed asks for.

    An ``img_size`` asked for as None (still to be read from the model's own config) is not compared yet.
    """
    again = "pass --force to rebuild it, or choose another --out"
    for key in SETTINGS:
        new = settings.get(key)
        if (new is not None or key != "img_size") and old.get(key) != new:
            raise ConfigError(
                f"{root} holds features made with {key} = {old.get(key)!r}, but this embed asks for {new!r}; {again}"
            )
    for split, ident in identity.items():
        had = old.get("data", {}).get(split)
        if had is not None and had != ident:
            raise ConfigError(
                f"{root} holds {split} features of another packed store ({had.get('count')} patches, "
                f"ids hash {str(had.get('ids_sha256'))[:12]}) than this --data-dir "
                f"({ident.get('count')} patches, {str(ident.get('ids_sha256'))[:12]}); {again}"
            )


def remove_store(root: str | os.PathLike[str]) -> None:
    """Delete the files of a store (``--force``): only the names this format uses, nothing else in the folder."""
    files = FeatureLayout(Path(root))
    for path in (files.manifest, files.progress, *(f(s) for s in SPLITS for f in (files.features, files.ids))):
        path.unlink(missing_ok=True)


# --- writing ----------------------------------------------------------------------------------------------


def hcd_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hcd-kit")
    except PackageNotFoundError:
        return None


def write_manifest(root: str | os.PathLike[str], manifest: dict) -> None:
    """Write the manifest atomically; ``complete`` is true only when every split in it is."""
    manifest = dict(manifest, format=FORMAT_VERSION, dtype=DTYPE, hcd_version=hcd_version())
    manifest.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    manifest["complete"] = bool(manifest["splits"]) and all(e.get("complete") for e in manifest["splits"].values())
    atomic_write_json(FeatureLayout(Path(root)).manifest, manifest)


class SplitWriter:
    """Fills ``{split}_features.npy`` row by row; ``flush(done)`` makes rows below ``done`` final.

    Opens an existing file of the right shape to continue at ``progress.json``'s row count, else creates one.
    """

    def __init__(self, root: Path, split: str, ids: np.ndarray, labels: np.ndarray | None, views: int, dim: int):
        self.files, self.split = FeatureLayout(root), split
        shape = (len(ids), views, dim)
        path = self.files.features(split)
        done = read_progress(root).get(split, 0)
        self.array = None
        if 0 < done <= shape[0] and path.is_file() and self.files.ids(split).is_file():
            try:
                array = np.lib.format.open_memmap(path, mode="r+")
                if array.shape == shape and array.dtype == np.float16:
                    self.array = array
            except (OSError, ValueError):
                pass
        self.start = 0 if self.array is None else done
        if self.array is None:
            self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
            reserve(path, self.array.offset + self.array.nbytes)  # a full disk: one line now, not a SIGBUS later
            if labels is None:
                text = "id\n" + "".join(f"{i}\n" for i in ids)
            else:
                text = "id,label\n" + "".join(f"{i},{int(y)}\n" for i, y in zip(ids, labels))
            atomic_write_text(self.files.ids(split), text)
            self._record(0)

    def write(self, start: int, values: np.ndarray) -> None:
        self.array[start : start + len(values)] = values

    def flush(self, done: int) -> None:
        """Push the written rows to disk, then record them as done (in that order: progress never runs ahead)."""
        self.array.flush()
        self._record(done)

    def _record(self, done: int) -> None:
        progress = read_progress(self.files.root)
        progress[self.split] = int(done)
        atomic_write_json(self.files.progress, progress)

    def close(self) -> None:
        if self.array is not None:
            self.array.flush()
            self.array = None
