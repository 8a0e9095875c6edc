"""TTA and fold blending as pure functions: the dihedral group, view stacking/merging, mean and rank blends."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from hcd_kit.choices import TtaViews
from hcd_kit.inference import fold_ensemble, sigmoid_mean, tta_stack, tta_transforms, tta_views
from hcd_kit.metrics import roc_auc
from hcd_kit.preprocess import dihedral


def tta_probs(logits: torch.Tensor, n: int) -> np.ndarray:
    """What predict does with a ``tta_stack`` batch's logits: split per sample, mean per-view probability."""
    return sigmoid_mean(tta_views(logits, n).numpy())


def _asym(b: int = 1, c: int = 2, s: int = 5) -> torch.Tensor:
    """An image with no symmetry at all: every pixel value distinct."""
    return torch.arange(b * c * s * s, dtype=torch.float32).view(b, c, s, s)


def _which(y: torch.Tensor, x: torch.Tensor) -> int:
    """The dihedral index k with dihedral(x, k) == y."""
    hits = [k for k in range(8) if torch.equal(dihedral(x, k), y)]
    assert len(hits) == 1
    return hits[0]


def test_eight_distinct_views_of_an_asymmetric_image():
    x = _asym()
    views = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(views) == 8


def test_every_view_has_an_inverse_and_the_group_is_closed():
    x = _asym()
    for a in range(8):
        inv = [b for b in range(8) if torch.equal(dihedral(dihedral(x, a), b), x)]
        assert len(inv) == 1
        for b in range(8):
            _which(dihedral(dihedral(x, a), b), x)  # composition is again one of the 8


def test_tta_transform_sets():
    x = _asym()
    assert tta_transforms(1) == (0,)
    assert [torch.equal(dihedral(x, k), y) for k, y in zip(tta_transforms(2), [x, x.flip(-1)])] == [True, True]
    four = {tuple(dihedral(x, k).flatten().tolist()) for k in tta_transforms(4)}
    expected = {tuple(v.flatten().tolist()) for v in (x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2))}
    assert four == expected
    assert sorted(tta_transforms(8)) == list(range(8))
    for n in get_args(TtaViews):
        assert tta_transforms(n)[0] == 0  # identity first: column 0 is the single-view prediction
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        tta_transforms(3)


def test_stack_is_sample_major_and_merge_undoes_it():
    x = _asym(b=3)
    st = tta_stack(x, 8)
    assert st.shape == (24, 2, 5, 5)
    for b in range(3):
        for t, k in enumerate(tta_transforms(8)):
            assert torch.equal(st[b * 8 + t], dihedral(x[b], k))
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0, 3.0, 3.0, 3.0, 3.0])  # 2 samples x 4 views
    merged = tta_probs(logits.view(-1, 1), 4)
    assert merged.shape == (2,)
    assert np.allclose(merged, torch.sigmoid(logits).view(2, 4).mean(1).numpy())
    assert torch.equal(tta_views(logits, 4)[:, 0], logits[[0, 4]])
    with pytest.raises(ValueError, match="cannot be split into 4 views"):
        tta_views(logits[:6], 4)


def test_tta_of_a_d4_invariant_model_equals_the_single_view():
    torch.manual_seed(0)
    # 1x1 convolutions + global average pooling commute with every flip and rotation.
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        single = torch.sigmoid(model(x)).view(-1)
        for n in (2, 4, 8):
            assert np.allclose(tta_probs(model(tta_stack(x, n)), n), single.numpy(), atol=1e-6)
        # ...and a model that is NOT invariant gives different answers, so the check above can fail.
        conv = nn.Sequential(nn.Conv2d(3, 1, 5), nn.Flatten(), nn.Linear(144, 1))
        assert not np.allclose(tta_probs(conv(tta_stack(x, 8)), 8), torch.sigmoid(conv(x)).view(-1).numpy())


def test_fold_ensemble_mean_rank_and_weights():
    p = np.array([[0.1, 0.2, 0.9, 0.4], [0.3, 0.1, 0.5, 0.8]])
    assert np.allclose(fold_ensemble(p), p.mean(0))
    ranks = np.array([[0, 1, 3, 2], [1, 0, 2, 3]]) / 3.0
    assert np.allclose(fold_ensemble(p, "rank"), ranks.mean(0))
    assert np.allclose(fold_ensemble(p, "mean", [3, 1]), 0.75 * p[0] + 0.25 * p[1])
    # rank blending ignores calibration: squashing one model's scores changes nothing
    q = p.copy()
    q[1] = q[1] ** 4
    assert np.allclose(fold_ensemble(q, "rank"), fold_ensemble(p, "rank"))
    assert not np.allclose(fold_ensemble(q, "mean"), fold_ensemble(p, "mean"))
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, fold_ensemble(p, "rank")) == 1.0
    with pytest.raises(ValueError, match="weights"):
        fold_ensemble(p, "mean", [1.0])
    with pytest.raises(ValueError, match="mean' or 'rank"):
        fold_ensemble(p, "median")
