"""Turning packed uint8 batches into model input, on the model's device: one definition for train and predict.

Batches travel as uint8 NHWC (4x smaller than float32, so host-to-device copies stay cheap); conversion to
float, ImageNet normalisation and the optional upscale (96 -> ``img_size``) run on the device, batch-wise.
Training and prediction must agree exactly, so both call ``to_input``. The dihedral group (flips and
90-degree turns) lives here too: training augments with it and test-time augmentation averages over it, and so
does a model's own input normalisation (``set_input_normalisation``) for weights that expect another than ImageNet's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1], contiguous in channels-last memory."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(x: torch.Tensor, img_size: int) -> torch.Tensor:
    """Bilinear upscale of float NCHW to ``img_size`` (no-op when it already has that size)."""
    if x.shape[-1] == img_size and x.shape[-2] == img_size:
        return x
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=False)


def to_input(x: torch.Tensor, img_size: int = 96, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float32 NCHW at ``img_size`` on ``device`` (the model's input)."""
    if device is not None:
        x = x.to(device, non_blocking=True)
    return normalise(resize(to_float_nchw(x), img_size))


# Index k in 0..7: rotate by 90*(k % 4) degrees, then mirror left-right when k >= 4.
DIHEDRAL = tuple(range(8))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` (0..7) to the last two (spatial) dims of ``x`` (..., H, W)."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


class _Renormalise:
    """Forward pre-hook: ImageNet-normalised input -> the weights' own normalisation, one affine map."""

    def __init__(self, mean, std) -> None:
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.scale = [s0 / s for s0, s in zip(IMAGENET_STD, self.std)]
        self.shift = [(m0 - m) / s for m0, m, s in zip(IMAGENET_MEAN, self.mean, self.std)]
        self._on: dict = {}  # (device, dtype) -> (scale, shift) tensors: built once, not every forward

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        key = (x.device, x.dtype)
        if key not in self._on:
            self._on[key] = tuple(
                torch.tensor(v, device=x.device, dtype=x.dtype).view(1, -1, 1, 1) for v in (self.scale, self.shift)
            )
        scale, shift = self._on[key]
        return (x * scale + shift, *args[1:])


def set_input_normalisation(model: torch.nn.Module, mean, std) -> None:
    """Make ``model`` take hcd's ImageNet-normalised input although its weights expect ``mean``/``std``.

    A forward pre-hook (state_dict unchanged, kept by DataParallel, DDP, deep copies and LoRA wrappers);
    nothing is added when ``mean``/``std`` are ImageNet's. ``input_normalisation(model)`` reads it back.
    """
    if all(abs(a - b) < 1e-6 for a, b in zip((*mean, *std), (*IMAGENET_MEAN, *IMAGENET_STD))):
        return
    model.register_forward_pre_hook(_Renormalise(mean, std))


def input_normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) ``model``'s weights see: its re-normalisation hook's, else ImageNet's."""
    model = getattr(model, "module", model)
    for hook in model._forward_pre_hooks.values():
        if isinstance(hook, _Renormalise):
            return hook.mean, hook.std
    return IMAGENET_MEAN, IMAGENET_STD
