"""Training augmentation, batch-wise on the model's device, with draws that depend only on (seed, epoch, row).

``augment_batch(x, index, epoch, seed, cfg)`` takes a float (B, 3, H, W) batch in [0, 1] and applies, per
sample: a random resized crop (an affine sampling grid + ``grid_sample``, at the input size), a small rotation,
one of the 8 dihedral transforms (patches have no canonical orientation), H&E stain jitter in HED space (Ruifrok &
Johnston's stain matrix; Tellez et al. 2018), brightness / contrast / saturation and hue jitter, then gamma, blur
and random erasing (``distort.py``; off by default). Every random
number comes from a counter-based hash (splitmix64) of ``(seed, epoch, store row, draw number)``, not from a
generator's state, so a patch is augmented identically whichever batch, rank or resumed run it lands in:
two DDP processes see exactly what one process sees. There is no Python loop over samples: the dihedral
transforms are one gather through a table of 8 pixel permutations, the colour jitters one fused affine map.

    x = to_float_nchw(batch.images.to(device))                      # (B, 3, 96, 96) in [0, 1]
    x = augment_batch(x, torch.from_numpy(batch.index), epoch, seed, AugmentConfig())
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hcd_kit.preprocess import dihedral
from hcd_kit.training import distort
from hcd_kit.training.config import AugmentConfig

# Draw numbers: each random quantity of a sample has its own hash stream, so turning one option off never
# changes the draws of the others (a run with stain jitter keeps the crops of a run without it).
_DIHEDRAL, _BRIGHT, _CONTRAST, _SAT, _HUE = 0, 1, 2, 3, 4
_ALPHA = (5, 6, 7)  # per-stain multiplicative jitter (H, E, D)
_BETA = (8, 9, 10)  # per-stain additive jitter
_SCALE, _RATIO, _CX, _CY = 11, 12, 13, 14
_N_DRAWS = distort.N_DRAWS  # 15-22: distort.py's (gamma, blur, rotation, erasing)

# Ruifrok & Johnston (2001) optical densities of haematoxylin, eosin and DAB (rows), as in skimage.color.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_LOG_EPS = math.log(1e-6)  # skimage's floor for RGB before taking the log; also its OD scale
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as torchvision's grayscale

# Hue rotation by angle a in YIQ space is inv(YIQ) @ R(a) @ YIQ = P0 + cos(a) P1 + sin(a) P2 (R rotates I, Q).
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)
_HUE_P0 = np.outer(_YIQ_INV[:, 0], _YIQ[0])
_HUE_P1 = np.outer(_YIQ_INV[:, 1], _YIQ[1]) + np.outer(_YIQ_INV[:, 2], _YIQ[2])
_HUE_P2 = np.outer(_YIQ_INV[:, 2], _YIQ[1]) - np.outer(_YIQ_INV[:, 1], _YIQ[2])


# ---------------------------------------------------------------------------------------------- draws


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (wrapping arithmetic is well defined for numpy uint64)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def draw_uniforms(index, epoch: int, seed: int, n_draws: int = _N_DRAWS) -> np.ndarray:
    """Uniforms in [0, 1), float64 (B, n_draws): a pure function of (seed, epoch, index[b], draw).

    Computed on the CPU from the (small) index vector, so no device sync is needed when ``index`` is a CPU
    tensor or an array; the caller moves the few numbers to the device.
    """
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    rows = np.asarray(index, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    key = _splitmix64(key ^ np.uint64(epoch & 0xFFFFFFFFFFFFFFFF))
    h = _splitmix64(_splitmix64(key ^ rows) ^ np.arange(n_draws, dtype=np.uint64).reshape(1, -1))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# ------------------------------------------------------------------------------------------ transforms


def _sym(u: torch.Tensor, strength: float) -> torch.Tensor:
    """Map uniforms in [0, 1) to factors in [1 - strength, 1 + strength)."""
    return 1.0 + strength * (2.0 * u - 1.0)


def _const(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(a, dtype=like.dtype, device=like.device)


def _mix(x: torch.Tensor, m: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample affine channel map ``out[:, i] = sum_j m[:, i, j] * x[:, j] + offset[:, i]``.

    Fused multiply-adds rather than a batched matmul so a sample's result is bit-identical whatever else is
    in the batch (a BLAS kernel may pick its blocking by batch size); still one pass per output channel.
    """
    b = x.shape[0]
    xr = x.reshape(b, 3, -1)
    out = torch.empty_like(xr)
    for i in range(3):  # over channels, not samples
        o = out[:, i]
        torch.mul(xr[:, 0], m[:, i, 0, None], out=o)
        o.addcmul_(xr[:, 1], m[:, i, 1, None].expand_as(o))
        o.addcmul_(xr[:, 2], m[:, i, 2, None].expand_as(o))
        if offset is not None:
            o.add_(offset[:, i, None])
    return out.view_as(x)


def random_crop(x: torch.Tensor, u: torch.Tensor, min_scale: float) -> torch.Tensor:
    """Random resized crop back to the input size: area fraction in [min_scale, 1], aspect in [3/4, 4/3]."""
    area = min_scale + (1.0 - min_scale) * u[:, _SCALE]
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, _RATIO]
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop side as a fraction of the image side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * (2.0 * u[:, _CX] - 1.0)  # centre in [-1, 1] coords, crop kept inside the image
    cy = (1.0 - h) * (2.0 * u[:, _CY] - 1.0)
    # The grid is built elementwise (what affine_grid does with a diagonal theta) so each sample's result
    # does not depend on the batch it is in. Pixel centres in [-1, 1], as align_corners=False.
    height, width = x.shape[-2:]
    bx = (torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1
    by = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1
    gx = (w.view(-1, 1, 1) * bx.view(1, 1, -1) + cx.view(-1, 1, 1)).expand(-1, height, width)
    gy = (h.view(-1, 1, 1) * by.view(1, -1, 1) + cy.view(-1, 1, 1)).expand(-1, height, width)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


_PERMS: dict[tuple, torch.Tensor] = {}


def _dihedral_perms(size: int, device: torch.device) -> torch.Tensor:
    """(8, size*size) source pixel of each output pixel under each transform of ``tta.dihedral``."""
    key = (size, str(device))
    if key not in _PERMS:
        grid = torch.arange(size * size, device=device).view(1, size, size)
        _PERMS[key] = torch.stack([dihedral(grid, k).reshape(-1) for k in range(8)])
    return _PERMS[key]


def random_dihedral(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Apply dihedral transform ``ks[b]`` (0..7, as ``hcd_kit.inference.tta.dihedral``) to sample ``b``: one gather."""
    b, c, height, width = x.shape
    if height != width:
        raise ValueError(f"dihedral augmentation needs square images, got {height}x{width}")
    src = _dihedral_perms(height, x.device)[ks.to(x.device)]  # (B, H*W)
    return torch.gather(x.reshape(b, c, -1), 2, src.unsqueeze(1).expand(b, c, -1)).view_as(x)


def stain_jitter(x: torch.Tensor, u: torch.Tensor, strength: float) -> torch.Tensor:
    """HED jitter (Tellez et al. 2018): RGB -> stain concentrations, ``s * alpha + beta`` per stain -> RGB.

    alpha ~ U(1 - strength, 1 + strength) and beta ~ U(-strength, strength), per stain and sample, in the
    scaled optical-density units of ``skimage.color.rgb2hed``.
    """
    b = x.shape[0]
    od = torch.log(x.clamp(min=1e-6)) * (1.0 / _LOG_EPS)
    # no clamping of negative concentrations: with alpha = 1 and beta = 0 the round trip is then exactly the
    # identity, so the jitter only ever changes what its draws say
    stains = _mix(od, _const(_HED_FROM_RGB.T, x).expand(b, 3, 3))
    alpha = _sym(u[:, list(_ALPHA)], strength)  # (B, 3)
    beta = strength * (2.0 * u[:, list(_BETA)] - 1.0)
    rgb_from_hed = _const(_RGB_FROM_HED.T, x)  # (out rgb, in stain)
    m = rgb_from_hed * alpha.view(b, 1, 3) * _LOG_EPS  # back to RGB log space, jitter folded in
    offset = (beta.view(b, 1, 3) * rgb_from_hed).sum(-1) * _LOG_EPS
    return torch.exp(_mix(stains, m, offset))


def color_matrix(x: torch.Tensor, u: torch.Tensor, color: float, hue: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast, saturation and hue jitter folded into one per-sample affine map (B,3,3), (B,3).

    brightness ``b``: x -> b x;  contrast ``c``: x -> c x + (1 - c) mean(gray(x));  saturation ``s``:
    x -> s x + (1 - s) gray(x);  hue: a rotation of chroma in YIQ space by up to ``hue`` of a full turn.
    The factors are uniform in [1 - color, 1 + color]; all maps are linear, so they compose exactly.
    """
    b = x.shape[0]
    eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(b, 3, 3)
    luma = _const(np.array(_LUMA), x)
    bright, contrast, sat = (_sym(u[:, k], color).view(b, 1, 1) for k in (_BRIGHT, _CONTRAST, _SAT))
    if color == 0:
        bright = contrast = sat = torch.ones_like(u[:, :1]).view(b, 1, 1)
    m = sat * eye + (1 - sat) * luma.view(1, 1, 3)  # saturation: (B, 3, 3)
    if hue > 0:
        angle = (2.0 * math.pi * hue * (2.0 * u[:, _HUE] - 1.0)).view(b, 1, 1)
        rot = _const(_HUE_P0, x) + torch.cos(angle) * _const(_HUE_P1, x) + torch.sin(angle) * _const(_HUE_P2, x)
        m = (rot.unsqueeze(-1) * m.unsqueeze(1)).sum(2)  # rot @ m on (B, 3, 3), elementwise as in _mix
    mean_gray = (x.mean((2, 3)) * luma).sum(1).view(b, 1, 1)  # before brightness; scaled below
    offset = ((1 - contrast) * bright * mean_gray * m.sum(-1, keepdim=True)).view(b, 3)
    return m * (contrast * bright), offset


def augment_batch(
    x: torch.Tensor, index: torch.Tensor | np.ndarray, epoch: int, seed: int, cfg: AugmentConfig
) -> torch.Tensor:
    """Augment float (B, 3, H, W) images in [0, 1]; ``index`` holds each sample's store row (int64, (B,)).

    Runs in float32 with autocast disabled (a colour transform in bfloat16 would quantise the image far
    beyond the jitter it adds) and returns ``x``'s dtype, clamped to [0, 1]. Pass ``index`` as a CPU tensor
    or array: the draws are hashed on the CPU, so the device is never synchronised.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"augment_batch expects (B, 3, H, W) images, got {tuple(x.shape)}")
    if len(index) != x.shape[0]:
        raise ValueError(f"index has {len(index)} rows but the batch has {x.shape[0]} images")
    if cfg.is_identity or x.shape[0] == 0:
        return x
    u_np = draw_uniforms(index, epoch, seed)
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        y = x.float()
        u = torch.from_numpy(u_np).to(device=y.device, dtype=torch.float32, non_blocking=True)
        if cfg.crop_scale < 1.0:
            y = random_crop(y, u, cfg.crop_scale)
        if cfg.rotate > 0:
            y = distort.rotate(y, u, cfg.rotate)
        if cfg.dihedral:
            y = random_dihedral(y, torch.from_numpy(np.minimum(u_np[:, _DIHEDRAL] * 8, 7).astype(np.int64)))
        if cfg.stain > 0:
            y = stain_jitter(y, u, cfg.stain)
        if cfg.color > 0 or cfg.hue > 0:
            y = _mix(y, *color_matrix(y, u, cfg.color, cfg.hue))
        if cfg.gamma > 0:
            y = distort.gamma(y.clamp_(0.0, 1.0), u, cfg.gamma)
        if cfg.blur > 0:
            y = distort.blur(y, u, cfg.blur)
        if cfg.erase > 0:
            y = distort.erase(y, u, cfg.erase)
        return y.clamp_(0.0, 1.0).to(dtype)


def mixup(
    x: torch.Tensor, y: torch.Tensor, index, epoch: int, seed: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): blend each sample with its neighbour in the batch (``roll`` by one),
    images and targets alike, with a per-sample weight ``max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``.

    The weights come from a generator keyed on (seed, epoch, the batch's store rows), so a resumed run
    mixes the same way; the larger weight stays with the sample itself, so its own label dominates.
    """
    if alpha <= 0 or x.shape[0] < 2:
        return x, y
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    key = [seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, *(np.asarray(index, dtype=np.int64)[:4] & 0xFFFFFFFF).tolist()]
    lam = np.random.default_rng(key).beta(alpha, alpha, size=x.shape[0])
    lam_t = torch.from_numpy(np.maximum(lam, 1.0 - lam)).to(device=x.device, dtype=torch.float32, non_blocking=True)
    w = lam_t.view(-1, 1, 1, 1).to(x.dtype)
    x = w * x + (1 - w) * x.roll(1, 0)
    y = lam_t * y.float() + (1 - lam_t) * y.float().roll(1, 0)
    return x, y
