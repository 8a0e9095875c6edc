"""Backbones: every model is a timm model with one output logit (tumour vs. not).

``create_model`` is the one factory. Pretrained weights come from the Hugging Face hub (``pretrained=True``)
or, for Kaggle kernels without internet, from a local file (``weights=...``) handed to timm through
``pretrained_cfg_overlay=dict(file=...)`` so timm applies its usual head/input-channel adaptation.

    >>> m = create_model("resnet18", pretrained=False)
    >>> m(torch.zeros(2, 3, 96, 96)).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hcd_kit.choices import DEFAULT_MODEL
from hcd_kit.errors import ConfigError



def check_model_name(name: str) -> None:
    """Raise a one-line ConfigError if timm has no model called ``name``."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown model '{name}'{hint}; list them with `python -c \"import timm; print(timm.list_models())\"`")


def create_model(
    name: str = DEFAULT_MODEL,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    drop_rate: float = 0.0,
    drop_path: float = 0.0,
) -> nn.Module:
    """Build timm model ``name`` with a single-logit head.

    ``weights`` (a local ``.pth``/``.safetensors`` of the backbone's pretrained weights) implies
    ``pretrained=True`` without network access.
    """
    import timm

    check_model_name(name)
    kwargs: dict = dict(num_classes=1, drop_rate=drop_rate)
    if drop_path > 0:  # not every timm family takes it, so only passed when asked for
        kwargs["drop_path_rate"] = drop_path
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"weights file not found: {path}")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path.resolve()))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        src = f"file {weights}" if weights is not None else "the Hugging Face hub"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"could not load pretrained weights for '{name}' from {src} ({first[:200]}); "
            "pass --weights FILE for offline use, or --no-pretrained"
        ) from None


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Save a plain state_dict (tensors only, loadable with ``weights_only=True``), atomically."""
    from hcd_kit.fsutil import atomic_path

    model = getattr(model, "module", model)  # unwrap DataParallel / DDP
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)

