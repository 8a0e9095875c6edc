"""Validation of a fold during training: the fold's probabilities for its validation rows, and their loss.

``predict_rows`` is the one inference path of ``hcd train`` (single view, autocast, DDP ranks each taking a slice
and gathering); ``hcd predict`` has its own, with TTA (``hcd_kit.inference.predict``). The time-budget planner
(``speed.py``) times this same function.

    probs = predict_rows(model, store, val_rows, batch_size=256, img_size=96, env=env)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from hcd_kit.data.loader import BatchLoader
from hcd_kit.data.store import PackedStore
from hcd_kit.device import autocast, model_input
from hcd_kit.preprocess import to_input
from hcd_kit.training.distributed import gather_arrays
from hcd_kit.training.step import Env


@torch.inference_mode()
def predict_rows(
    model: nn.Module, store: PackedStore, rows: np.ndarray, batch_size: int, img_size: int, env: Env
) -> np.ndarray:
    """Sigmoid probabilities for store ``rows`` (in that order); under DDP each rank does a slice."""
    was_training = model.training
    model.eval()
    mine = np.array_split(rows, env.info.world_size)[env.info.rank]
    loader = BatchLoader(
        store.images, None, mine, batch_size=batch_size, shuffle=False, pin_memory=env.device.type == "cuda"
    )
    idx, out = [], []
    for batch in loader:
        x = model_input(to_input(batch.images, img_size, env.device), model)  # NHWC for a CNN (device.py)
        with autocast(env.device, env.dtype):
            logits = model(x).squeeze(1)
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
        idx.append(batch.index)
    model.train(was_training)
    local_idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    local_p = np.concatenate(out) if out else np.zeros(0, np.float32)
    all_idx, all_p = gather_arrays([local_idx, local_p], env.info)
    order = pd.Series(np.arange(len(all_idx)), index=all_idx).loc[rows].to_numpy()
    return all_p[order].astype(np.float64)


def bce(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` against 0/1 ``labels``."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))
