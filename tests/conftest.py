"""Shared fixtures: the real hcd-mini data set and small competition-layout subsets of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "hcd-mini"


@pytest.fixture(scope="session")
def mini_root() -> Path:
    """The real miniature competition (3,284 train, 546 test patches); CI has ../shared beside the clone."""
    if not (MINI / "train_labels.csv").is_file():
        pytest.fail(f"real test data not found at {MINI}")
    return MINI


def make_subset(mini: Path, dest: Path, n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """Copy a stratified sample of hcd-mini into ``dest`` in the competition's exact layout."""
    labels = pd.read_csv(mini / "train_labels.csv", dtype={"id": str})
    per_class = max(1, n_train // 2)
    take = pd.concat(
        [g.sample(n=min(per_class, len(g)), random_state=seed) for _, g in labels.groupby("label")]
    ).sort_values("id")
    sub = pd.read_csv(mini / "sample_submission.csv", dtype={"id": str}).head(n_test)
    (dest / "train").mkdir(parents=True, exist_ok=True)
    (dest / "test").mkdir(parents=True, exist_ok=True)
    for i in take["id"]:
        shutil.copyfile(mini / "train" / f"{i}.tif", dest / "train" / f"{i}.tif")
    for i in sub["id"]:
        shutil.copyfile(mini / "test" / f"{i}.tif", dest / "test" / f"{i}.tif")
    take.to_csv(dest / "train_labels.csv", index=False)
    sub.to_csv(dest / "sample_submission.csv", index=False)
    return dest


@pytest.fixture
def subset_factory(mini_root, tmp_path):
    """``subset_factory(n_train=64, n_test=16)`` -> a fresh competition-layout folder under tmp_path."""
    counter = iter(range(1000))

    def make(n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
        return make_subset(mini_root, tmp_path / f"data{next(counter)}", n_train, n_test, seed)

    return make
