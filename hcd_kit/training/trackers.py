"""Experiment trackers for ``hcd train --tracker``: TensorBoard, Weights & Biases (offline) and MLflow.

One ``Tracker`` protocol, three implementations, each behind its optional extra (``pip install
"hcd-kit[tensorboard]"``, ``[wandb]``, ``[mlflow]``); ``check_tracker`` imports the package before anything
is trained or written, so a missing one is one line. What the loop sees is ``Tracking``: it runs on rank 0
only (the other DDP ranks get a silent one), logs the loss and LR every ``STEP_EVERY`` steps (steps per fold,
``epoch x steps_per_epoch + i``, so a resumed fold continues its own curve), every epoch's ``history.csv``
row, and at the end each fold's best val AUC and the pooled OOF AUC. A tracker that fails mid-run is dropped
with one warning: it only watches, training goes on.

Names: the tracker run is the run folder's name (a fold-parallel worker's is ``<run>-fold<k>``); scalars are
``fold<k>/<metric>`` (``fold0/val_auc``; ``fold0/step_loss`` and ``fold0/lr`` per step) and the final figures
``final/fold<k>_best_auc`` and ``final/cv_auc``. Where each writes::

    tensorboard  RUN/tb/ (event files; `tensorboard --logdir RUN/tb`)
    wandb        RUN/wandb/ (offline unless WANDB_MODE is set; upload with `wandb sync RUN/wandb/offline-run-*`;
                 project $WANDB_PROJECT or "hcd", $WANDB_DIR instead of RUN if set)
    mlflow       RUN/mlruns (a file store) unless MLFLOW_TRACKING_URI is set; experiment $MLFLOW_EXPERIMENT_NAME
                 or "hcd"; the config as params (`mlflow ui --backend-store-uri RUN/mlruns`)
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from rich.markup import escape

from hcd_kit.config import to_dict
from hcd_kit.console import err_console
from hcd_kit.errors import ConfigError
from hcd_kit.layout import HISTORY_COLUMNS

STEP_EVERY = 10  # log the step loss and LR every N steps: enough for a curve, cheap for a synchronous file store
EPOCH_KEYS = tuple(k for k in HISTORY_COLUMNS if k not in ("epoch", "lr"))  # history.csv's; lr is logged per step
# --tracker value -> (module that must import, pip extra)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}


class Tracker(Protocol):
    def start(self, name: str, config: dict[str, Any]) -> None: ...

    def log_step(self, fold: int, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None: ...

    def finish(self, final: dict[str, float], failed: bool = False) -> None: ...


def check_tracker(kind: str) -> None:
    """Import ``--tracker kind``'s package now: a ConfigError naming the extra if it is not installed."""
    if kind == "none":
        return
    module, extra = PACKAGES[kind]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or module).split(".")[0] == module
        why = "is not installed" if missing else f"does not import ({str(exc).splitlines()[0] if str(exc) else exc!r})"
        raise ConfigError(
            f'--tracker {kind} needs the {module} package, which {why}: pip install "hcd-kit[{extra}]"'
        ) from None


def flat_config(cfg: Any) -> dict[str, Any]:
    """The resolved TrainConfig as one flat mapping (``augment.color``), the way every tracker shows params."""
    out = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


# ---------------------------------------------------------------------------------------------- the three


class TensorBoardTracker:
    """Event files in ``RUN/tb`` through torch's ``SummaryWriter``; the config as a text summary."""

    def __init__(self, root: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(root / "tb"))

    def start(self, name: str, config: dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in config.items())
        self.writer.add_text("config", f"run **{name}**\n\n| key | value |\n|---|---|\n{rows}", 0)

    def log_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar(f"fold{fold}/step_loss", loss, step)
        self.writer.add_scalar(f"fold{fold}/lr", lr, step)

    def log_epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"fold{fold}/{key}", value, epoch)
        self.writer.flush()  # an epoch is minutes apart: let a running TensorBoard see it now

    def finish(self, final: dict[str, float], failed: bool = False) -> None:
        for key, value in final.items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        self.writer.close()


class WandbTracker:
    """A W&B run, offline unless ``WANDB_MODE`` says otherwise; per-fold step axes (``fold0/step``, ``fold0/epoch``)."""

    def __init__(self, root: Path) -> None:
        import wandb

        self.wandb, self.root, self.run, self.folds = wandb, root, None, set()

    def start(self, name: str, config: dict[str, Any]) -> None:
        wandb = self.wandb
        where = Path(os.environ.get("WANDB_DIR") or self.root)
        where.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "hcd",
            name=name,
            dir=str(where),
            mode=os.environ.get("WANDB_MODE") or "offline",
            config=config,
            settings=settings,
        )
        folder = Path(self.run.dir).parent
        said = (
            f"wandb: offline run {name} in {folder}; upload it with `wandb sync {folder}`"
            if self.run.offline
            else f"wandb: run {name} ({self.run.id})"
        )
        err_console.print(said, soft_wrap=True, highlight=False, markup=False)

    def _axes(self, fold: int) -> None:
        if fold not in self.folds:
            self.folds.add(fold)
            self.run.define_metric(f"fold{fold}/step")
            self.run.define_metric(f"fold{fold}/epoch")
            for key in ("step_loss", "lr"):
                self.run.define_metric(f"fold{fold}/{key}", step_metric=f"fold{fold}/step")
            for key in EPOCH_KEYS:
                self.run.define_metric(f"fold{fold}/{key}", step_metric=f"fold{fold}/epoch")

    def log_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        self._axes(fold)
        self.run.log({f"fold{fold}/step": step, f"fold{fold}/step_loss": loss, f"fold{fold}/lr": lr})

    def log_epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        self._axes(fold)
        self.run.log({f"fold{fold}/epoch": epoch, **{f"fold{fold}/{k}": v for k, v in metrics.items()}})

    def finish(self, final: dict[str, float], failed: bool = False) -> None:
        for key, value in final.items():
            self.run.summary[f"final/{key}"] = value
        self.run.finish(exit_code=1 if failed else 0)
        self.wandb.teardown()  # wait until the run's files are complete (wandb-core writes them after finish)


class MlflowTracker:
    """An MLflow run in ``RUN/mlruns`` (file store) or at ``MLFLOW_TRACKING_URI``; the config as params."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (root / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x asks for it to keep a file store
        self.client, self.uri, self.run_id = MlflowClient(tracking_uri=uri), uri, None

    def start(self, name: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "hcd"
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in config.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        err_console.print(
            f"mlflow: run {name} ({self.run_id}) at {self.uri}", soft_wrap=True, highlight=False, markup=False
        )

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_step(self, fold: int, step: int, loss: float, lr: float) -> None:
        self._log({f"fold{fold}/step_loss": loss, f"fold{fold}/lr": lr}, step)

    def log_epoch(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        self._log({f"fold{fold}/{k}": v for k, v in metrics.items()}, epoch)

    def finish(self, final: dict[str, float], failed: bool = False) -> None:
        if final:
            self._log({f"final/{k}": v for k, v in final.items()}, 0)
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


# ---------------------------------------------------------------------------------------------- what the loop calls


class Tracking:
    """The loop's side: forwards to a tracker (or to none), throttles steps, and survives the tracker's failures."""

    def __init__(self, kind: str, tracker: Tracker | None, pooled: bool = True) -> None:
        self.kind, self.tracker, self.final = kind, tracker, {}
        self.pooled = pooled  # log the pooled OOF AUC at the end (not in a fold-parallel worker: it sees its fold)

    def _call(self, what: str, *args) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, what)(*args)
        except Exception as exc:  # noqa: BLE001  (a tracker only watches: its failure must not stop training)
            tracker, self.tracker = self.tracker, None
            _warn(self.kind, what, exc)
            if what != "finish":
                with contextlib.suppress(Exception):
                    tracker.finish({}, True)

    def start(self, name: str, config: dict[str, Any]) -> None:
        self._call("start", name, config)

    def step(self, fold: int, step: int, loss: Any, lr: float) -> None:
        """The step's loss (a device tensor, NaN when skipped): read, a host sync, only every ``STEP_EVERY`` steps."""
        if self.tracker is None or loss is None or step % STEP_EVERY:
            return
        value = float(loss)
        if math.isfinite(value):
            self._call("log_step", fold, step, value, float(lr))

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        """One ``history.csv`` row (``epoch`` and ``EPOCH_KEYS``)."""
        if self.tracker is not None:
            self._call("log_epoch", fold, int(row["epoch"]), _finite({k: row[k] for k in EPOCH_KEYS if k in row}))

    def results(self, results: dict, run_root: Path) -> None:
        """Keep the final figures for ``finish``: each fold's best val AUC, the pooled OOF AUC (as ``hcd cv``)."""
        if self.tracker is None:
            return
        from hcd_kit.metrics import roc_auc
        from hcd_kit.runs.oof import read_run_oof

        self.final = {f"fold{k}_best_auc": r.best_auc for k, r in sorted(results.items())}
        with contextlib.suppress(Exception):  # a final figure is not worth a failed run
            pooled = read_run_oof(run_root) if self.pooled else None
            if pooled is not None:
                self.final["cv_auc"] = roc_auc(pooled["label"], pooled["prob"])

    def finish(self, failed: bool = False) -> None:
        self._call("finish", _finite(self.final), failed)


def _warn(kind: str, what: str, exc: Exception) -> None:
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    err_console.print(
        f"[yellow]warning:[/] --tracker {kind} failed in {what} ({escape(reason)}); training goes on without it",
        soft_wrap=True,
        highlight=False,
    )


@contextlib.contextmanager
def tracking(cfg: Any, run_root: Path, is_main: bool, part: str | None = None) -> Iterator[Tracking]:
    """The run's ``Tracking`` for a ``with`` block around the folds: started on entry (named after the run folder,
    ``<run>-<part>`` for a fold-parallel worker), finished on exit, marked failed if the block raised. Only rank 0
    (``is_main``) tracks; ``check_tracker`` has already said whether the package imports."""
    tracker = None
    if cfg.tracker != "none" and is_main:
        try:
            tracker = TRACKERS[cfg.tracker](run_root)
        except Exception as exc:  # noqa: BLE001
            _warn(cfg.tracker, "set-up", exc)
    track = Tracking(cfg.tracker, tracker, pooled=part is None)
    track.start(run_root.resolve().name + (f"-{part}" if part else ""), flat_config(cfg))
    try:
        yield track
    except BaseException:
        track.finish(failed=True)
        raise
    track.finish()
