"""Benchmark: training throughput per model, fed from device memory vs. by the real packed-store loader.

For each model it times the training step ``hcd train`` runs (``hcd_kit.training.train_input``: uint8 ->
float on the device, augmentation, upscale + normalise; then ``train_step``: forward + backward + optimiser
step under the AMP that ``hcd_kit.device`` picks, with the default TrainConfig's optimiser and clipping) twice: (a) on batches already resident on the device, which is what the model
alone can do, and (b) on batches from ``BatchLoader`` over the packed memory map, which adds the gather,
the host-to-device copy and the background thread. The difference is the loader overhead; the target is
at most 5 % of model throughput. This is a benchmark, not a test: numbers depend on the machine.

    python benchmarks/train.py                                          # hcd-mini, resnet18 + efficientnet_b0
    python benchmarks/train.py --data-dir data --models resnet34 --batch-size 256 --steps 50 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch

from hcd_kit.choices import Precision

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hcd-mini"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="competition-layout data folder")
    p.add_argument("--out", type=Path, default=None, help="packed store folder (default DIR/packed if "
                   "`hcd prepare` made it, else a temp folder)")
    p.add_argument("--models", default="resnet18,efficientnet_b0", help="comma-separated timm model names")
    p.add_argument("--img-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after --warmup)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements per model; the best counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=typing.get_args(Precision))
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    for key, low in (("steps", 1), ("repeats", 1), ("warmup", 0), ("batch_size", 1), ("img_size", 32)):
        if getattr(args, key) < low:
            p.error(f"--{key.replace('_', '-')} must be >= {low}")
    return args


def packed_store(data_dir: Path, out: Path | None):
    """The packed train store of ``data_dir`` (see ``common.store_dir``: never created inside the data folder),
    packed with ``hcd_kit.data.prepare`` when needed."""
    from common import store_dir  # benchmarks/common.py, beside this file
    from hcd_kit.data import open_store, prepare

    out = store_dir(data_dir, out)
    prepare(data_dir, out=out, splits=("train",))  # a no-op when the store is current
    return open_store(out, "train")


class Stepper:
    """One model with ``hcd train``'s optimiser, schedule, loss and AMP; ``step`` is ``hcd train``'s step."""

    def __init__(self, name: str, device: torch.device, precision: str, img_size: int) -> None:
        from hcd_kit.device import amp_dtype
        from hcd_kit.training import Env, TrainConfig, build_trainer

        self.cfg = TrainConfig(model=name, pretrained=False, img_size=img_size, precision=precision)
        self.env = Env(device, amp_dtype(device, self.cfg.precision))
        self.trainer = build_trainer(self.cfg, 10_000, np.array([0, 1]), self.env)
        self.trainer.model.train()
        self.epoch = 0

    def step(self, x_u8: torch.Tensor, y: torch.Tensor, index: np.ndarray) -> None:
        from hcd_kit.training import train_input, train_step

        x = train_input(x_u8, index, self.epoch, self.cfg, self.env.device)
        train_step(self.trainer, x, y, self.env, self.cfg.grad_clip)

    def sync(self) -> None:
        if self.env.device.type == "cuda":
            torch.cuda.synchronize(self.env.device)


def _timed(stepper: Stepper, batches, warmup: int, steps: int, batch_size: int, label: str) -> float:
    """Images/s over ``steps`` steps after ``warmup`` untimed ones; ``batches`` yields (x, y, index)."""
    from hcd_kit.console import progress

    with progress("img", transient=True) as bar:
        task = bar.add_task(label, total=(warmup + steps) * batch_size)
        for i, (x, y, idx) in enumerate(batches):
            if i == warmup:
                stepper.sync()
                start = time.perf_counter()
            stepper.step(x, y, idx)
            bar.advance(task, len(y))
            if i + 1 == warmup + steps:
                break
        stepper.sync()
    return steps * batch_size / (time.perf_counter() - start)


def from_memory(store, device: torch.device, batch_size: int, n_batches: int = 4):
    """Endless batches that already live on the device (a few distinct ones, cycled)."""
    rng = np.random.default_rng(0)
    held = []
    for _ in range(n_batches):
        idx = np.sort(rng.choice(len(store), batch_size, replace=len(store) < batch_size))
        x = torch.from_numpy(np.ascontiguousarray(store.images[idx])).to(device)
        y = torch.from_numpy(store.labels[idx].astype(np.float32)).to(device)
        held.append((x, y, idx))
    while True:
        yield from held


def from_loader(store, device: torch.device, batch_size: int):
    """Endless batches from the real ``BatchLoader``, moved to the device as ``hcd train`` does."""
    from hcd_kit.data import BatchLoader

    loader = BatchLoader(store.images, store.labels, batch_size=batch_size, shuffle=True, seed=0,
                         drop_last=True, pin_memory=device.type == "cuda")
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for b in loader:
            yield b.images.to(device, non_blocking=True), b.labels.to(device, non_blocking=True), b.index
        epoch += 1


def bench_model(name: str, store, device: torch.device, args: argparse.Namespace) -> dict:
    """Best-of-``repeats`` images/s in memory and with the loader, measured alternately so that a burst of
    load from elsewhere on the machine hits both alike."""
    stepper = Stepper(name, device, args.precision, args.img_size)
    mem, load = [], []
    for r in range(args.repeats):
        tag = f" {r + 1}/{args.repeats}"
        mem.append(_timed(stepper, from_memory(store, device, args.batch_size), args.warmup, args.steps,
                          args.batch_size, f"{name} memory{tag}"))
        gen = from_loader(store, device, args.batch_size)
        try:
            load.append(_timed(stepper, gen, args.warmup, args.steps, args.batch_size, f"{name} loader{tag}"))
        finally:
            gen.close()  # stops the loader's background thread
    best_mem, best_load = max(mem), max(load)
    return {"memory_ips": round(best_mem, 1), "loader_ips": round(best_load, 1),
            "overhead_pct": round(100.0 * (best_mem - best_load) / best_mem, 1)}


def main(argv: list[str] | None = None) -> int:
    from hcd_kit.console import console, err_console
    from hcd_kit.device import resolve_device
    from hcd_kit.errors import HcdError
    from hcd_kit.model import check_model_name

    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        for name in names:
            check_model_name(name)
        store = packed_store(args.data_dir, args.out)
    except HcdError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 1
    if len(store) < args.batch_size:
        err_console.print(f"[bold red]error:[/] the store holds {len(store)} patches, fewer than --batch-size")
        return 1
    results = {name: bench_model(name, store, device, args) for name in names}
    info = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(), "batch_size": args.batch_size, "img_size": args.img_size,
            "steps": args.steps, "repeats": args.repeats, "models": results}
    if args.json:
        print(json.dumps(info))
        return 0
    from rich.table import Table

    table = Table(title=f"training images/s on {info['device']} (batch {args.batch_size}, {args.img_size} px)")
    for col in ("model", "in memory", "with loader", "loader overhead"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        flag = "" if r["overhead_pct"] <= 5 else " [red](> 5 %)[/]"
        table.add_row(name, f"{r['memory_ips']:,.0f}", f"{r['loader_ips']:,.0f}", f"{r['overhead_pct']:.1f} %{flag}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
