"""Pre-flight disk check of ``hcd train``: before a fold's first step, refuse at once, in one line, when the run
folder's disk cannot hold what the remaining folds will write (``fsutil.check_free_space``), rather than fail
at the end of an epoch (or of the fourth fold) with a full disk.

What a fold writes, at its peak: ``best.pt`` (the evaluated weights), and ``last.pt`` (weights, the optimiser's
moments, EMA) twice while the new one is written beside the old before it replaces it. Every fold still to
train keeps a ``best.pt``; logs, history and OOF files are small beside these (a megabyte is allowed for them).
"""

from __future__ import annotations

from hcd_kit.fsutil import check_free_space, human_bytes, payload_bytes
from hcd_kit.layout import RunLayout
from hcd_kit.training.checkpoint import Trainer

SMALL_FILES = 1 << 20  # logs, history.csv, oof.csv, state.json


def fold_disk_need(t: Trainer, folds_left: int, resuming: bool) -> tuple[int, int, int]:
    """(bytes needed, best.pt bytes, last.pt bytes) for this fold and ``folds_left - 1`` more after it."""
    weights = payload_bytes(t.model.state_dict())
    trainable = sum(p.numel() * p.element_size() for p in t.model.parameters() if p.requires_grad)
    moments = 2 * trainable  # AdamW's two (SGD keeps one: the estimate errs on the safe side)
    last = weights + moments + (weights if t.ema is not None else 0)
    need = folds_left * weights + (1 if resuming else 2) * last + SMALL_FILES
    return need, weights, last


def check_fold_space(t: Trainer, run: RunLayout, fold: int, folds_left: int) -> None:
    resuming = run.last(fold).is_file()
    need, best, last = fold_disk_need(t, folds_left, resuming)
    check_free_space(
        run.root,
        need,
        f"{folds_left} fold(s) of this run (best.pt {human_bytes(best)} each, last.pt {human_bytes(last)})",
        ", or train into another --run-dir on a larger disk",
    )
