"""Where every file hcd reads or writes lives: the data folder and the run folder, each named once.

The data folder (the competition's layout, plus what hcd derives from it)::

    DIR/train/<id>.tif   DIR/test/<id>.tif   DIR/train_labels.csv   DIR/sample_submission.csv
    DIR/packed/          packed uint8 store (``hcd prepare``), named by ``StoreLayout``
    DIR/folds.csv        id,fold (``hcd folds``)

The packed store (format: ``hcd_kit.data.store``)::

    PACKED/{train,test}_images.npy   PACKED/{train,test}_ids.csv   PACKED/manifest.json

The run folder, written by ``hcd train`` and read by ``cv``, ``predict``, ``ensemble`` and kernels::

    RUN/config.toml           resolved TrainConfig (model name, img_size, ... everything to rebuild it)
    RUN/train.log             the log lines printed during training
    RUN/plan.json             {"folds": [...]}: every fold `hcd train` was asked for (what --resume continues)
    RUN/folds.csv             the id,fold split the run was trained on (copied from DIR/folds.csv)
    RUN/data.json             the data folder it trained on and its packed train store's fingerprint
    RUN/environment.json      device, precision (and why), CPU capability, threads, versions
    RUN/fold{k}/best.pt       best weights by validation AUC (plain state_dict, ``weights_only=True``)
    RUN/fold{k}/last.pt       full checkpoint of the last finished epoch (for ``--resume``); removed once the
                              fold is finished, so a finished fold keeps best.pt + state.json, not the optimiser
    RUN/fold{k}/state.json    the fold's progress (epochs done, best AUC, finished), read by --resume and cv
    RUN/fold{k}/history.csv   epoch,lr,train_loss,val_loss,val_auc,images_per_s,skipped_steps
    RUN/fold{k}/oof.csv       id,fold,prob,label for the fold's validation ids (from the best weights)
    RUN/oof_tta{n}.csv        id,fold,prob,label again, re-predicted by ``hcd predict --tta n`` (n views averaged)
    RUN/evaluations/NAME.json ``hcd evaluate`` on a labelled folder the run never saw (AUC + interval, ...)
    RUN/.hcd.lock             while a command writes the run (``hcd_kit.locks``): its PID, host and command
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from hcd_kit.errors import DataError

COMPETITION = "histopathologic-cancer-detection"
IMAGE_SHAPE = (96, 96, 3)
Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
# Problem reports beside the data: every bad input of the last failed `hcd prepare` / bad label of `hcd folds`.
PREPARE_REPORT = "prepare-problems.csv"
FOLDS_REPORT = "folds-problems.csv"
# Columns of the run folder's per-fold CSVs: written by training, read by ``hcd cv``, predict and ensemble.
OOF_COLUMNS = ("id", "fold", "prob", "label")
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_auc", "images_per_s", "skipped_steps")
_F = TypeVar("_F", bound="_Folder")


@dataclass(frozen=True)
class _Folder:
    """A folder whose files the subclass names, one property or method per file."""

    root: Path

    @classmethod
    def of(cls: type[_F], path: str | os.PathLike[str]) -> _F:
        return cls(Path(path))


@dataclass(frozen=True)
class StoreLayout(_Folder):
    """The packed store's files (format: ``hcd_kit.data.store``)."""

    def images(self, split: Split) -> Path:
        return self.root / f"{split}_images.npy"

    def ids(self, split: Split) -> Path:
        return self.root / f"{split}_ids.csv"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


@dataclass(frozen=True)
class DataLayout(_Folder):
    """The data folder: the competition's files and what hcd derives from them."""

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"

    @property
    def train_labels(self) -> Path:
        return self.root / "train_labels.csv"

    @property
    def sample_submission(self) -> Path:
        return self.root / "sample_submission.csv"

    @property
    def packed_dir(self) -> Path:
        return self.root / "packed"

    @property
    def packed(self) -> StoreLayout:
        return StoreLayout(self.packed_dir)

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"


@dataclass(frozen=True)
class RunLayout(_Folder):
    """The run folder ``hcd train`` writes."""

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def pseudo(self) -> Path:
        """``{"file", "sha256", "count", "positives", "negatives"}``: the pseudo-label file the run trains with."""
        return self.root / "pseudo.json"

    @property
    def budget(self) -> Path:
        """The time plan the run was started with (``--time-budget``)."""
        return self.root / "budget.json"

    @property
    def data(self) -> Path:
        """``{"data_dir": ..., "train_fingerprint": ...}``: the data folder the run trained on."""
        return self.root / "data.json"

    def fold_dir(self, fold: int) -> Path:
        return self.root / f"fold{fold}"

    def best(self, fold: int) -> Path:
        return self.fold_dir(fold) / "best.pt"

    def last(self, fold: int) -> Path:
        return self.fold_dir(fold) / "last.pt"

    def state(self, fold: int) -> Path:
        return self.fold_dir(fold) / "state.json"

    def history(self, fold: int) -> Path:
        return self.fold_dir(fold) / "history.csv"

    def oof(self, fold: int) -> Path:
        return self.fold_dir(fold) / "oof.csv"

    def oof_tta(self, n: int) -> Path:
        """Every predicted fold's OOF rows with ``n``-view TTA (``hcd predict``), for like-with-like blends."""
        return self.root / f"oof_tta{n}.csv"

    def planned_folds(self) -> list[int] | None:
        """The folds ``RUN/plan.json`` says the run was asked for; None for a run without one."""
        try:
            folds = json.loads(self.plan.read_text(encoding="utf-8"))["folds"]
            return [int(k) for k in folds]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{self.plan} is damaged; delete it (or pass --fold) to resume") from None

    def folds_present(self) -> list[int]:
        """Folds that have a fold folder, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = re.fullmatch(r"fold(\d+)", p.name)
            if m and p.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)


@dataclass(frozen=True)
class CheckpointSize:
    """What one fold's files weigh, in bytes: ``weights`` (the model's state dict: ``best.pt``, and the model in
    ``last.pt``), ``optimizer`` (AdamW's two moments, or SGD's momentum, of the trained parameters: ``last.pt``)
    and ``ema`` (``last.pt``'s averaged copy, with --ema or --swa-epochs; 0 without). Sized by
    ``training.checkpoint`` (from a built fold, or on the meta device for a kernel's plan, ``kaggle.output``)."""

    weights: int
    optimizer: int
    ema: int = 0

    @property
    def best(self) -> int:
        return self.weights

    @property
    def last(self) -> int:
        return self.weights + self.optimizer + self.ema
