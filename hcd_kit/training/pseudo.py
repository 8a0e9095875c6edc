"""``hcd train --pseudo FILE``: pseudo-labelled test patches added to every fold's training part, never to validation.

The training loader of a fold then draws from the train store and the packed test store as one array
(``hcd_kit.data.sources.StackedImages``): train rows keep their numbers, the test store's row ``k`` becomes
row ``len(train) + k``, so augmentation draws (keyed by row) stay reproducible. Validation, ``oof.csv`` and the
choice of the best epoch read the train store's validation rows only, exactly as without ``--pseudo``.

The run records what it trained on in ``RUN/pseudo.json`` (the file, its sha256, how many ids of each class);
a run folder trained with one pseudo-label file refuses another (or none), in one line.

    check_pseudo(cfg, data, run, write=True)        # once per run, before it records anything
    source = training_source(cfg, fold, store, train_rows, run, log=print)   # per fold
    loader = BatchLoader(source.images, source.labels, source.rows, ...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hcd_kit.data.pseudo import pseudo_rows, read_pseudo
from hcd_kit.data.sources import StackedImages, stacked_labels
from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.errors import ConfigError
from hcd_kit.fsutil import sha256_file
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.runs.record import read_pseudo_record, write_pseudo_record
from hcd_kit.training.config import TrainConfig


@dataclass
class TrainSource:
    """What a fold's training loader reads: ``images[rows]`` with ``labels[rows]``."""

    images: np.ndarray | StackedImages
    labels: np.ndarray
    rows: np.ndarray  # int64: the fold's training rows, then the pseudo-labelled ones (>= len(train store))
    n_pseudo: int = 0


def check_pseudo(cfg: TrainConfig, data: DataLayout, run: RunLayout, write: bool) -> None:
    """Before a run records anything: check ``cfg.pseudo`` (readable, every id in the packed test store) against
    what the run folder was trained with, and record it in ``RUN/pseudo.json`` when ``write`` and none is there."""
    record = read_pseudo_record(run)
    if cfg.pseudo is None:
        if record is not None:
            raise ConfigError(
                f"{run.root} was trained with pseudo-labels from {record['file']}; pass --pseudo "
                f"{record['file']} to continue it, or use a new --run-dir"
            )
        return
    frame, digest = read_pseudo(cfg.pseudo), sha256_file(cfg.pseudo)
    _check_record(run, record, cfg.pseudo, digest)
    pseudo_rows(frame, open_store(data.packed_dir, "test"), cfg.pseudo)
    if write and record is None:
        labels = frame["label"].to_numpy(np.int64)
        write_pseudo_record(
            run,
            {
                "file": str(cfg.pseudo),
                "sha256": digest,
                "count": len(frame),
                "positives": int(labels.sum()),
                "negatives": int((labels == 0).sum()),
            },
        )


def training_source(
    cfg: TrainConfig, fold: int, store: PackedStore, train_rows: np.ndarray, run: RunLayout, log: Callable[[str], None]
) -> TrainSource:
    """The fold's training rows, with ``cfg.pseudo``'s test patches added when it is set (``check_pseudo`` first)."""
    if cfg.pseudo is None:
        return TrainSource(store.images, store.labels, train_rows)
    frame = read_pseudo(cfg.pseudo)
    record = read_pseudo_record(run)
    if record is not None:  # the file must not change between the folds of a run
        _check_record(run, record, cfg.pseudo, sha256_file(cfg.pseudo))
    test = open_store(_packed_dir(store), "test")
    rows = pseudo_rows(frame, test, cfg.pseudo)
    labels = frame["label"].to_numpy(np.int64)
    log(
        f"fold {fold}: + {len(frame)} pseudo-labelled test images ({int(labels.sum())} label 1, "
        f"{int((labels == 0).sum())} label 0) from {cfg.pseudo} join its training part"
    )
    return TrainSource(
        images=StackedImages(store.images, test.images),
        labels=stacked_labels(store.labels, len(test), rows, labels),
        rows=np.concatenate([np.asarray(train_rows, np.int64), len(store) + np.sort(rows)]),
        n_pseudo=len(frame),
    )


def _check_record(run: RunLayout, record: dict | None, path: str, digest: str) -> None:
    """One run, one pseudo-label file: the recorded one (by content), or none recorded and no fold trained yet."""
    if record is not None:
        if record["sha256"] != digest:
            raise ConfigError(
                f"{run.root} was trained with pseudo-labels {record['file']} (sha256 {record['sha256'][:12]}), but "
                f"{path} differs (sha256 {digest[:12]}); use the same file, or a new --run-dir"
            )
        return
    # A fold's checkpoint without a record was trained without pseudo-labels (the record is written before training).
    trained = sorted(run.root.glob("fold*/last.pt")) + sorted(run.root.glob("fold*/best.pt"))
    if trained:
        raise ConfigError(
            f"{trained[0].parent} was trained without pseudo-labels; drop --pseudo to continue "
            "this run, or use a new --run-dir"
        )


def _packed_dir(store: PackedStore) -> Path:
    """The packed folder ``store`` was opened from (``open_store`` memory-maps ``PACKED/train_images.npy``)."""
    name = getattr(store.images, "filename", None)
    if name is None:
        raise ConfigError("--pseudo needs the packed train store opened from disk (DIR/packed)")
    return Path(name).parent
