"""The packed image store: every patch of a split decoded once into one memory-mapped uint8 array.

Files under ``DIR/packed/`` (written by ``hcd prepare``, see ``hcd_kit.data.pack``)::

    train_images.npy   uint8 (N, 96, 96, 3), opened with ``numpy.load(path, mmap_mode="r")``
    train_ids.csv      id,label in the same row order
    test_images.npy    uint8 (M, 96, 96, 3)
    test_ids.csv       id in the same row order
    manifest.json      written last: what was packed from what (a store without it is incomplete)

Reading through a memory map keeps RAM use independent of N: the OS pages in what a batch touches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hcd_kit.errors import DataError

Split = Literal["train", "test"]


def images_path(packed_dir: Path, split: Split) -> Path:
    return Path(packed_dir) / f"{split}_images.npy"


def ids_path(packed_dir: Path, split: Split) -> Path:
    return Path(packed_dir) / f"{split}_ids.csv"


def manifest_path(packed_dir: Path) -> Path:
    return Path(packed_dir) / "manifest.json"


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


def open_store(packed_dir: str | os.PathLike[str], split: Split = "train") -> PackedStore:
    """Open one split of a packed store read-only; DataError with the command to run if it is absent."""
    packed_dir = Path(packed_dir)
    img, ids = images_path(packed_dir, split), ids_path(packed_dir, split)
    if not manifest_path(packed_dir).is_file() or not img.is_file() or not ids.is_file():
        data_dir = packed_dir.parent if packed_dir.name == "packed" else packed_dir
        raise DataError(
            f"no packed {split} store in {packed_dir}; run `hcd prepare --data-dir {data_dir}` first"
        )
    manifest = json.loads(manifest_path(packed_dir).read_text())
    if split not in manifest.get("splits", {split: None}):
        raise DataError(f"packed store in {packed_dir} has no {split} split; run `hcd prepare` again")
    images = np.load(img, mmap_mode="r")
    table = pd.read_csv(ids, dtype={"id": str})
    if images.ndim != 4 or images.shape[1:] != (96, 96, 3) or images.dtype != np.uint8:
        raise DataError(f"{img} is not a (N, 96, 96, 3) uint8 array: {images.shape} {images.dtype}")
    if len(table) != images.shape[0]:
        raise DataError(f"{ids} has {len(table)} rows but {img} holds {images.shape[0]} images; run `hcd prepare` again")
    labels = table["label"].to_numpy(np.int64) if "label" in table.columns else None
    return PackedStore(images=images, ids=table["id"].to_numpy(str), labels=labels)
