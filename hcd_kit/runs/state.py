"""A fold's progress, ``RUN/foldK/state.json``: its one writer and reader (``FoldState``).

``hcd train`` rewrites it atomically after every epoch, right after ``last.pt`` (the resumable checkpoint,
``hcd_kit.training.checkpoint``), so it never claims more than ``last.pt`` holds; once the fold is finished it
is written alone and ``last.pt`` is deleted. Whoever only asks how far a
fold got (``--resume`` skipping finished folds, ``hcd cv``) reads these few hundred bytes instead of loading
the optimiser state (gigabytes for a ViT-L fine-tune).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from hcd_kit.damage import damaged, first_line, read_json
from hcd_kit.fsutil import atomic_write_text


@dataclass
class FoldState:
    """How far one fold got: epochs finished, its best epoch and AUC, its history rows, whether it is done."""

    epoch: int = 0  # epochs finished
    best_score: float = -math.inf
    best_auc: float = math.nan
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    finished: bool = False


def write_state(path: str | os.PathLike[str], state: FoldState) -> None:
    atomic_write_text(path, json.dumps(vars(state), indent=1) + "\n")


def read_state(path: str | os.PathLike[str]) -> FoldState | None:
    """The fold's progress from ``state.json``; None when there is none; a one-line DataError when damaged."""
    fix = "delete it and the fold's last.pt to restart the fold"
    try:
        return FoldState(**read_json(path, fix))
    except FileNotFoundError:
        return None
    except TypeError as exc:  # keys FoldState does not have
        raise damaged(path, first_line(exc), fix) from None
