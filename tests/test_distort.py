"""Gamma, blur, small rotations and random erasing (training/distort.py): what each does to a patch, that a sample's
result never depends on its batch, and that the labelled centre is never erased."""

from __future__ import annotations

import pytest
import torch

from hcd_kit.errors import ConfigError
from hcd_kit.training import AugmentConfig, augment_batch, distort, draw_uniforms

ONLY = dict(dihedral=False, color=0.0, hue=0.0)  # every other option off: one transform at a time
SCANNER = AugmentConfig(gamma=0.3, blur=1.2, rotate=20.0, erase=0.5, stain=0.05, crop_scale=0.7)


def images(n: int = 24, size: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def rows(n: int = 24) -> torch.Tensor:
    return torch.arange(5000, 5000 + n, dtype=torch.int64)


def uniforms(n: int = 24, epoch: int = 0) -> torch.Tensor:
    return torch.from_numpy(draw_uniforms(rows(n), epoch, 0)).float()


def test_a_sample_is_distorted_the_same_in_any_batch_and_on_resume() -> None:
    x, idx = images(), rows()
    full = augment_batch(x, idx, epoch=2, seed=3, cfg=SCANNER)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    assert torch.equal(augment_batch(x[perm], idx[perm], 2, 3, SCANNER), full[perm])
    assert torch.equal(augment_batch(x[1::2], idx[1::2], 2, 3, SCANNER), full[1::2])  # one DDP rank's half
    assert torch.equal(augment_batch(x[:1], idx[:1], 2, 3, SCANNER), full[:1])  # a batch of one
    assert full.min() >= 0 and full.max() <= 1 and torch.isfinite(full).all()


def test_each_option_changes_the_patch_and_the_earlier_draws_stay_as_they_were() -> None:
    x, idx = images(), rows()
    base = AugmentConfig(crop_scale=0.7, stain=0.05)
    before = augment_batch(x, idx, 0, 0, base)
    for key, value in (("gamma", 0.3), ("blur", 1.0), ("rotate", 15.0), ("erase", 1.0)):
        alone = augment_batch(x, idx, 0, 0, AugmentConfig(**ONLY, **{key: value}))
        assert (alone - x).abs().mean() > 1e-3, key
    # the new options draw from their own streams: the crop, flips and colours of a run without them are kept
    assert torch.equal(augment_batch(x, idx, 0, 0, AugmentConfig(crop_scale=0.7, stain=0.05)), before)
    assert not AugmentConfig(**ONLY, blur=0.5).is_identity and AugmentConfig(**ONLY).is_identity


def test_gamma_keeps_black_white_and_the_order_of_grey_levels() -> None:
    ramp = torch.linspace(0, 1, 96).expand(8, 3, 96, 96).contiguous()
    out = distort.gamma(ramp, uniforms(8), 0.5)
    assert torch.equal(out[..., 0], ramp[..., 0]) and torch.allclose(out[..., -1], ramp[..., -1])
    assert (out.diff(dim=-1) >= 0).all()  # monotone
    g = torch.log(out[:, 0, 0, 48]) / torch.log(ramp[:, 0, 0, 48])  # the exponent each sample got
    assert g.min() >= torch.exp(torch.tensor(-0.5)) - 1e-4 and g.max() <= torch.exp(torch.tensor(0.5)) + 1e-4
    assert g.max() - g.min() > 0.1  # and they differ between samples


def test_blur_keeps_a_flat_patch_flat_and_smooths_noise() -> None:
    flat = torch.full((4, 3, 32, 32), 0.4)
    assert torch.allclose(distort.blur(flat, uniforms(4), 1.5), flat, atol=1e-6)
    noise = images(16, 32)
    u = uniforms(16)
    out = distort.blur(noise, u, 1.5)
    sigma = 1.5 * u[:, distort.BLUR]
    smoothed = out.std((1, 2, 3)) < noise.std((1, 2, 3)) * 0.9
    assert smoothed[sigma > 0.5].all()  # every clearly blurred sample has lost much of its pixel noise
    assert torch.allclose(out.mean((1, 2, 3)), noise.mean((1, 2, 3)), atol=0.01)  # a weighted mean of pixels


def test_small_rotations_turn_about_the_centre_and_fill_the_corners_with_tissue() -> None:
    x = torch.full((3, 3, 96, 96), 0.5)
    x[:, :, 44:52, :] = 1.0  # a horizontal bar through the centre
    u = torch.full((3, distort.N_DRAWS), 0.5)
    u[:, distort.ANGLE] = torch.tensor([0.5, 0.9, 0.1])  # 0, +24 and -24 degrees of at most 30
    out = distort.rotate(x, u, 30.0)
    assert out.min() >= 0.5 - 1e-6  # bilinear + reflection: only the input's own values, no black wedges
    assert torch.allclose(out[0], x[0], atol=1e-5)  # angle 0: the patch as it was
    assert torch.allclose(out[:, :, 46:50, 46:50], torch.ones(3, 3, 4, 4), atol=1e-4)  # the centre stays put
    ends = out[1:, 0, 47, :8].mean(1)  # a tilted bar leaves the ends of its row
    assert (ends < 0.6).all()
    assert torch.allclose(out[1], out[2].flip(-1), atol=1e-4)  # +a and -a mirror each other


def test_erasing_hides_one_rectangle_beside_the_centre_filled_with_the_patch_mean() -> None:
    x, n = images(200), 200
    u = torch.from_numpy(draw_uniforms(torch.arange(n), 0, 0)).float()
    out = distort.erase(x, u, 0.5)
    changed = (out != x).any(1)  # (B, H, W) erased pixels
    erased = changed.flatten(1).any(1)
    assert 0.35 < erased.float().mean() < 0.65  # p = 0.5 of the samples
    assert not changed[:, 32:64, 32:64].any()  # the labelled 32x32 centre is never touched
    frac = changed.flatten(1).float().mean(1)[erased]
    assert frac.min() > 0.005 and frac.max() <= 0.1 + 0.01
    for i in torch.nonzero(erased).flatten()[:20]:
        ys, xs = torch.nonzero(changed[i], as_tuple=True)
        box = torch.zeros_like(changed[i])
        box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        assert torch.equal(box, changed[i])  # one solid rectangle, inside the patch
        fill = out[i][:, ys[0], xs[0]]
        assert torch.allclose(fill, x[i].mean((1, 2)), atol=1e-6)  # the patch's own mean colour


@pytest.mark.parametrize("key, bad", [("gamma", 1.5), ("blur", 2.0), ("rotate", 90.0), ("erase", -0.1)])
def test_out_of_range_settings_are_refused_naming_the_key(key: str, bad: float) -> None:
    with pytest.raises(ConfigError, match=f"augment.{key} must be in"):
        AugmentConfig(**{key: bad})


def test_a_run_stopped_mid_epoch_with_every_distortion_resumes_to_the_same_history(tmp_path) -> None:
    """Ctrl-C (SIGTERM is the same path) in the middle of epoch 2, then --resume: every result column of
    history.csv equals the uninterrupted run's exactly; only the measured speed may differ."""
    import pandas as pd
    from test_train import fast_config, make_synthetic

    from hcd_kit.training import Hooks, train

    data = make_synthetic(tmp_path / "data", n=192, n_folds=2)
    cfg = fast_config(epochs=3, model="test_resnet", augment=SCANNER)
    steps = []
    train(cfg, data, tmp_path / "full", folds=[0], hooks=Hooks(loss=lambda step, loss: steps.append(step) or loss))
    steps_per_epoch = len(steps) // 3
    assert steps_per_epoch >= 2

    def stop(step, loss):
        if step == steps_per_epoch + 1:  # the second step of epoch 2: mid-epoch
            raise KeyboardInterrupt
        return loss

    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, tmp_path / "cut", folds=[0], hooks=Hooks(loss=stop))
    assert len(pd.read_csv(tmp_path / "cut" / "fold0" / "history.csv")) == 1  # epoch 1 kept, epoch 2 cut
    train(cfg, data, tmp_path / "cut", folds=[0], resume=True)
    columns = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "skipped_steps"]
    full, cut = (pd.read_csv(tmp_path / r / "fold0" / "history.csv")[columns] for r in ("full", "cut"))
    assert len(full) == 3
    pd.testing.assert_frame_equal(cut, full, check_exact=True)
