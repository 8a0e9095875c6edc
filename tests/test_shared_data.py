"""The whole of ``../shared/data/hcd-mini`` (3,284 train, 546 test real patches): pack it, split it into folds.

Every test here takes ``mini_root``, so it is marked ``shared_data`` and skipped, with the reason, where
that folder is absent. Nothing is written into hcd-mini: the store and the folds go to a temporary folder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hcd_kit.data import create_folds, open_store, prepare, read_folds


@pytest.fixture(scope="module")
def packed(mini_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("mini") / "packed"
    summary = prepare(mini_root, out=out, workers=2)
    return out, summary


@pytest.mark.parametrize("split, csv, rows", [("train", "train_labels.csv", 3284), ("test", "sample_submission.csv", 546)])
def test_prepare_packs_all_of_hcd_mini_in_csv_order_pixel_exact(mini_root, packed, split, csv, rows):
    out, summary = packed
    assert summary.splits[split].count == rows and not summary.splits[split].skipped
    store = open_store(out, split)
    table = pd.read_csv(mini_root / csv, dtype={"id": str})
    assert len(store) == rows and store.ids.tolist() == table["id"].tolist()
    if split == "train":
        assert store.labels.tolist() == table["label"].tolist()
    for k in np.random.default_rng(8).choice(rows, size=100, replace=False):
        with Image.open(mini_root / split / f"{store.ids[k]}.tif") as im:
            assert np.array_equal(store.images[k], np.asarray(im.convert("RGB"))), store.ids[k]


def test_folds_of_hcd_mini_are_stratified(mini_root, tmp_path):
    summary = create_folds(mini_root, n_folds=5, seed=0, out=tmp_path / "folds.csv")
    labels = pd.read_csv(mini_root / "train_labels.csv", dtype={"id": str})
    folds = read_folds(tmp_path / "folds.csv", ids=labels["id"], n_folds=5)
    assert len(folds) == 3284 and sum(summary.counts) == 3284
    assert max(summary.counts) - min(summary.counts) <= 1
    overall = labels["label"].mean()
    for k in range(5):
        rate = labels["label"][folds["fold"].to_numpy() == k].mean()
        assert abs(rate - overall) < 0.005 and rate == pytest.approx(summary.positive_rates[k])
