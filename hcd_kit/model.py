"""Backbones: every model is a timm model with one output logit (tumour vs. not), or its pooled features.

``create_model`` is the one factory. Pretrained weights come from the Hugging Face hub (``pretrained=True``)
or, for Kaggle kernels without internet, from a local file (``weights=...``) handed to timm through
``pretrained_cfg_overlay=dict(file=...)`` so timm applies its usual head/input-channel adaptation.

    >>> m = create_model("resnet18", pretrained=False)
    >>> m(torch.zeros(2, 3, 96, 96)).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hcd_kit.choices import DEFAULT_MODEL
from hcd_kit.errors import ConfigError
from hcd_kit.preprocess import IMAGENET_MEAN, IMAGENET_STD, input_normalisation, set_input_normalisation  # noqa: F401


def check_model_name(name: str) -> None:
    """Raise a one-line ConfigError unless ``name`` is something ``create_model`` can build (see ``resolve``)."""
    import timm

    from hcd_kit.backbones import resolve

    backbone = resolve(name)
    if backbone.kind != "timm":
        return
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown model '{name}'{hint}; `hcd models` lists the pathology foundation models, "
            '`python -c "import timm; print(timm.list_models())"` timm\'s'
        )


def create_model(
    name: str = DEFAULT_MODEL,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    drop_rate: float = 0.0,
    drop_path: float = 0.0,
    num_classes: int = 1,
    img_size: int | None = None,
) -> nn.Module:
    """Build ``name`` (a timm name, a registry name, ``hf-hub:ORG/NAME`` or ``local-dir:FOLDER``) with
    ``num_classes`` outputs (1: hcd's tumour logit; 0: the pooled features, for ``hcd embed``).

    ``weights`` (a local ``.pth``/``.safetensors`` of the backbone's pretrained weights) implies
    ``pretrained=True`` without network access. Registry models are built offline from their architecture
    when no hub weights are wanted; a model whose weights expect another normalisation than ImageNet's gets
    it as its first operation (``input_normalisation``), so every caller feeds the same input. ``img_size``
    (the pixels it will be fed) is passed on to architectures built for one input size (ViT, Swin), whose
    position embeddings timm then resamples; other architectures take any size and ignore it.
    """
    import timm

    from hcd_kit.backbones import resolve
    from hcd_kit.backbones.hub import hub_error

    check_model_name(name)
    backbone = resolve(name)
    kwargs: dict = dict(backbone.kwargs, num_classes=num_classes, drop_rate=drop_rate)
    if drop_path > 0:  # not every timm family takes it, so only passed when asked for
        kwargs["drop_path_rate"] = drop_path
    if img_size is not None and _fixed_input_size(backbone):
        kwargs["img_size"] = img_size
    source, hub_id = weights_source(name, pretrained, weights)
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(Path(weights).resolve()))
        pretrained = True
    try:
        model = timm.create_model(source, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        mapped = (
            hub_error(backbone.label, hub_id, exc, bool(backbone.entry and backbone.entry.gated)) if hub_id else None
        )
        if mapped is not None:
            raise mapped from None
        if not pretrained:
            raise
        src = f"file {weights}" if weights is not None else (backbone.folder or "the Hugging Face hub")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"could not load pretrained weights for '{name}' from {src} ({first[:200]}); "
            "pass --weights FILE for offline use, or --no-pretrained"
        ) from None
    if backbone.renormalise:
        entry = backbone.entry
        if entry is not None:  # the registry decides (ImageNet's when it names none), however the model was built:
            mean, std = entry.mean or IMAGENET_MEAN, entry.std or IMAGENET_STD  # a bare architecture's cfg is not it
        else:  # a hub or local-dir model: its own config.json
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        set_input_normalisation(model, mean, std)
    return model


def create_published(name: str, file: str | os.PathLike[str] | None = None) -> nn.Module:
    """timm model ``name`` as published (its own head) with its pretrained weights, from the hub or from ``file``
    (its state dict); ``hcd weights push`` saves it. timm's own errors pass through for the caller to word."""
    import timm

    kwargs = {} if file is None else {"pretrained_cfg_overlay": dict(file=str(Path(file).resolve()))}
    return timm.create_model(name, pretrained=True, **kwargs)


def weights_source(
    name: str, pretrained: bool, weights: str | os.PathLike[str] | None = None
) -> tuple[str, str | None]:
    """What timm builds ``name`` from, and the hub repository its weights come from (None: not the hub).

    Checked without building anything, so training can call it before it writes a run folder: a missing
    ``weights`` file, or hub weights that cannot be had (offline and not cached), is a one-line ConfigError.
    """
    from hcd_kit.backbones import resolve
    from hcd_kit.backbones.hub import WEIGHT_FILES, ensure_hub_files

    backbone = resolve(name)
    if weights is not None:
        if not Path(weights).is_file():
            raise ConfigError(f"weights file not found: {weights}")
        if backbone.kind == "hf-hub":
            if backbone.entry is None:
                raise ConfigError(f"--weights with {name}: name the architecture instead (a timm or registry name)")
            return backbone.entry.architecture, None
        return backbone.name, None
    if not pretrained and backbone.kind == "hf-hub" and backbone.entry is not None:
        return backbone.entry.architecture, None  # the registry builds it offline (a run rebuilt to predict)
    if backbone.hub_id is not None and (pretrained or backbone.kind == "hf-hub"):
        gated = bool(backbone.entry and backbone.entry.gated)
        needs = (("config.json",), WEIGHT_FILES) if pretrained else (("config.json",),)
        ensure_hub_files(backbone.hub_id, needs, backbone.label, gated)
        return f"hf-hub:{backbone.hub_id}", backbone.hub_id  # timm reads the repository's config.json first
    if pretrained and backbone.kind == "timm":
        hub_id = _timm_hub_id(name)
        if hub_id is not None:
            ensure_hub_files(hub_id, (WEIGHT_FILES,), name)
        return backbone.name, hub_id
    return backbone.name, None


def _fixed_input_size(backbone) -> bool:
    """True for an architecture that only takes the input size it was built for (a ViT without
    ``dynamic_img_size``, a Swin); False for CNNs, and for hub and local-dir models (their config.json decides)."""
    import timm

    if backbone.kind not in ("timm", "registry") or backbone.kwargs.get("dynamic_img_size"):
        return False
    try:
        cfg = timm.models.get_pretrained_cfg(backbone.name)
    except RuntimeError:
        return False
    return bool(getattr(cfg, "fixed_input_size", False))


def _timm_hub_id(name: str) -> str | None:
    """The hub repository timm takes ``name``'s pretrained weights from (None: a URL, or none at all)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        return None
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub or None


@dataclass(frozen=True)
class ModelSize:
    """What a model's state dict holds: ``params`` parameter elements in ``param_bytes``, and its buffers
    (BatchNorm statistics, ...) in ``buffer_bytes``; ``state_bytes`` is what ``save_weights`` writes (give or take
    the file's few kB of names)."""

    params: int
    param_bytes: int
    buffer_bytes: int

    @property
    def state_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes


@functools.lru_cache(maxsize=32)
def model_size(name: str, img_size: int | None = None) -> ModelSize | None:
    """The size of ``name`` as ``create_model`` builds it for training (one output), counted on the meta device:
    nothing is downloaded and no memory is allocated, so a ViT-L takes a second and a ViT-g no more. None when it
    cannot be sized offline: an ``hf-hub:`` model outside the registry (its architecture is in the hub's
    config.json), a ``local-dir:`` folder that is not here, or a name timm does not know."""
    from hcd_kit.backbones import resolve

    try:
        backbone = resolve(name)
        if backbone.kind == "hf-hub" and backbone.entry is None:
            return None
        with torch.device("meta"):
            model = create_model(name, pretrained=False, img_size=img_size)
    except (ConfigError, OSError, RuntimeError, ValueError, KeyError, TypeError, ImportError):
        return None
    params = list(model.parameters())
    return ModelSize(
        sum(p.numel() for p in params),
        sum(p.numel() * p.element_size() for p in params),
        sum(b.numel() * b.element_size() for b in model.buffers()),
    )


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Save a plain state_dict (tensors only, loadable with ``weights_only=True``), atomically.

    A LoRA-adapted model (``--lora``, a peft wrapper) is saved merged: the adapters folded into the base
    weights of a CPU copy, so the file is the plain timm state dict ``create_model`` + ``load_state_dict`` read.
    """
    from hcd_kit.fsutil import atomic_path, payload_bytes

    model = getattr(model, "module", model)  # unwrap DataParallel / DDP
    if hasattr(model, "peft_config"):  # peft.PeftModel
        model = _merged_copy(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, size=payload_bytes(state)) as tmp:
        torch.save(state, tmp)


def _merged_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of a peft-wrapped model with its adapters merged and the wrappers removed (the model trains on)."""
    import copy

    memo: dict = {}  # every tensor copied straight to the CPU: no second copy of a large model on the GPU
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach().to("cpu", copy=True)
    return copy.deepcopy(model, memo).merge_and_unload()
