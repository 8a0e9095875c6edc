"""Batch-wise augmentation: draws are a pure function of (seed, epoch, row), results stay valid images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcd_kit.errors import ConfigError
from hcd_kit.preprocess import dihedral
from hcd_kit.training import AugmentConfig, augment_batch, draw_uniforms, stain_jitter

ALL_ON = AugmentConfig(dihedral=True, color=0.2, hue=0.05, stain=0.05, crop_scale=0.6)
ALL_OFF = AugmentConfig(dihedral=False, color=0.0, hue=0.0, stain=0.0, crop_scale=1.0)


def images(n: int = 32, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def rows(n: int = 32) -> torch.Tensor:
    return torch.arange(1000, 1000 + n, dtype=torch.int64)


def test_same_sample_same_augmentation_whatever_the_batch() -> None:
    x, idx = images(), rows()
    full = augment_batch(x, idx, epoch=3, seed=7, cfg=ALL_ON)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    shuffled = augment_batch(x[perm], idx[perm], epoch=3, seed=7, cfg=ALL_ON)
    assert torch.equal(shuffled, full[perm])
    # a DDP rank sees half of the global batch: its samples must come out the same
    half = augment_batch(x[1::2], idx[1::2].numpy(), epoch=3, seed=7, cfg=ALL_ON)
    assert torch.equal(half, full[1::2])
    assert torch.equal(augment_batch(x, idx, 3, 7, ALL_ON), full)  # a resumed run repeats it


def test_epoch_and_seed_change_the_draws() -> None:
    x, idx = images(), rows()
    base = augment_batch(x, idx, 0, 0, ALL_ON)
    for other in (augment_batch(x, idx, 1, 0, ALL_ON), augment_batch(x, idx, 0, 1, ALL_ON)):
        changed = (other - base).abs().flatten(1).amax(1) > 1e-3
        assert changed.float().mean() > 0.9


def test_every_dihedral_transform_occurs_and_nothing_else() -> None:
    x, idx = images(64, size=16), rows(64)
    out = augment_batch(x, idx, 0, 0, AugmentConfig(dihedral=True, color=0, hue=0))
    seen = []
    for i in range(len(x)):
        ks = [k for k in range(8) if torch.equal(out[i], dihedral(x[i], k))]
        assert len(ks) == 1, f"sample {i} is not exactly one dihedral view of its input"
        seen.append(ks[0])
    assert sorted(set(seen)) == list(range(8))


def test_identity_when_every_option_is_off() -> None:
    x = images()
    assert torch.equal(augment_batch(x, rows(), 5, 5, ALL_OFF), x)


@pytest.mark.parametrize("size", [96, 48])
def test_shape_dtype_and_range_kept(size: int) -> None:
    x = images(16, size)
    x[:4] = 0.0  # black and white extremes push every jitter to its bounds
    x[4:8] = 1.0
    out = augment_batch(x, rows(16), 2, 0, AugmentConfig(color=0.5, hue=0.2, stain=0.3, crop_scale=0.3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_each_option_alone_changes_the_image_moderately() -> None:
    x, idx = images(), rows()
    for cfg in (
        AugmentConfig(dihedral=False, color=0.1, hue=0.0),
        AugmentConfig(dihedral=False, color=0.0, hue=0.05),
        AugmentConfig(dihedral=False, color=0.0, hue=0.0, stain=0.05),
        AugmentConfig(dihedral=False, color=0.0, hue=0.0, crop_scale=0.5),
    ):
        diff = (augment_batch(x, idx, 0, 0, cfg) - x).abs().mean().item()
        assert 1e-3 < diff < 0.3, f"{cfg}: mean change {diff}"


def test_hue_shift_keeps_grey_grey() -> None:
    grey = torch.full((8, 3, 8, 8), 0.4)
    out = augment_batch(grey, rows(8), 0, 0, AugmentConfig(dihedral=False, color=0.0, hue=0.5))
    assert torch.allclose(out, grey, atol=1e-5)


def test_works_under_cpu_autocast() -> None:
    x, idx = images(), rows()
    plain = augment_batch(x, idx, 1, 1, ALL_ON)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = augment_batch(x, idx, 1, 1, ALL_ON)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)


def test_draws_are_uniform_and_pure() -> None:
    u = draw_uniforms(np.arange(20000), epoch=0, seed=0)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - (1 / 12) ** 0.5) < 0.01
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # streams are independent
    assert np.array_equal(draw_uniforms(torch.arange(5), 0, 0), u[:5])


def test_bad_config_and_bad_input_are_rejected() -> None:
    with pytest.raises(ConfigError, match="augment.crop_scale"):
        AugmentConfig(crop_scale=0.0)
    with pytest.raises(ConfigError, match="augment.color"):
        AugmentConfig(color=-0.1)
    with pytest.raises(ValueError, match="index has 3 rows"):
        augment_batch(images(4), rows(3), 0, 0, ALL_ON)


def test_stain_jitter_without_jitter_is_the_identity_on_real_tissue(sample_root) -> None:
    from PIL import Image

    paths = sorted((sample_root / "train").glob("*.tif"))[:16]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in paths])).permute(0, 3, 1, 2).float() / 255
    u = torch.rand(len(x), 16, generator=torch.Generator().manual_seed(0))
    same = stain_jitter(x, u, strength=0.0)  # alpha = 1, beta = 0 for every stain
    assert (same - x).abs().max() < 1e-4  # H&E round trip changes nothing, not even dark or saturated pixels
    moved = stain_jitter(x, u, strength=0.01)  # a mild jitter moves colours by a few percent
    assert 0.005 < (moved.clamp(0, 1) - x).abs().mean() < 0.1
