"""Benchmark: images/s delivered to a training loop by three ways of loading the same patches.

(a) the typical notebook: a torch ``Dataset`` that opens each TIFF with PIL and applies torchvision
    transforms (flips, rotation, colour jitter, ToTensor, Normalize), through a ``DataLoader`` with workers;
(b) an HDF5 file read by random index, one patch at a time (a common "faster" variant; the .h5 is built
    from the packed store first and its build time is not counted);
(c) hcd: ``BatchLoader`` over the packed memmap (uint8 batches; augmentation happens later, batch-wise on
    the device), packing the data first with ``hcd_kit.data.prepare`` if needed.

Also measures ``prepare`` itself (images/s packed, warm file cache, into a scratch folder beside --out).
Every method gets one untimed warm-up pass so the OS file cache is warm for all of them.

    python benchmarks/loader.py --data-dir ../shared/data/hcd-mini --out /tmp/hcd-packed
    python benchmarks/loader.py --data-dir data --json --n 20000 --batch-size 256 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common import store_dir  # noqa: E402  (benchmarks/common.py, beside this file)

from hcd_kit.data import BatchLoader, default_workers, open_store, prepare  # noqa: E402


def timed(fn, min_seconds: float = 1.0) -> float:
    """Images/s of ``fn()`` (which returns images delivered): one warm-up call, then repeat for min_seconds."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return n / elapsed


class PilDataset(torch.utils.data.Dataset):
    """What most competition notebooks do: one file open + PIL decode + torchvision transforms per patch."""

    def __init__(self, paths: list[str], labels: np.ndarray) -> None:
        from torchvision import transforms as T

        self.paths, self.labels = paths, labels
        self.tf = T.Compose(
            [
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.RandomRotation(20),
                T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.05),
                T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), float(self.labels[i])


def bench_pil(paths: list[str], labels: np.ndarray, batch_size: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(
        PilDataset(paths, labels),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    def epoch() -> int:
        return sum(len(y) for _, y in loader)

    return timed(epoch, min_seconds=0)


def bench_h5(images: np.ndarray, labels: np.ndarray, batch_size: int, scratch: Path) -> float:
    import h5py

    path = scratch / "patches.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=images)
        f.create_dataset("y", data=labels)
    with h5py.File(path, "r") as f:
        x, y = f["x"], f["y"]
        rng = np.random.default_rng(0)

        def epoch() -> int:
            order, n = rng.permutation(len(images)), 0
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                xb = torch.from_numpy(np.stack([x[i] for i in idx]))  # what a Dataset + collate does
                yb = torch.tensor([y[i] for i in idx], dtype=torch.float32)
                n += min(len(xb), len(yb))
            return n

        return timed(epoch)


def bench_hcd(images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    loader = BatchLoader(images, labels, batch_size=batch_size, shuffle=True, seed=0)
    state = {"epoch": 0}

    def epoch() -> int:
        loader.set_epoch(state["epoch"])
        state["epoch"] += 1
        return sum(len(b.images) for b in loader)

    return timed(epoch)


def bench_prepare(data_dir: Path, scratch: Path, workers: int) -> tuple[float, float]:
    """(wall images/s, decode-only images/s) of a fresh pack of train + test with a warm file cache."""
    best = (0.0, 0.0)
    for rep in range(3):  # the first run warms the file cache; keep the best of the rest
        out = scratch / f"packed-{rep}"
        t0 = time.perf_counter()
        summary = prepare(data_dir, out_dir=out, workers=workers)
        wall = time.perf_counter() - t0
        n = sum(r.count for r in summary.splits.values())
        decode = n / sum(r.seconds for r in summary.splits.values())
        shutil.rmtree(out)
        if rep:
            best = max(best, (n / wall, decode))
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="competition-layout folder")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="packed store folder [default: DATA_DIR/packed if prepared, else a temp folder]",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--n", type=int, default=None, help="use the first N train patches [default: all]")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=default_workers(), help="DataLoader / prepare processes")
    args = ap.parse_args(argv)

    out = store_dir(args.data_dir, args.out)
    prepare(args.data_dir, out_dir=out, splits=("train",), workers=args.workers)
    store = open_store(out, "train")
    n = min(args.n or len(store), len(store))
    images, labels = np.ascontiguousarray(store.images[:n]), store.labels[:n]  # same patches for everyone
    paths = [str(args.data_dir / "train" / f"{i}.tif") for i in store.ids[:n]]

    with tempfile.TemporaryDirectory(prefix="hcd-bench-") as tmp:
        scratch = Path(tmp)
        result = {
            "n": n,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "pil_ips": bench_pil(paths, labels, args.batch_size, args.workers),
            "h5_ips": bench_h5(images, labels, args.batch_size, scratch),
            "hcd_ips": bench_hcd(np.load(out / "train_images.npy", mmap_mode="r")[:n], labels, args.batch_size),
        }
        result["prepare_ips"], result["prepare_decode_ips"] = bench_prepare(args.data_dir, scratch, args.workers)
    result["hcd_vs_pil"] = result["hcd_ips"] / result["pil_ips"]
    result["hcd_vs_h5"] = result["hcd_ips"] / result["h5_ips"]
    if args.json:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}))
    else:
        print(
            f"{n:,} patches, batch {args.batch_size}, {args.workers} workers, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} CPUs"
        )
        for key, name in [
            ("pil_ips", "(a) PIL + torchvision Dataset/DataLoader"),
            ("h5_ips", "(b) h5py by random index"),
            ("hcd_ips", "(c) hcd BatchLoader on the memmap"),
            ("prepare_ips", "hcd prepare (packing, wall)"),
        ]:
            print(f"{name:<44} {result[key]:>12,.0f} images/s")
        print(f"hcd is {result['hcd_vs_pil']:.0f}x (a) and {result['hcd_vs_h5']:.1f}x (b)")
    return result


if __name__ == "__main__":
    main()
