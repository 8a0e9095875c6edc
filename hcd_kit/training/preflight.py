"""Pre-flight disk check of ``hcd train``: before a fold's first step, refuse at once, in one line, when the run
folder's disk cannot hold what the remaining folds will write (``fsutil.check_free_space``), rather than fail
at the end of an epoch (or of the fourth fold) with a full disk.

What a fold writes, at its peak: ``best.pt`` (the evaluated weights), and ``last.pt`` (weights, the optimiser's
moments, EMA: ``layout.CheckpointSize``) twice while the new one is written beside the old before it
replaces it. Every fold still to train keeps a ``best.pt``; a finished fold drops its ``last.pt``. Logs, history
and OOF files are small beside these (a megabyte is allowed for them).
"""

from __future__ import annotations

from hcd_kit.fsutil import check_free_space, human_bytes
from hcd_kit.layout import CheckpointSize, RunLayout
from hcd_kit.training.checkpoint import Trainer, size_of

SMALL_FILES = 1 << 20  # logs, history.csv, oof.csv, state.json


def fold_disk_need(size: CheckpointSize, folds_left: int, resuming: bool) -> int:
    """Bytes this fold and ``folds_left - 1`` more after it need free: a ``best.pt`` each, and this fold's
    ``last.pt`` twice at its peak (once if resuming: the old one is already on the disk)."""
    return folds_left * size.best + (1 if resuming else 2) * size.last + SMALL_FILES


def check_fold_space(t: Trainer, run: RunLayout, fold: int, folds_left: int) -> None:
    size = size_of(t)
    check_free_space(
        run.root,
        fold_disk_need(size, folds_left, run.last(fold).is_file()),
        f"{folds_left} fold(s) of this run (best.pt {human_bytes(size.best)} each, last.pt {human_bytes(size.last)})",
        ", or train into another --run-dir on a larger disk",
    )
