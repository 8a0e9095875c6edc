"""Benchmark: ``hcd prepare`` throughput (images/s packed, warm file cache) at a size where fixed costs fade.

The real mini data set has 3,830 patches, which packs in a fraction of a second, so start-up costs (worker
processes, PIL import, fsync) weigh. ``--repeat K`` builds a scratch competition folder with K hard links
to every train patch (and a matching train_labels.csv), so the same real bytes are packed K times over.

    python benchmarks/prepare.py --data-dir ../shared/data/hcd-mini --repeat 10 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hcd_kit.data import default_workers, prepare  # noqa: E402


def replicate(src: Path, dest: Path, repeat: int) -> int:
    """A train-only competition folder with ``repeat`` hard links (copies across filesystems) per patch."""
    labels = pd.read_csv(src / "train_labels.csv", dtype={"id": str})
    (dest / "train").mkdir(parents=True)
    rows = []
    for k in range(repeat):
        for i, y in zip(labels["id"], labels["label"]):
            new = f"{i}-{k}"
            try:
                os.link(src / "train" / f"{i}.tif", dest / "train" / f"{new}.tif")
            except OSError:
                shutil.copyfile(src / "train" / f"{i}.tif", dest / "train" / f"{new}.tif")
            rows.append((new, y))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(dest / "train_labels.csv", index=False)
    return len(rows)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up; the best is kept")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hcd-prepare-bench-") as tmp:
        root = Path(tmp) / "data"
        n = replicate(args.data_dir, root, args.repeat)
        walls, decodes, per_cpu = [], [], []
        for run in range(args.runs + 1):
            out = Path(tmp) / f"packed-{run}"
            t0, c0 = time.perf_counter(), cpu_seconds()
            summary = prepare(root, out_dir=out, workers=args.workers)
            walls.append(n / (time.perf_counter() - t0))
            per_cpu.append(n / (cpu_seconds() - c0))
            decodes.append(n / summary.splits["train"].seconds)
            shutil.rmtree(out)
        result = {
            "n": n,
            "workers": args.workers,
            "prepare_ips": max(walls[1:]),
            "prepare_decode_ips": max(decodes[1:]),
            # on a shared machine wall-clock rates depend on the neighbours; this does much less
            "images_per_cpu_s": max(per_cpu[1:]),
            "fast_path": summary.splits["train"].fast,
        }
    if args.json:
        print(json.dumps({k: round(v) if isinstance(v, float) else v for k, v in result.items()}))
    else:
        print(
            f"{n:,} patches, {args.workers} workers: {result['prepare_ips']:,.0f} images/s "
            f"(decode only {result['prepare_decode_ips']:,.0f}/s; {result['images_per_cpu_s']:,.0f} per CPU-second)"
        )


if __name__ == "__main__":
    main()
