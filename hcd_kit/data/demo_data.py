"""The offline demo's data: a few hundred real hcd-mini patches shipped inside the package.

``assets/demo.zip`` holds real competition patches as lossless WebP (pixel-exact, ~16 KB each instead of
27.9 KB), the two CSVs, and one real competition TIFF header. ``materialise`` lays them out as a miniature
competition: every ``.tif`` it writes is that header followed by the patch's raw pixels, byte-for-byte the
layout of the competition's own files, so the demo exercises exactly the code paths real data takes.
``build_asset`` is how the file was made (run once by a maintainer, from hcd-mini).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_path, atomic_write_text
from hcd_kit.layout import DataLayout

PIXEL_OFFSET = 287  # competition TIFFs: 287-byte header (IFD first), then 96*96*3 raw RGB bytes
MARKER = ".hcd-demo-data.json"


def asset_path() -> Path:
    return Path(str(resources.files("hcd_kit") / "assets" / "demo.zip"))


def _webp(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="WEBP", lossless=True, quality=100, method=6, exact=True)
    return buf.getvalue()


def build_asset(
    src: str | os.PathLike[str], out: str | os.PathLike[str], n_train: int = 240, n_test: int = 40, seed: int = 0
) -> Path:
    """Pack a class-balanced sample of ``src`` (competition layout) into a demo zip at ``out``."""
    src = DataLayout.of(src)
    labels = pd.read_csv(src.train_labels, dtype={"id": str})
    train = pd.concat([g.sample(n=n_train // 2, random_state=seed) for _, g in labels.groupby("label")]).sort_values(
        "id"
    )
    test = pd.read_csv(src.sample_submission, dtype={"id": str}).sample(n=n_test, random_state=seed)
    header = (src.train_dir / f"{train['id'].iloc[0]}.tif").read_bytes()[:PIXEL_OFFSET]
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("tiff_header.bin", header)
        zf.writestr("train_labels.csv", train.to_csv(index=False))
        zf.writestr("sample_submission.csv", test.assign(label=0).to_csv(index=False))
        for split, ids in (("train", train["id"]), ("test", test["id"])):
            folder = src.train_dir if split == "train" else src.test_dir
            for i in ids:
                pixels = np.asarray(Image.open(folder / f"{i}.tif").convert("RGB"))
                zf.writestr(f"{split}/{i}.webp", _webp(pixels))
    return Path(out)


def materialise(dest: str | os.PathLike[str], asset: str | os.PathLike[str] | None = None) -> DataLayout:
    """Write the demo sample as a competition-layout folder at ``dest`` (no-op if already complete)."""
    layout = DataLayout.of(dest)
    marker = layout.root / MARKER
    asset = Path(asset) if asset is not None else asset_path()
    if marker.is_file():
        return layout
    if not asset.is_file():
        raise DataError(f"demo data not found at {asset}; reinstall hcd or pass --data-dir")
    with zipfile.ZipFile(asset) as zf:
        header = zf.read("tiff_header.bin")
        for name in zf.namelist():
            if not name.endswith(".webp"):
                continue
            pixels = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))
            target = layout.root / name.replace(".webp", ".tif")
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(header + np.ascontiguousarray(pixels).tobytes())
        for csv in ("train_labels.csv", "sample_submission.csv"):
            atomic_write_text(layout.root / csv, zf.read(csv).decode())
    atomic_write_text(marker, json.dumps({"source": "hcd_kit/assets/demo.zip"}) + "\n")
    return layout
