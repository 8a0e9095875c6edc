"""The time plan of a run, from speeds measured on the machine at hand (``hcd train --time-budget``, ``--plan``).

``measure_speeds`` times the real pieces of a run on the store rows of the run's first fold, with a throwaway
model: a few training steps after two warm-up steps (``step.build_trainer`` / ``train_batch`` / ``train_step``,
through the same DataParallel / DDP wrapper), a few validation batches (``validate.predict_rows``), a few TTA x8
passes as ``hcd predict`` runs them (``inference.predict_views``) and one write of ``last.pt`` and ``best.pt``.
``budget.fit_epochs`` turns that into the plan. ``start_budget`` plans a run once, before its first fold and
before it records its config (the chosen epochs then are the run's ``--epochs``, so the LR schedule follows them;
``--resume`` keeps them), and returns the run's ``RunClock``, which the folds receive (fold-parallel workers a
copy); ``plan_run`` only prints the plan (``hcd train --plan``).

    plan = plan_run(cfg, "data", folds="all")     # prints the plan; trains nothing, writes no run folder
"""

from __future__ import annotations

import dataclasses
import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hcd_kit.console import console
from hcd_kit.data.loader import BatchLoader
from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.device import amp_dtype, resolve_device, set_threads
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.model import check_model_name, save_weights, weights_source
from hcd_kit.runs.record import read_budget_record, write_budget_record
from hcd_kit.runs.state import FoldState
from hcd_kit.training.budget import MARGIN, TTA, Plan, RunClock, Speeds, Work, clock_time, fit_epochs, parse_duration
from hcd_kit.training.checkpoint import save_checkpoint
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.distributed import DistInfo, fold_devices, sum_across, wrap_model
from hcd_kit.training.runs import check_folds, finished, read_split
from hcd_kit.training.step import Env, build_trainer, train_batch, train_step
from hcd_kit.training.validate import predict_rows


def plan_run(cfg: TrainConfig, data_dir: str | os.PathLike[str], folds: Sequence[int] | str | None = None) -> Plan:
    """Measure, print the plan for ``cfg`` (its ``time_budget``, or the configured epochs) and return it."""
    device = resolve_device(cfg.device)
    env = Env(device, amp_dtype(device, cfg.precision))
    data, start = DataLayout.of(data_dir), time.time()
    _check(cfg)
    store = open_store(data.packed_dir, "train")
    table = read_split(data, store)
    wanted = check_folds(folds, int(table["fold"].max()) + 1)
    budget_s = parse_duration(cfg.time_budget) if cfg.time_budget else None
    plan = _make_plan(cfg, data, store, table, wanted, env, budget_s, start)
    for line in plan.lines(where=str(device)):
        console.print(line, soft_wrap=True)
    return plan


def start_budget(
    cfg: TrainConfig,
    data: DataLayout,
    run: RunLayout,
    store: PackedStore,
    table: pd.DataFrame,
    wanted: list[int],
    env: Env,
    resume: bool,
    log: Callable[[str], None],
) -> tuple[TrainConfig, RunClock]:
    """Once per run, before it records its config: with a time budget, plan it (measure, choose the epochs, log
    the plan, keep it in ``RUN/budget.json``) unless it is resumed; return the config to train and the run's clock."""
    start, lanes = time.time(), _lanes(cfg, wanted)
    if not cfg.time_budget:
        return cfg, RunClock(wanted, cfg.epochs, lanes=lanes, start=start)
    budget_s = parse_duration(cfg.time_budget)
    if resume and run.config.is_file():  # its epochs (and LR schedule) stay; only the deadline is this session's
        record = read_budget_record(run)
        if "predict_s" not in record:  # started without a budget: measure what the prediction will need
            plan = _make_plan(cfg, data, store, table, wanted, env, None, start)
            record = {"predict_s": plan.predict_s, "epoch_s": max(plan.epoch_s)}
        deadline = start + budget_s * (1 - MARGIN) - float(record["predict_s"])
        log(
            f"time budget {cfg.time_budget} from now (--resume keeps the run's {cfg.epochs} epochs): training "
            f"stops by {clock_time(deadline)}"
        )
        left = {f: 0 if finished(run, f) else cfg.epochs for f in wanted}  # finished folds take no more time
        return cfg, RunClock(wanted, cfg.epochs, deadline, record.get("epoch_s"), lanes, start, left)
    plan = _make_plan(cfg, data, store, table, wanted, env, budget_s, start)
    for line in plan.lines(where=str(env.device)):
        log(line)
    if env.info.is_main:
        write_budget_record(
            run,
            {
                "time_budget": cfg.time_budget,
                "epochs": plan.epochs,
                "configured_epochs": plan.configured,
                "train_images_per_s": plan.speeds.train,
                "val_images_per_s": plan.speeds.val,
                "predict_views_per_s": plan.speeds.predict,
                "epoch_s": max(plan.epoch_s),
                "train_s": plan.train_s,
                "predict_s": plan.predict_s,
            },
        )
    deadline = start + budget_s * (1 - MARGIN) - plan.predict_s
    clock = RunClock(wanted, plan.epochs, deadline, max(plan.epoch_s), lanes, start)
    return dataclasses.replace(cfg, epochs=plan.epochs), clock


def _check(cfg: TrainConfig) -> None:
    check_model_name(cfg.model)
    weights_source(cfg.model, cfg.pretrained, cfg.weights)  # as `hcd train`: offline hub, missing file: one line


def _lanes(cfg: TrainConfig, wanted: list[int]) -> int:
    """Folds trained side by side: the fold-parallel workers, else one."""
    if cfg.strategy != "fold-parallel":
        return 1
    return max(1, min(len(wanted), len(fold_devices(cfg.device, cfg.fold_workers))))


def _make_plan(
    cfg: TrainConfig,
    data: DataLayout,
    store: PackedStore,
    table: pd.DataFrame,
    wanted: list[int],
    env: Env,
    budget_s: float | None,
    start: float,
) -> Plan:
    """The run's sizes, then this machine's speeds, then the epochs that fit: the plan."""
    lanes = _lanes(cfg, wanted)
    global_batch = cfg.batch_size * env.info.world_size
    extra = _pseudo_count(cfg)
    train = [(int((table["fold"] != f).sum()) + extra) // global_batch * global_batch for f in wanted]
    val = [int((table["fold"] == f).sum()) for f in wanted]
    work = Work(train, val, _test_count(data), sum(val), lanes)
    set_threads(cfg.threads, lanes * env.info.local_world_size)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop trains
    speeds = measure_speeds(cfg, store, table, wanted[0], env)
    return fit_epochs(speeds, work, cfg.epochs, budget_s, time.time() - start, cfg.time_budget)


def _pseudo_count(cfg: TrainConfig) -> int:
    """Pseudo-labelled test patches every fold trains on too (``--pseudo``), if that setting exists and is set."""
    path = cfg.pseudo
    if not path:
        return 0
    from hcd_kit.data.pseudo import read_pseudo

    return len(read_pseudo(path))


def _test_count(data: DataLayout) -> int:
    """Test patches `hcd predict` will predict: the packed test store, else sample_submission.csv's rows."""
    try:
        return len(open_store(data.packed_dir, "test"))
    except DataError:
        pass
    try:
        with open(data.sample_submission, encoding="utf-8") as fh:
            return max(0, sum(1 for _ in fh) - 1)
    except OSError:
        return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mean_s(seconds: float, info: DistInfo) -> float:
    """Seconds averaged over the DDP ranks, so every rank plans the same epochs."""
    return max(sum_across([seconds], info)[0] / max(1, info.world_size), 1e-9)


def measure_speeds(
    cfg: TrainConfig,
    store: PackedStore,
    table: pd.DataFrame,
    fold: int,
    env: Env,
    warmup: int = 2,
    steps: int = 10,
    max_s: float = 20.0,
) -> Speeds:
    """Time ``steps`` training steps (after ``warmup``; fewer past ``max_s`` seconds), a few validation batches,
    a few TTA x8 prediction passes and one checkpoint write, on ``fold``'s rows with a throwaway model."""
    info, cuda = env.info, env.device.type == "cuda"
    train_rows = np.sort(table.loc[table["fold"] != fold, "row"].to_numpy(np.int64))
    val_rows = np.sort(table.loc[table["fold"] == fold, "row"].to_numpy(np.int64))
    t0 = time.perf_counter()
    loader = BatchLoader(
        store.images,
        store.labels,
        train_rows,
        batch_size=cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
        rank=info.rank,
        world_size=info.world_size,
        pin_memory=cuda,
    )
    if len(loader) == 0:
        raise ConfigError(
            f"fold {fold}: {len(train_rows)} training images make no full batch of "
            f"{cfg.batch_size * info.world_size}; lower --batch-size"
        )
    t = build_trainer(cfg, max(len(loader), warmup + steps), store.labels[train_rows], env)  # a schedule long enough
    t.net = wrap_model(t.model, cfg.strategy, env.device, info)
    t.net.train()
    _sync(env.device)
    setup_s = _mean_s(time.perf_counter() - t0, info)

    batches, done, begin = _cycle(loader), 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(env.device)
            begin = time.perf_counter()
        batch = next(batches)
        x, y = train_batch(batch, 0, cfg, env)
        train_step(t, x, y, env, cfg.grad_clip)
        done += int(i >= warmup)
        if done >= 2 and not info.distributed and time.perf_counter() - begin > max_s:
            break
    _sync(env.device)
    train_ips = done * cfg.batch_size * info.world_size / _mean_s(time.perf_counter() - begin, info)

    model = t.ema.module if t.ema is not None else t.model
    with tempfile.TemporaryDirectory(prefix="hcd-budget-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "last.pt", t, FoldState())
        save_weights(model, Path(tmp) / "best.pt")
        checkpoint_s = _mean_s(time.perf_counter() - t0, info)

    pool = np.concatenate([val_rows, train_rows])  # distinct rows: validation reads them back by row
    val_batch = cfg.val_batch_size or 2 * cfg.batch_size
    predict_rows(model, store, pool[:val_batch], val_batch, cfg.img_size, env)  # warm-up
    rows = pool[: 4 * val_batch]
    t0 = time.perf_counter()
    predict_rows(model, store, rows, val_batch, cfg.img_size, env)
    val_ips = len(rows) / _mean_s(time.perf_counter() - t0, info)

    del t, batches, loader
    predict_ips = _predict_speed(model, store, pool, cfg.img_size, env)
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return Speeds(train_ips, val_ips, predict_ips, setup_s, checkpoint_s)


def _predict_speed(
    model, store: PackedStore, pool: np.ndarray, img_size: int, env: Env, batch_size: int = 256
) -> float:
    """Views/s of `hcd predict`'s TTA x8 (its default batch of 256 views) on one device."""
    from hcd_kit.inference import predict_views, to_device

    net = to_device(model, env.device)
    per_pass = max(1, batch_size // TTA)
    kw = dict(img_size=img_size, device=env.device, tta=TTA, batch_size=batch_size, dtype=env.dtype)
    predict_views(net, store.images, pool[:per_pass], **kw)  # warm-up
    rows = pool[: 4 * per_pass]
    _sync(env.device)
    t0 = time.perf_counter()
    predict_views(net, store.images, rows, **kw)
    _sync(env.device)
    return TTA * len(rows) / _mean_s(time.perf_counter() - t0, env.info)


def _cycle(loader: BatchLoader):
    while True:
        yield from loader
