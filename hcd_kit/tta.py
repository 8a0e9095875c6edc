"""Test-time augmentation over the dihedral group D4 (flips and 90-degree rotations), as pure functions.

Tissue patches have no canonical orientation, so all 8 dihedral views of a patch are equally valid
inputs; averaging a model's predictions over them is the cheapest AUC gain there is. Views are stacked into
one batch so the device sees a single large forward pass, and merged with ``view(B, T).mean(1)``.
"""

from __future__ import annotations

import torch

# Index k in 0..7: rotate by 90*(k % 4) degrees, then mirror left-right when k >= 4.
DIHEDRAL = tuple(range(8))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` (0..7) to the last two (spatial) dims of ``x`` (..., H, W)."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y
