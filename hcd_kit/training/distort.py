"""What a scanner or a slide does to a patch, as training augmentations: gamma, defocus blur, small rotations and
occlusion (random erasing that spares the labelled centre).

Each transform takes float (B, 3, H, W) images in [0, 1] and ``u``, the per-sample uniforms of
``augment.draw_uniforms`` (the columns named below are this module's), and is built from elementwise arithmetic,
``F.pad`` and ``grid_sample``: a sample's result is bit-identical whatever batch it is in, so a resumed or a DDP
run augments exactly as one uninterrupted process does. ``augment.augment_batch`` applies them; all are off by
default (``AugmentConfig``: ``gamma``, ``blur``, ``rotate``, ``erase``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Draw numbers (columns of ``u``) after augment.py's 0-14: a transform's draws never move another's.
GAMMA, BLUR, ANGLE = 15, 16, 17
ERASE, ERASE_AREA, ERASE_RATIO, ERASE_X, ERASE_Y = 18, 19, 20, 21, 22
N_DRAWS = 23

ERASE_AREAS = (0.02, 0.1)  # the erased rectangle's area, as a fraction of the patch
CENTRE = 1 / 3  # the labelled centre (32 of 96 px) is [-1/3, 1/3] in grid coordinates: never erased
MAX_BLUR_RADIUS = 4  # taps each side: 3 sigma of the largest blur allowed (augment.blur <= 1.5 px)


def gamma(x: torch.Tensor, u: torch.Tensor, strength: float) -> torch.Tensor:
    """``x ** g`` per sample, ``g`` log-uniform in [exp(-strength), exp(strength)] (0.2: about 0.82 to 1.22):
    the mid-tones move, black and white stay."""
    g = torch.exp(strength * (2.0 * u[:, GAMMA] - 1.0)).view(-1, 1, 1, 1)
    return x.clamp(min=0.0).pow(g)


def _blur_weights(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2 * radius + 1) normalised Gaussian taps; sigma 0 gives the identity tap exactly."""
    k = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device).view(1, -1)
    w = torch.exp(-(k**2) / (2.0 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    return w / w.sum(1, keepdim=True)


def blur(x: torch.Tensor, u: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, sigma uniform in [0, ``max_sigma``] px per sample (out-of-focus scanning), the
    border reflected. Shifted multiply-adds, not a convolution whose algorithm could depend on the batch."""
    radius = min(MAX_BLUR_RADIUS, max(1, math.ceil(3 * max_sigma)))
    w = _blur_weights(max_sigma * u[:, BLUR], radius)  # (B, K)
    height, width = x.shape[-2:]
    b = x.shape[0]
    padded = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    out = torch.zeros_like(x)
    for k in range(2 * radius + 1):  # over taps, not samples
        out.addcmul_(padded[..., k : k + width], w[:, k].view(b, 1, 1, 1).expand_as(out))
    padded = F.pad(out, (0, 0, radius, radius), mode="reflect")
    out = torch.zeros_like(x)
    for k in range(2 * radius + 1):
        out.addcmul_(padded[..., k : k + height, :], w[:, k].view(b, 1, 1, 1).expand_as(out))
    return out


def rotate(x: torch.Tensor, u: torch.Tensor, max_degrees: float) -> torch.Tensor:
    """Rotation by an angle uniform in [-``max_degrees``, ``max_degrees``] about the centre, bilinear, the corners
    filled by reflection (tissue continues; no black wedges). With the dihedral flips every angle is reached."""
    angle = math.radians(max_degrees) * (2.0 * u[:, ANGLE] - 1.0)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    height, width = x.shape[-2:]
    bx = ((torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1).view(1, 1, -1)
    by = ((torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1).view(1, -1, 1)
    grid = torch.stack([cos * bx - sin * by, sin * bx + cos * by], dim=-1)  # elementwise, as augment.random_crop
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def erase_boxes(u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each sample's rectangle (centre x, y; half width, height; in [-1, 1] grid units): area in ``ERASE_AREAS``,
    aspect in [1/3, 3], inside the patch and pushed out of the labelled centre along the axis it is furthest out
    on, so the pixels that decide the label are never hidden."""
    area = ERASE_AREAS[0] + (ERASE_AREAS[1] - ERASE_AREAS[0]) * u[:, ERASE_AREA]
    ratio = torch.exp(math.log(3.0) * (2.0 * u[:, ERASE_RATIO] - 1.0))
    side = (1 - CENTRE) / 2  # at most a third of the patch each way, so it fits beside the centre
    hw = torch.sqrt(area * ratio).clamp(max=side)  # half width in grid units (the patch is 2 wide)
    hh = torch.sqrt(area / ratio).clamp(max=side)
    cx = (1.0 - hw) * (2.0 * u[:, ERASE_X] - 1.0)
    cy = (1.0 - hh) * (2.0 * u[:, ERASE_Y] - 1.0)
    overlaps = ((cx.abs() - hw) < CENTRE) & ((cy.abs() - hh) < CENTRE)
    along_x = (cx.abs() / (1.0 - hw).clamp(min=1e-6)) >= (cy.abs() / (1.0 - hh).clamp(min=1e-6))
    out_x = torch.where(cx >= 0, 1.0, -1.0) * (CENTRE + hw)  # its inner edge on the centre's edge
    out_y = torch.where(cy >= 0, 1.0, -1.0) * (CENTRE + hh)
    cx = torch.where(overlaps & along_x, out_x, cx)
    cy = torch.where(overlaps & ~along_x, out_y, cy)
    return cx, cy, hw, hh


def erase(x: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) with probability ``p`` per sample: one rectangle (``erase_boxes``) is
    filled with the patch's own mean colour, so no new colour or edge statistic is invented."""
    cx, cy, hw, hh = erase_boxes(u)
    on = (u[:, ERASE] < p).view(-1, 1, 1)
    height, width = x.shape[-2:]
    px = ((torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1).view(1, 1, -1)
    py = ((torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1).view(1, -1, 1)
    inside = ((px - cx.view(-1, 1, 1)).abs() <= hw.view(-1, 1, 1)) & (
        (py - cy.view(-1, 1, 1)).abs() <= hh.view(-1, 1, 1)
    )
    mask = (inside & on).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(mask, x.mean((2, 3), keepdim=True), x)
