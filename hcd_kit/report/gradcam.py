"""Grad-CAM (Selvaraju et al., 2017) for hcd's one-logit models, with forward hooks: where the model looked.

The activations ``A`` (C channels on an h x w grid) of a target layer and the gradient of the explained score
with respect to them give one weight per channel (the gradient's spatial mean); the map is
``relu(sum_c w_c A_c)``, upsampled bilinearly to the patch and scaled to [0, 1]. The explained score is the
tumour logit for a patch called tumour and minus the logit for one called normal, so a false positive's map
shows the evidence for "tumour" and a false negative's the evidence for "normal".

The target layer is found by running the model once:

* a CNN: the last module to produce a 4-D (B, C, h, w) output with h, w > 1, i.e. the last convolutional
  stage before global pooling (``layer4`` of a ResNet, ``bn2`` of an EfficientNet);
* a ViT (``blocks[-1].norm1`` exists): the last block's first norm, whose patch tokens (prefix tokens
  dropped) are laid back on the patch grid (the final norm sees no gradient through patch tokens when the
  head pools the class token);
* a model whose features are channels-last (timm's ``output_fmt = "NHWC"``, e.g. Swin): the same, read as
  (B, h, w, C);
* anything else: ``UnsupportedModel``, which the report turns into a note.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hcd_kit.preprocess import to_input


class UnsupportedModel(Exception):
    """No layer Grad-CAM can use was found (the message says why)."""


def _vit_block_norm(model: nn.Module) -> tuple[nn.Module, int] | None:
    for m in model.modules():
        blocks = getattr(m, "blocks", None)
        if (
            isinstance(blocks, nn.Sequential | nn.ModuleList)
            and len(blocks)
            and hasattr(blocks[-1], "norm1")
            and hasattr(m, "patch_embed")
        ):
            return blocks[-1].norm1, int(getattr(m, "num_prefix_tokens", 1))
    return None


def _last_spatial_module(model: nn.Module, x: torch.Tensor) -> nn.Module:
    order: list[nn.Module] = []

    def hook(module, _inp, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[1:]) > 1:
            order.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise UnsupportedModel("no layer with a spatial (B, C, h, w) output larger than 1x1")
    return order[-1]


class GradCam:
    """``GradCam(model, img_size)(patch_uint8_hwc, positive)`` -> float32 map of the patch's height x width."""

    def __init__(self, model: nn.Module, img_size: int, device: torch.device | str = "cpu") -> None:
        self.model, self.img_size, self.device = model.eval(), img_size, torch.device(device)
        probe = torch.zeros(1, 3, img_size, img_size, device=self.device)
        vit = _vit_block_norm(model)
        if vit is not None:
            self.layer, self.prefix = vit
        else:
            self.layer, self.prefix = _last_spatial_module(model, probe), None
        fmts = (getattr(m, "output_fmt", None) for m in model.modules())
        self.nhwc = any(str(getattr(f, "value", f)).upper() == "NHWC" for f in fmts if f is not None)
        self.layer_name = next((n for n, m in model.named_modules() if m is self.layer), type(self.layer).__name__)

    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        """Activations or gradients as (C, h, w)."""
        if self.prefix is None:
            return t[0].permute(2, 0, 1) if self.nhwc else t[0]
        tokens = t[0, self.prefix :]  # (N, C)
        side = math.isqrt(tokens.shape[0])
        if side * side != tokens.shape[0]:
            raise UnsupportedModel(f"{tokens.shape[0]} patch tokens do not form a square grid")
        return tokens.T.reshape(tokens.shape[1], side, side)

    def __call__(self, patch: np.ndarray, positive: bool) -> np.ndarray:
        saved: dict[str, torch.Tensor] = {}

        def keep(_m, _i, out):
            out = out[0] if isinstance(out, tuple) else out
            saved["act"] = out
            out.register_hook(lambda g: saved.__setitem__("grad", g))

        handle = self.layer.register_forward_hook(keep)
        try:
            x = to_input(torch.from_numpy(np.array(patch, dtype=np.uint8))[None], self.img_size, self.device)
            with torch.enable_grad():
                x.requires_grad_(True)  # so activations carry gradients even where the weights are frozen
                self.model.zero_grad(set_to_none=True)
                logit = self.model(x).reshape(-1)[0].float()
                (logit if positive else -logit).backward()
        finally:
            handle.remove()
        if "grad" not in saved:
            raise UnsupportedModel(f"no gradient reached {self.layer_name}")
        act, grad = self._grid(saved["act"].detach().float()), self._grid(saved["grad"].float())
        cam = F.relu((grad.mean(dim=(1, 2), keepdim=True) * act).sum(dim=0))
        cam = F.interpolate(cam[None, None], size=patch.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        return cam.cpu().numpy().astype(np.float32)
