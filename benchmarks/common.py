"""Shared by the benchmarks: where to find or build the packed store without writing into the data folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hcd_kit.layout import DataLayout


def store_dir(data_dir: Path, out: Path | None) -> Path:
    """``out`` if given; else ``DATA_DIR/packed`` when `hcd prepare` already made it; else a temp folder.

    Benchmarks are often pointed at shared, read-only data: they reuse a store but never create one there.
    """
    if out is not None:
        return out
    packed = DataLayout.of(data_dir).packed
    if packed.manifest.is_file():
        return packed.root
    return Path(tempfile.gettempdir()) / f"hcd-bench-{Path(data_dir).resolve().name}-packed"
