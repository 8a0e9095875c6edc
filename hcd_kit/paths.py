"""The competition's file layout, and where hcd puts what it derives from it.

Everything hcd reads or writes under a data folder is named here once, so commands agree on it::

    DIR/train/<id>.tif   DIR/test/<id>.tif   DIR/train_labels.csv   DIR/sample_submission.csv
    DIR/packed/          packed uint8 stores (``hcd prepare``)
    DIR/folds.csv        id,fold (``hcd folds``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COMPETITION = "histopathologic-cancer-detection"
IMAGE_SHAPE = (96, 96, 3)


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @classmethod
    def of(cls, data_dir: str | os.PathLike[str]) -> "DataLayout":
        return cls(Path(data_dir))

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
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"
