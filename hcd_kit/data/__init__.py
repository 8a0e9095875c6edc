"""Data: the competition's files -> one packed, memory-mapped store -> batches, and the cross-validation folds.

    from hcd_kit.data import prepare, open_store, BatchLoader, create_folds
    prepare("data")                       # DIR/train/*.tif -> DIR/packed/ (once)
    store = open_store("data/packed", "train")

Modules, in pipeline order: ``labels`` (the CSVs), ``tiff`` (one patch), ``decode`` (many, in parallel),
``pack`` (``hcd prepare``), ``store`` (the packed format, read and written), ``loader`` (batches),
``folds`` (``hcd folds``); ``problems`` is the bad-input report they share, ``demo_data`` the shipped sample,
``pseudo`` the pseudo-label file (``hcd pseudo``), ``sources`` the train and test stores read as one.

Names load on first use (``hcd_kit.lazy``), so importing one module of the package imports no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "decode": "default_workers",
        "demo_data": "materialise",
        "folds": "FoldsSummary create_folds make_folds read_folds read_groups write_folds",
        "labels": "read_labels read_sample_submission",
        "loader": "BatchLoader",
        "pack": "PrepareSummary SplitResult open_split open_test_store prepare",
        "problems": "Problems write_report",
        "pseudo": "pseudo_rows read_pseudo write_pseudo",
        "sources": "StackedImages stacked_labels",
        "store": "PackedStore SplitRecord open_store read_manifest",
        "tiff": "TiffLayout parse_layout",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.data.decode import default_workers
    from hcd_kit.data.demo_data import materialise
    from hcd_kit.data.folds import FoldsSummary, create_folds, make_folds, read_folds, read_groups, write_folds
    from hcd_kit.data.labels import read_labels, read_sample_submission
    from hcd_kit.data.loader import BatchLoader
    from hcd_kit.data.pack import PrepareSummary, SplitResult, open_split, open_test_store, prepare
    from hcd_kit.data.problems import Problems, write_report
    from hcd_kit.data.pseudo import pseudo_rows, read_pseudo, write_pseudo
    from hcd_kit.data.sources import StackedImages, stacked_labels
    from hcd_kit.data.store import PackedStore, SplitRecord, open_store, read_manifest
    from hcd_kit.data.tiff import TiffLayout, parse_layout
