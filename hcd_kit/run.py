"""The layout of a training run folder, named once so ``train``, ``cv``, ``predict`` and kernels agree::

    RUN/config.toml           resolved TrainConfig (model name, img_size, ... everything to rebuild it)
    RUN/train.log             the log lines printed during training
    RUN/plan.json             {"folds": [...]}: every fold `hcd train` was asked for (what --resume continues)
    RUN/folds.csv             the id,fold split the run was trained on (copied from DIR/folds.csv)
    RUN/fold{k}/best.pt       best weights by validation AUC (plain state_dict, ``weights_only=True``)
    RUN/fold{k}/last.pt       full checkpoint of the last finished epoch (for ``--resume``)
    RUN/fold{k}/history.csv   epoch,lr,train_loss,val_loss,val_auc,images_per_s,skipped_steps
    RUN/fold{k}/oof.csv       id,fold,prob,label for the fold's validation ids (from the best weights)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike[str]) -> "RunLayout":
        return cls(Path(run_dir))

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

    def fold_dir(self, fold: int) -> Path:
        return self.root / f"fold{fold}"

    def best(self, fold: int) -> Path:
        return self.fold_dir(fold) / "best.pt"

    def last(self, fold: int) -> Path:
        return self.fold_dir(fold) / "last.pt"

    def history(self, fold: int) -> Path:
        return self.fold_dir(fold) / "history.csv"

    def oof(self, fold: int) -> Path:
        return self.fold_dir(fold) / "oof.csv"

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
