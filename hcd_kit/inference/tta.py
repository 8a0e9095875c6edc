"""Test-time augmentation over the dihedral group D4 (flips and 90-degree rotations), as pure functions.

Tissue patches have no canonical orientation, so all 8 dihedral views of a patch are equally valid
inputs; averaging a model's predictions over them is the cheapest AUC gain there is. The views of each patch
are stacked into the same batch (``tta_stack``), so the device sees whole forward passes; ``tta_views`` splits
the logits back per patch and ``sigmoid_mean`` averages the views' probabilities.
``fold_ensemble`` then blends the models of several folds (or runs) by mean probability or mean rank.
"""

from __future__ import annotations

import numpy as np
import torch

from hcd_kit.choices import BLEND_MODES, TTA_CHOICES, BlendMode
from hcd_kit.metrics import rank_normalise
from hcd_kit.preprocess import DIHEDRAL, dihedral

# Which dihedral views each TTA size uses. Identity always comes first, so column 0 of the merged views
# is the plain single-view prediction (predict uses that to report what TTA buys from one forward pass).
# 2: + horizontal flip; 4: + vertical flip and 180-degree rotation (the flip subgroup {e, h, v, hv});
# 8: the whole group D4.
_VIEWS = {1: (0,), 2: (0, 4), 4: (0, 4, 6, 2), 8: DIHEDRAL}


def tta_transforms(n: int) -> tuple[int, ...]:
    """Dihedral indices (for ``dihedral``) of the ``n``-view TTA, ``n`` one of ``TtaViews``; identity first."""
    if n not in _VIEWS:
        raise ValueError(f"TTA views must be one of {', '.join(map(str, TTA_CHOICES))}, got {n}")
    return _VIEWS[n]


def tta_stack(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*n, C, H, W): the ``n`` views of each sample, sample-major, in ONE batch.

    Row ``b*n + t`` is view ``t`` of sample ``b``, so ``tta_views`` can undo it with ``view(B, n)``.
    Rotations need square inputs (H == W), which patches always are.
    """
    views = tta_transforms(n)
    if n == 1:
        return x
    if any(k % 2 for k in views) and x.shape[-1] != x.shape[-2]:  # 90-degree turns swap H and W
        raise ValueError(f"rotation TTA needs square images, got {tuple(x.shape[-2:])}")
    stacked = torch.stack([dihedral(x, k) for k in views], dim=1)  # (B, n, C, H, W)
    return stacked.reshape(-1, *x.shape[1:])


def tta_views(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Per-view logits (B*n,) or (B*n, 1) from a ``tta_stack`` batch -> (B, n), view 0 = identity."""
    flat = logits.reshape(-1)
    if flat.numel() % n:
        raise ValueError(f"{flat.numel()} logits cannot be split into {n} views")
    return flat.view(-1, n)


def sigmoid_mean(views: np.ndarray) -> np.ndarray:
    """Merge (N, n) per-view logits (``tta_views``) into (N,) probabilities: the mean per-view probability,
    robust to one over-confident view (a mean of logits would let it dominate)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(views, dtype=np.float64)))).mean(axis=1)


def fold_ensemble(probs, how: BlendMode = "mean", weights=None) -> np.ndarray:
    """Blend (F, N) predictions of F models over the same N samples into (N,).

    ``how="mean"`` is the (weighted) mean probability; ``how="rank"`` the (weighted) mean of each model's
    ranks scaled to [0, 1], which ignores calibration differences between models (AUC only needs order).
    ``weights`` (F,) are normalised to sum to 1; None means equal weights.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"fold_ensemble expects a non-empty (F, N) array, got shape {p.shape}")
    w = np.full(p.shape[0], 1.0) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != p.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {p.shape[0]} non-negative weights with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    if how == "rank":
        p = np.stack([rank_normalise(row) for row in p])
    elif how != "mean":
        raise ValueError(f"ensemble must be {' or '.join(map(repr, BLEND_MODES))}, got {how!r}")
    return w @ p
