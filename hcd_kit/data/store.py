"""The packed image store: every patch of a split decoded once into one memory-mapped uint8 array.

This module is the store format's one reader and one writer. Files under ``DIR/packed/`` (named by
``hcd_kit.layout.StoreLayout``; filled by ``hcd prepare``, see ``hcd_kit.data.pack``)::

    train_images.npy   uint8 (N, 96, 96, 3), opened with ``numpy.load(path, mmap_mode="r")``
    train_ids.csv      id,label in the same row order
    test_images.npy    uint8 (M, 96, 96, 3)
    test_ids.csv       id in the same row order
    manifest.json      written last: what was packed from what (a store without it is incomplete)

Reading through a memory map keeps RAM use independent of N: the OS pages in what a batch touches.
``open_store`` first checks each ``.npy`` against its header and the manifest (dtype, shape, count, file size)
and the ids file's rows, so a store cut short by a copy is one line naming the file and
``hcd prepare --force``, never a failed memory map; ``hcd prepare`` re-packs such a split by itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.damage import damaged, npy_problem, open_npy, read_csv, read_json
from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_write_json, atomic_write_text, replace_durably, reserve
from hcd_kit.layout import IMAGE_SHAPE, SPLITS, Split, StoreLayout

FORMAT_VERSION = 1


@dataclass
class PackedStore:
    """One split of the packed store: ``images[i]`` is the patch of ``ids[i]`` (label ``labels[i]``)."""

    images: np.ndarray  # uint8 (N, 96, 96, 3), usually a read-only np.memmap
    ids: np.ndarray  # str (N,)
    labels: np.ndarray | None  # int64 (N,) for train, None for test

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, ids) -> np.ndarray:
        """Row positions of ``ids`` in this store; DataError naming the first id that is absent."""
        pos = pd.Index(self.ids).get_indexer(pd.Index(ids))
        if (pos < 0).any():
            missing = np.asarray(ids)[pos < 0]
            raise DataError(f"{len(missing)} id(s) not in the packed store, e.g. {missing[0]}")
        return pos


def repack_command(packed_dir: str | os.PathLike[str], manifest: dict | None = None) -> str:
    """The command that packs the store in ``packed_dir`` afresh: ``DIR/packed`` is ``DIR``'s own store; a store
    elsewhere (``--out``) names the data folder its manifest records, if it still can be read."""
    packed_dir = Path(packed_dir)
    if packed_dir.name == "packed":
        return f"hcd prepare --data-dir {packed_dir.parent} --force"
    sources = [e.get("source") for e in (manifest or {}).get("splits", {}).values() if isinstance(e, dict)]
    data_dir = next((Path(s).parent for s in sources if isinstance(s, str) and s), "DIR")
    return f"hcd prepare --data-dir {data_dir} --out {packed_dir} --force"


def _read_store_manifest(files: StoreLayout) -> dict:
    fix = f"run `{repack_command(files.root)}`"
    manifest = read_json(files.manifest, fix)
    if not isinstance(manifest.get("splits", {}), dict):
        raise damaged(files.manifest, "its splits are not a table", fix)
    return manifest


def _check_split(files: StoreLayout, split: Split, count: int | None, fix: str) -> pd.DataFrame:
    """``split``'s ids table, after checking that its two files hold what the manifest promises (``count``
    patches, when it says): a ``damaged`` DataError naming the first file that does not."""
    img, ids = files.images(split), files.ids(split)
    problem = npy_problem(img, np.uint8, IMAGE_SHAPE, count)
    if problem is not None:
        raise damaged(img, problem, fix)
    n = count if count is not None else np.load(img, mmap_mode="r").shape[0]
    table = read_csv(ids, fix, ("id", "label") if split == "train" else ("id",), dtype={"id": str})
    if len(table) != n:
        raise damaged(ids, f"{len(table)} rows for the {n} images of {img.name}", fix)
    if split == "train" and not pd.to_numeric(table["label"], errors="coerce").isin([0, 1]).all():
        raise damaged(ids, "a label that is not 0 or 1", fix)
    return table


def open_store(packed_dir: str | os.PathLike[str], split: Split = "train") -> PackedStore:
    """Open one split of a packed store read-only; a one-line DataError with the command to run if it is
    absent, or damaged (a file cut short, of another shape than the manifest says, unreadable)."""
    packed_dir = Path(packed_dir)
    files = StoreLayout(packed_dir)
    img, ids = files.images(split), files.ids(split)
    if not files.manifest.is_file() or not img.is_file() or not ids.is_file():
        data_dir = packed_dir.parent if packed_dir.name == "packed" else packed_dir
        raise DataError(f"no packed {split} store in {packed_dir}; run `hcd prepare --data-dir {data_dir}` first")
    manifest = _read_store_manifest(files)
    fix = f"run `{repack_command(packed_dir, manifest)}`"
    if split not in manifest.get("splits", {split: None}):
        raise DataError(f"packed store in {packed_dir} has no {split} split; {fix}")
    record = manifest.get("splits", {}).get(split)
    count = record.get("count") if isinstance(record, dict) else None
    table = _check_split(files, split, count if isinstance(count, int) else None, fix)
    images = open_npy(img, fix, np.uint8, IMAGE_SHAPE)
    labels = table["label"].to_numpy(np.int64) if "label" in table.columns else None
    return PackedStore(images=images, ids=table["id"].to_numpy(str), labels=labels)


# --- the manifest -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitRecord:
    """What ``manifest.json`` says about one packed split (field order = key order in the file)."""

    count: int
    source: str | None  # the folder the patches came from
    csv: str | None  # name of the CSV the row order came from (None: sorted file names)
    fingerprint: str  # of the input files and the CSV: unchanged inputs need no re-pack
    skipped: dict[str, list[str]]  # bad inputs left out (--skip-bad), by kind
    positives: int | None  # train only


def read_manifest(packed_dir: str | os.PathLike[str]) -> dict[str, SplitRecord]:
    """The split records of the store in ``packed_dir``; {} when there is none, or of another format."""
    try:
        manifest = json.loads(StoreLayout.of(packed_dir).manifest.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            return {}
        return {
            s: SplitRecord(**{k: e.get(k) for k in SplitRecord.__dataclass_fields__})
            for s, e in manifest.get("splits", {}).items()
        }
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable or hand-edited: pack again
        return {}


def holds_split(packed_dir: str | os.PathLike[str], split: Split, count: int) -> bool:
    """Whether the store has both files of ``split`` with ``count`` patches, undamaged (what a record promises)."""
    files = StoreLayout.of(packed_dir)
    if not (files.images(split).is_file() and files.ids(split).is_file()):
        return False
    try:
        _check_split(files, split, count, fix="")
    except DataError:
        return False
    return True


def write_manifest(packed_dir: str | os.PathLike[str], records: dict[str, SplitRecord]) -> None:
    """Write ``manifest.json`` last: it is what makes the store complete (``open_store`` checks it)."""
    manifest = {
        "format": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "image_shape": list(IMAGE_SHAPE),
        "splits": {s: asdict(records[s]) for s in SPLITS if s in records},
    }
    atomic_write_json(StoreLayout.of(packed_dir).manifest, manifest)


def mark_incomplete(packed_dir: str | os.PathLike[str]) -> None:
    """Remove the manifest before replacing any split: from then on the store must not look complete."""
    StoreLayout.of(packed_dir).manifest.unlink(missing_ok=True)


# --- writing the arrays -----------------------------------------------------------------------------------


def create_images(npy: Path, n: int) -> None:
    """Create a ``.npy`` for ``n`` patches at ``npy`` (usually a temporary file), blocks reserved up front.

    Filling a sparse file makes the filesystem allocate blocks page by page as workers write, which on a
    VM costs more than the decoding; one fallocate call makes writing about twice as fast, and a disk that
    cannot hold the store says so now, in one line (a worker writing to a memory map on a full disk would
    die of SIGBUS instead).
    """
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE))
    size = arr.offset + arr.nbytes
    del arr
    reserve(npy, size)


def commit_split(
    packed_dir: str | os.PathLike[str], split: Split, npy: Path, ids: list[str], labels: np.ndarray | None
) -> None:
    """Move the finished temporary ``npy`` into place as ``split``'s images and write its ids beside it."""
    files = StoreLayout.of(packed_dir)
    replace_durably(npy, files.images(split))
    if labels is None:
        text = "id\n" + "".join(f"{i}\n" for i in ids)
    else:
        text = "id,label\n" + "".join(f"{i},{int(y)}\n" for i, y in zip(ids, labels))
    atomic_write_text(files.ids(split), text)


def remove_stale_temps(packed_dir: str | os.PathLike[str]) -> None:
    """Remove temporary files a killed run left behind (they are never part of a finished store)."""
    files = StoreLayout.of(packed_dir)
    for s in SPLITS:
        for target in (files.images(s), files.ids(s)):
            for p in files.root.glob(f".tmp-{target.name}.*"):
                p.unlink(missing_ok=True)
