"""Benchmark: hcd's training step against the bare timm step, and the packed-store loader against memory.

For each model it times three things, alternately (so a burst of load elsewhere hits all alike), best of
``--repeats``:

* **hcd**: the step ``hcd train`` runs (``hcd_kit.training.train_input``: uint8 -> float on the device,
  augmentation, upscale + normalise; then ``train_step``: forward + backward + clipping + optimiser, schedule and
  non-finite checks, in the precision and memory format ``hcd_kit.device`` picks) on batches already on the device;
* **bare**: the plainest timm step of the same model, batch and optimiser (``create_model`` -> forward -> BCE ->
  backward -> AdamW, input already normalised), in every variant that could be fastest here: float32 and the
  native low precision (bf16 on a CPU that has it, fp16 + GradScaler on CUDA), NCHW and channels-last. The
  fastest variant (screened once, then timed with the others) is the reference;
* **loader**: hcd's step fed by ``BatchLoader`` over the packed memory map (gather, host-to-device copy,
  background threads).

``hcd_over_bare`` = hcd / fastest bare, the median over rounds of the two timed back to back (target >= 0.95:
hcd's precision and format choice plus its extras cost at most 5 %); ``overhead_pct`` = what the loader costs
against memory (target <= 5 %). A benchmark, not a test.

    python benchmarks/train.py --models resnet10t,resnet18 --json        # hcd-mini, batch 64
    python benchmarks/train.py --data-dir data --models resnet34 --batch-size 256 --steps 50 --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
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
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="packed store folder (default DIR/packed if `hcd prepare` made it, else a temp folder)",
    )
    p.add_argument("--models", default="resnet10t,resnet18", help="comma-separated timm model names")
    p.add_argument("--img-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64, help="the cpu recipe's batch")
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement (after --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="rounds of alternating measurements per model: the best "
        "images/s count, and hcd / bare is the median of the rounds' ratios (a shared CPU's load "
        "changes between rounds, not within one)",
    )
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
    prepare(data_dir, out_dir=out, splits=("train",))  # a no-op when the store is current
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
        _sync(self.env.device)


class BareStepper:
    """The plainest timm training step: no augmentation, clipping, schedule or checks; ``dtype`` None = float32."""

    def __init__(
        self,
        name: str,
        device: torch.device,
        dtype: torch.dtype | None,
        channels_last: bool,
        batch: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        import timm

        self.device, self.dtype = device, dtype
        self.model = timm.create_model(name, pretrained=False, num_classes=1).to(device).train()
        x, self.y = batch
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=device.type == "cuda" or None)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(self, *_) -> None:
        with torch.autocast(
            device_type=self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        ):
            out = self.model(self.x).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def sync(self) -> None:
        _sync(self.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_variants(device: torch.device) -> list[tuple[str, torch.dtype | None, bool]]:
    """(label, dtype, channels_last) of every bare step that could be the fastest on ``device``."""
    from hcd_kit.device import cpu_caps

    low = [("fp16", torch.float16)] if device.type == "cuda" else [("bf16", torch.bfloat16)] if cpu_caps().bf16 else []
    return [
        (f"{name} {'channels-last' if cl else 'NCHW'}", dtype, cl)
        for name, dtype in [("fp32", None), *low]
        for cl in (False, True)
    ]


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

    loader = BatchLoader(
        store.images,
        store.labels,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for b in loader:
            yield b.images.to(device, non_blocking=True), b.labels.to(device, non_blocking=True), b.index
        epoch += 1


def bench_model(name: str, store, device: torch.device, args: argparse.Namespace) -> dict:
    """hcd's step in memory, the fastest bare step and hcd's step with the loader (see module docstring)."""
    from hcd_kit.preprocess import to_input

    stepper = Stepper(name, device, args.precision, args.img_size)
    held = next(from_memory(store, device, args.batch_size))
    bare_batch = (to_input(held[0], args.img_size, device), held[1])  # normalised float, as a bare loop feeds it
    screen = {}
    for label, dtype, cl in bare_variants(device):  # once each, to find the variant to beat
        bare = BareStepper(name, device, dtype, cl, bare_batch)
        screen[label] = _timed(
            bare, itertools.repeat(held), args.warmup, max(2, args.steps // 2), args.batch_size, f"{name} bare {label}"
        )
        del bare
    best_label = max(screen, key=screen.get)
    best = BareStepper(
        name, device, *[(d, c) for lbl, d, c in bare_variants(device) if lbl == best_label][0], bare_batch
    )
    mem, bare_ips, load, ratios = [], [], [], []
    for r in range(args.repeats):  # hcd and bare back to back: each round's ratio sees the same machine
        tag = f" {r + 1}/{args.repeats}"
        pair = [
            lambda tag=tag: mem.append(
                _timed(
                    stepper,
                    from_memory(store, device, args.batch_size),
                    args.warmup,
                    args.steps,
                    args.batch_size,
                    f"{name} hcd{tag}",
                )
            ),
            lambda tag=tag: bare_ips.append(
                _timed(
                    best,
                    itertools.repeat(held),
                    args.warmup,
                    args.steps,
                    args.batch_size,
                    f"{name} bare {best_label}{tag}",
                )
            ),
        ]
        for measure in pair if r % 2 == 0 else pair[::-1]:  # either goes first in turn: no order bias
            measure()
        ratios.append(mem[-1] / bare_ips[-1])
        gen = from_loader(store, device, args.batch_size)
        try:
            load.append(_timed(stepper, gen, args.warmup, args.steps, args.batch_size, f"{name} loader{tag}"))
        finally:
            gen.close()  # stops the loader's background thread
    best_mem, best_load, best_bare = max(mem), max(load), max(bare_ips)
    return {
        "memory_ips": round(best_mem, 1),
        "loader_ips": round(best_load, 1),
        "overhead_pct": round(100.0 * (best_mem - best_load) / best_mem, 1),
        "bare_ips": round(best_bare, 1),
        "bare_best": best_label,
        "bare_screen_ips": {k: round(v, 1) for k, v in screen.items()},
        "hcd_over_bare": round(statistics.median(ratios), 3),
        "hcd_over_bare_rounds": [round(x, 3) for x in ratios],
    }


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
    from hcd_kit.device import choose_precision, cpu_caps, set_threads

    set_threads()  # as `hcd train`: the CPUs this process may use
    results = {name: bench_model(name, store, device, args) for name in names}
    info = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": cpu_caps().label,
        "precision": choose_precision(device, args.precision).label,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "models": results,
    }
    if args.json:
        print(json.dumps(info))
        return 0
    from rich.table import Table

    table = Table(
        title=f"training images/s on {info['device']} ({info['cpu']}; hcd: {info['precision']}; "
        f"batch {args.batch_size}, {args.img_size} px, {info['threads']} threads)"
    )
    for col in ("model", "hcd step", "fastest bare step", "hcd / bare", "hcd + loader", "loader overhead"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        flag = "" if r["overhead_pct"] <= 5 else " [red](> 5 %)[/]"
        ratio = "" if r["hcd_over_bare"] >= 0.95 else " [red](< 0.95)[/]"
        table.add_row(
            name,
            f"{r['memory_ips']:,.0f}",
            f"{r['bare_ips']:,.0f} ({r['bare_best']})",
            f"{r['hcd_over_bare']:.3f}{ratio}",
            f"{r['loader_ips']:,.0f}",
            f"{r['overhead_pct']:.1f} %{flag}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
