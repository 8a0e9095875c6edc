"""Data: the competition's files -> one packed, memory-mapped store -> batches, and the cross-validation folds.

    from hcd_kit.data import prepare, open_store, BatchLoader, create_folds
    prepare("data")                       # DIR/train/*.tif -> DIR/packed/ (once)
    store = open_store("data/packed", "train")
"""

from hcd_kit.data.demo_data import materialise
from hcd_kit.data.folds import create_folds, make_folds, read_folds, read_groups, write_folds
from hcd_kit.data.labels import Problems, read_labels, read_sample_submission
from hcd_kit.data.loader import BatchLoader
from hcd_kit.data.pack import prepare
from hcd_kit.data.store import PackedStore, open_store

__all__ = [
    "BatchLoader", "PackedStore", "Problems", "create_folds", "make_folds", "materialise", "open_store", "prepare",
    "read_folds", "read_groups", "read_labels", "read_sample_submission", "write_folds",
]
