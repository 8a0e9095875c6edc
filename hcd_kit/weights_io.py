"""Weights as a folder timm loads offline (``local-dir:FOLDER``): the one writer and reader.

``hcd weights export`` (``inference/export.py``), ``hcd weights push`` (``kaggle/weights.py``) and
``--model local-dir:FOLDER`` (``backbones/registry.py``) all go through here:

    model.safetensors   the model's state dict (``save_local_dir``; ``read_state_dict`` reads it, or a ``.pth``)
    config.json         timm's config (``save_config_for_hf``), with hcd's additions when asked for: the
                        ``model_args`` that rebuild the architecture, the input size and normalisation the
                        weights expect, and a top-level ``"hcd"`` block (``read_config`` reads it back)
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from hcd_kit.damage import damaged, first_line, load_torch
from hcd_kit.errors import ConfigError
from hcd_kit.fsutil import atomic_path, atomic_write_json

WEIGHTS_FILE = "model.safetensors"  # every weights folder (export, weights dataset) holds its weights under this name
CONFIG_FILE = "config.json"


def save_local_dir(
    model,
    folder: str | os.PathLike[str],
    *,
    img_size: int | None = None,
    model_kwargs: dict | None = None,
    hcd: dict | None = None,
    licence: str | None = None,
) -> list[str]:
    """Write ``model``'s state dict (``model.safetensors``) and timm's ``config.json`` into ``folder``.

    Without ``hcd``, config.json is timm's own (a timm model as published). With it, ``model_kwargs`` (JSON
    values) are recorded as timm ``model_args`` so the architecture rebuilds as it was; ``pretrained_cfg``
    says the input size (3, img_size, img_size) and the (mean, std) the weights expect (``input_normalisation``:
    hcd feeds ImageNet-normalised input and re-normalises where the weights want otherwise); ``hcd`` becomes
    the config's top-level ``"hcd"`` block that ``resolve("local-dir:...")`` reads. Returns the names written.
    """
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    from hcd_kit.preprocess import input_normalisation

    folder = Path(folder)
    net = getattr(model, "module", model)
    model_kwargs = dict(model_kwargs or {})
    # contiguous copies: safetensors refuses tensors that share memory (tied weights)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        try:
            save_config_for_hf(net, str(tmp), model_args=model_kwargs)
        except ValueError as exc:  # a constructor argument timm cannot write and hcd has no name for
            raise ConfigError(f"cannot write timm's config.json for this model ({exc})") from None
        cfg = json.loads(tmp.read_text(encoding="utf-8"))
    if hcd is None:
        return [WEIGHTS_FILE, CONFIG_FILE]
    mean, std = input_normalisation(net)
    # older timm writes model_args as given, newer records every constructor argument: ours win either way
    cfg["model_args"] = {**(cfg.get("model_args") or {}), **model_kwargs}
    pretrained = cfg.setdefault("pretrained_cfg", {})
    if img_size is not None:
        pretrained["input_size"] = [3, int(img_size), int(img_size)]
    pretrained.update(mean=list(mean), std=list(std), num_classes=cfg.get("num_classes", pretrained.get("num_classes")))
    if licence:
        pretrained["license"] = licence  # the architecture's default cfg names ImageNet weights' licence
    cfg["hcd"] = hcd
    atomic_write_json(folder / CONFIG_FILE, cfg)
    return [WEIGHTS_FILE, CONFIG_FILE]


@functools.cache
def read_config(folder: Path) -> dict:
    """``folder``'s config.json (cached), or a one-line ConfigError saying what a weights folder holds."""
    path = folder / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"local-dir:{folder}: no {CONFIG_FILE} there; the folder must hold timm's {CONFIG_FILE} "
            "and the weights (as `hcd weights export` or `hcd weights push` write them)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc})") from None


def read_state_dict(path: str | os.PathLike[str]) -> dict:
    """The tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` state dict (``weights_only``); a damaged
    or foreign file is a one-line DataError (``damage.damaged``), whatever its reader raised."""
    path = Path(path)
    fix = "pass a state dict written by torch.save or safetensors (timm's or `hcd weights export`'s)"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own kinds for a damaged file
            raise damaged(path, first_line(exc), fix) from None
    state = load_torch(path, fix)
    if not isinstance(state, dict):
        raise damaged(path, f"a {type(state).__name__}, not a state dict", fix)
    return dict(state)
