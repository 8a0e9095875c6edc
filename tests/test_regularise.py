"""The regularisers the recipes can turn on: mixup, label smoothing and stochastic depth (drop path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hcd_kit.errors import ConfigError
from hcd_kit.model import create_model
from hcd_kit.training import TrainConfig, mixup
from hcd_kit.training.step import SmoothedBCE


def _batch(n=16):
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 2, n).astype(np.float32))
    x = y.view(-1, 1, 1, 1).expand(n, 3, 8, 8).clone()  # each image is filled with its own label
    return x, y, np.arange(100, 100 + n)


def test_mixup_blends_images_and_labels_alike_and_repeats():
    x, y, index = _batch()
    xm, ym = mixup(x, y, index, epoch=3, seed=7, alpha=0.4)
    # an image filled with its label, mixed, is filled with its mixed label: images and targets got the same weights
    assert torch.allclose(xm.mean(dim=(1, 2, 3)), ym, atol=1e-6)
    assert not torch.equal(ym, y)  # something was mixed
    # each sample keeps at least half of itself, so its own label dominates
    lam = torch.where(y != y.roll(1, 0), (ym - y.roll(1, 0)) / (y - y.roll(1, 0)), torch.ones_like(y))
    assert bool((lam >= 0.5 - 1e-6).all())
    again = mixup(x, y, index, epoch=3, seed=7, alpha=0.4)
    assert torch.equal(again[0], xm) and torch.equal(again[1], ym)  # keyed on (seed, epoch, rows): a resume repeats it
    other = mixup(x, y, index, epoch=4, seed=7, alpha=0.4)
    assert not torch.equal(other[1], ym)
    assert mixup(x, y, index, 3, 7, alpha=0.0)[0] is x


def test_label_smoothing_moves_the_optimum_off_the_extremes():
    eps = 0.1
    loss = SmoothedBCE(eps)
    target = torch.ones(1)
    best = math.log((1 - eps / 2) / (eps / 2))  # sigmoid(best) = 1 - eps/2
    logit = torch.tensor([best], requires_grad=True)
    loss(logit, target).backward()
    assert abs(float(logit.grad)) < 1e-6  # the smoothed loss is minimal at p = 1 - eps/2, not at p = 1
    assert float(SmoothedBCE(0.0)(torch.tensor([best]), target)) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([best]), target))
    )


def test_drop_path_reaches_the_model():
    torch.manual_seed(0)
    model = create_model("resnet10t", pretrained=False, drop_path=0.2)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    x = torch.rand(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    assert not any(type(m).__name__ == "DropPath" for m in create_model("resnet10t", pretrained=False).modules())


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("label_smoothing", 0.5, "--label-smoothing must be in [0, 0.5)"),
        ("mixup", -1.0, "--mixup must be >= 0"),
        ("drop_path", 1.0, "--drop-path must be in [0, 1)"),
    ],
)
def test_bad_values_name_the_flag(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        TrainConfig(**{key: value})
