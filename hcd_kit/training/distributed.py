"""Multi-device plumbing for training: DataParallel, DistributedDataParallel (torchrun) and fold-parallel.

Three ways to use several GPUs (Kaggle's T4x2 is the target), all driven by the same ``hcd train``:

* ``dp`` (what ``auto`` picks with 2+ visible GPUs): one process, ``nn.DataParallel`` splits every batch.
* ``ddp``: one process per GPU, launched by torchrun; ``init_distributed`` reads RANK / WORLD_SIZE /
  LOCAL_RANK from the environment (gloo on CPU, nccl on CUDA), so multi-node runs need no other code::

      torchrun --nproc_per_node 2 -m hcd_kit train --data-dir DIR --fold 0 --strategy ddp
      torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 2 -m hcd_kit train ... --strategy ddp

* ``fold-parallel``: one worker process per GPU, each training whole folds (``run_fold_parallel`` spawns
  them with ``multiprocessing``) -- no communication at all, the simplest way to keep two T4s busy over 5 folds.

Only rank 0 writes files; validation predictions of all ranks are gathered with ``gather_arrays``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hcd_kit.errors import ConfigError, HcdError, TrainingError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun job described by the environment; returns this rank's info and device.

    On CUDA each rank takes GPU ``LOCAL_RANK`` (whatever ``device`` said) and uses nccl; on the CPU gloo.
    """
    import torch.distributed as dist

    if not launched_by_torchrun():
        raise ConfigError("--strategy ddp needs torchrun: `torchrun --nproc_per_node N -m hcd_kit train ...`")
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, strategy: str, device: torch.device, info: DistInfo) -> nn.Module:
    """DDP under torchrun, DataParallel for ``dp``/``auto`` on 2+ GPUs, otherwise the bare model."""
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # timm inits some 1x1 convs with channels-last strides; DDP then warns once per step, harmlessly
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DDP(model, device_ids=ids)
    if device.type == "cuda" and device.index is None and strategy in ("auto", "dp") and torch.cuda.device_count() > 1:
        return nn.DataParallel(model)
    return model


def all_ranks(flag: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A 0-d bool tensor, True on every rank iff ``flag`` is True on every rank (keeps ranks in lock-step on
    skipped steps). An all-reduce on the device: nothing waits for the host."""
    if not info.distributed:
        return flag
    import torch.distributed as dist

    t = flag.to(torch.float32).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t[0] > 0


def sum_across(values: Sequence[float], info: DistInfo) -> list[float]:
    """Element-wise sum of ``values`` over ranks (for epoch means of per-rank losses)."""
    if not info.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_arrays(arrays: Sequence[np.ndarray], info: DistInfo) -> list[np.ndarray]:
    """Concatenate each array across ranks (rank order); a no-op in a single process."""
    if not info.distributed:
        return list(arrays)
    import torch.distributed as dist

    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, [np.asarray(a) for a in arrays])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(arrays))]


def fold_devices(device_spec: str, n_workers: int = 0) -> list[str]:
    """Devices for fold-parallel workers: every visible GPU, or ``n_workers`` (default 2) CPU workers."""
    if device_spec in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(n_workers or n)]
    if device_spec.startswith("cuda"):
        raise ConfigError(f"--strategy fold-parallel spreads folds over all GPUs; use --device auto, not {device_spec}")
    return ["cpu"] * (n_workers or 2)


def run_fold_parallel(
    worker: Callable[[int, str], None], folds: Sequence[int], devices: Sequence[str], run_dir: Path
) -> None:
    """Call ``worker(fold, device)`` in a spawned process per fold, at most one per device entry at a time.

    ``worker`` must be picklable (a module-level function or a ``functools.partial`` of one). Each
    worker's output goes to ``run_dir/fold{k}/worker.log``. Raises TrainingError naming the first failed
    fold and its log once all workers have finished; an interrupt terminates the workers it started.
    """
    ctx = mp.get_context("spawn")  # a fresh interpreter: no forked CUDA state, no inherited threads
    pending = list(folds)
    running: dict[str, tuple[int, mp.process.BaseProcess]] = {}
    codes: dict[int, int] = {}
    slots = list(dict.fromkeys(f"{d}#{i}" for i, d in enumerate(devices)))
    try:
        while pending or running:
            for slot in slots:
                if slot not in running and pending:
                    fold = pending.pop(0)
                    log_path = _worker_log(run_dir, fold)
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    proc = ctx.Process(target=_worker_main, args=(worker, fold, slot.split("#")[0], log_path))
                    proc.start()
                    running[slot] = (fold, proc)
            wait([proc.sentinel for _, proc in running.values()], timeout=1.0)
            for slot, (fold, proc) in list(running.items()):
                if not proc.is_alive():
                    proc.join()
                    codes[fold] = proc.exitcode
                    del running[slot]
    finally:
        for _fold, proc in running.values():  # interrupted: stop the workers we started
            proc.terminate()
            proc.join()
    failed = [f for f, c in sorted(codes.items()) if c != 0]
    if failed:
        raise TrainingError(
            f"fold {failed[0]} failed in its worker (exit {codes[failed[0]]}); see {_worker_log(run_dir, failed[0])}"
        )


def _worker_log(run_dir: Path, fold: int) -> Path:
    return Path(run_dir) / f"fold{fold}" / "worker.log"


def _worker_main(worker: Callable[[int, str], None], fold: int, device: str, log_path: Path) -> None:
    """A fold-parallel worker process: everything it prints (Python and C level) goes to ``log_path``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # line-buffered: readable while it runs
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
    try:
        worker(fold, device)
    except HcdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
