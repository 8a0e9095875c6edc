"""Decoding many patches into one ``.npy`` in parallel: work is split into chunks over processes, each
writing its rows into the shared memory map, so peak memory does not grow with the data set.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from hcd_kit.console import progress
from hcd_kit.data.tiff import Decoder, TiffLayout, find_layout

_WORKER: dict = {}


def _open_rows(npy: str | Path) -> np.ndarray:
    # a plain ndarray view: slicing an np.memmap builds a memmap object per row, which costs more than a row
    return np.load(npy, mmap_mode="r+").view(np.ndarray)


def _init_worker(npy: str, layout: TiffLayout | None) -> None:
    _WORKER["out"] = _open_rows(npy)
    _WORKER["decoder"] = Decoder(layout)


def _decode_chunk(out: np.ndarray, decoder: Decoder, folder: str, ids: list[str], start: int) -> list:
    bad = []
    for k, i in enumerate(ids):
        kind = decoder.decode_into(os.path.join(folder, i + ".tif"), out[start + k])
        if kind is not None:
            bad.append((start + k, kind))
    return bad


def _work(job: tuple[str, list[str], int]) -> tuple[int, list, int, int]:
    dec = _WORKER["decoder"]
    fast, pil = dec.fast, dec.pil
    bad = _decode_chunk(_WORKER["out"], dec, *job)
    return len(job[1]), bad, dec.fast - fast, dec.pil - pil


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_all(npy: Path, folder: Path, ids: list[str], workers: int, label: str) -> tuple[list, int, int]:
    """Decode ``folder/<id>.tif`` into rows of the ``.npy`` at ``npy``; (bad (row, kind) pairs, fast, pil)."""
    sample = ids[:: max(1, len(ids) // 16)][:16]
    layout = find_layout([os.path.join(folder, f"{i}.tif") for i in sample])
    chunk = int(np.clip(len(ids) // (workers * 8) + 1, 64, 2048))
    jobs = [(str(folder), ids[s : s + chunk], s) for s in range(0, len(ids), chunk)]
    if workers <= 1 or len(jobs) <= 1:
        out, dec = _open_rows(npy), Decoder(layout)
        with progress("img") as bar:
            task = bar.add_task(f"packing {label}", total=len(ids))
            bad = []
            for job in jobs:
                bad += _decode_chunk(out, dec, *job)
                bar.advance(task, len(job[1]))
        return bad, dec.fast, dec.pil
    # fork starts workers in milliseconds (they need nothing but this module); fork before the progress
    # bar starts its refresh thread, since forking a multi-threaded process is unsafe
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    bad, fast, pil = [], 0, 0
    with ctx.Pool(min(workers, len(jobs)), _init_worker, (str(npy), layout)) as pool, progress("img") as bar:
        task = bar.add_task(f"packing {label}", total=len(ids))
        for n, b, f, p in pool.imap_unordered(_work, jobs):
            bad += b
            fast, pil = fast + f, pil + p
            bar.advance(task, n)
    return bad, fast, pil
