"""Pretrained timm weights as a private Kaggle dataset, for kernels that have no internet.

``build_weights_dataset`` creates timm model MODEL with ``pretrained=True`` (from the Hugging Face hub, or
from a local file), and writes its pretrained state, head included, into a flat folder timm loads offline:

    model.safetensors   the state dict; `hcd train --weights model.safetensors` loads it (timm drops the
                        1000-class head and adapts the rest, as it does for hub weights)
    config.json         timm's config for it: `timm.create_model("local-dir:FOLDER")` also works
    dataset-metadata.json

``push_dataset`` (``kaggle/dataset.py``) uploads it. ``hcd kernel push --pretrained-from OWNER/SLUG`` attaches
that dataset and adds ``--weights dataset:OWNER/SLUG/model.safetensors`` to the training flags
(``pretrained_train_args``); the kernel resolves the reference to wherever Kaggle mounted the dataset.

    >>> default_slug("resnet18.a1_in1k")
    'timm-resnet18-a1-in1k'
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_path, atomic_write_json
from hcd_kit.kaggle.refs import reference

WEIGHTS_FILE = "model.safetensors"  # every weights dataset holds its weights under this name
CONFIG_FILE = "config.json"
_SOURCES = ("file", "url", "hf_hub_id", "state_dict")  # where a timm pretrained_cfg can take weights from


def default_slug(model: str) -> str:
    """The dataset slug for ``model``'s weights: ``timm-`` + the name in lowercase letters, digits and '-'."""
    return ("timm-" + re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-"))[:50].rstrip("-")


def pretrained_train_args(train_args: str, pretrained_from: str, user: str) -> str:
    """``train_args`` plus ``--weights dataset:OWNER/SLUG/model.safetensors`` for dataset ``pretrained_from``."""
    if not pretrained_from:
        return train_args
    ref = pretrained_from if "/" in pretrained_from else f"{user}/{pretrained_from}"
    return f"{train_args} --weights {shlex.quote(reference(ref, WEIGHTS_FILE))}".strip()


def _hub_error(name: str, exc: Exception) -> ConfigError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set here, so the hub was not asked" if offline else first
    return ConfigError(
        f"could not get the pretrained weights of '{name}' from the Hugging Face hub ({why}): run "
        f"`hcd weights push {name}` where huggingface.co is reachable"
        f"{' and HF_HUB_OFFLINE is unset' if offline else ''}, or pass --from-file FILE (its state dict)")


def load_pretrained(name: str, from_file: str | os.PathLike[str] | None = None):
    """timm model ``name`` with its pretrained weights (from the hub, or ``from_file``), head as pretrained."""
    import timm

    from hcd_kit.model import check_model_name

    check_model_name(name)
    kwargs: dict = {}
    if from_file is not None:
        path = Path(from_file)
        if not path.is_file():
            raise ConfigError(f"--from-file {path}: no such file")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path.resolve()))
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError as exc:  # an unknown tag
        raise ConfigError(f"'{name}': {exc}") from None
    if from_file is None and (cfg is None or not any(getattr(cfg, k, None) for k in _SOURCES)):
        raise ConfigError(f"timm has no pretrained weights for '{name}'; pick a name that has them, e.g. from "
                          f"`python -c \"import timm; print(timm.list_pretrained('{name.split('.')[0]}*'))\"`")
    try:
        # the backbone as published (its own head): model.create_model builds hcd's 1-logit variant from it
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        if from_file is None:
            raise _hub_error(name, exc) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"--from-file {from_file}: not a state dict of timm model '{name}' ({first})") from None


def save_pretrained(model, folder: Path) -> list[str]:
    """Write ``model``'s state dict as ``model.safetensors`` and timm's ``config.json`` into ``folder``."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    # contiguous copies: safetensors refuses tensors that share memory (tied weights)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        save_config_for_hf(model, str(tmp))
    return [WEIGHTS_FILE, CONFIG_FILE]


def build_weights_dataset(
    name: str,
    folder: str | os.PathLike[str],
    ref: str,
    from_file: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Fill ``folder`` (emptied first) with timm model ``name``'s pretrained weights for dataset ``ref``.

    Returns the file names written. The hub is asked unless ``from_file`` (a state dict of ``name``) is given.
    """
    model = load_pretrained(name, from_file)  # before touching the folder: a failure leaves it as it was
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise DataError(f"{folder} is a file; pass --out-dir FOLDER")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = save_pretrained(model, folder)
    source = f"file {Path(from_file).name}" if from_file is not None else "the Hugging Face hub"
    meta = {
        "title": ref.split("/")[1], "id": ref, "licenses": [{"name": "other"}],
        "description": f"Pretrained weights of timm model `{name}` (from {source}; their own licence applies), "
                       f"saved by `hcd weights push`. Train with `hcd train --model {name} --weights "
                       f"{WEIGHTS_FILE}`, or timm.create_model('local-dir:FOLDER').",
    }
    atomic_write_json(folder / "dataset-metadata.json", meta)
    atomic_write_json(folder / "hcd-weights.json", {"model": name, "weights": WEIGHTS_FILE})
    return names + ["hcd-weights.json"]
