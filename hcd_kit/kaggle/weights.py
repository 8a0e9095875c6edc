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

Registry models (``hcd models``: uni, virchow2, ...) are loaded as published on the hub with the registry's
kwargs (``load_registry``), head-less, and written as the same flat folder plus an ``"hcd"`` block in
config.json (``save_local_dir``), so `hcd train/embed --model NAME --weights model.safetensors` and
``local-dir:`` both work offline. A model whose licence does not allow re-hosting (``redistribute = false``)
is refused unless the user confirms a private copy for their own use (``private_ok``); hcd only creates
private datasets, and the description states the licence.

    >>> default_slug("resnet18.a1_in1k")
    'timm-resnet18-a1-in1k'
    >>> default_slug("uni")
    'uni-weights'
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_write_json
from hcd_kit.kaggle.refs import reference
from hcd_kit.weights_io import WEIGHTS_FILE, read_state_dict, save_local_dir

_SOURCES = ("file", "url", "hf_hub_id", "state_dict")  # where a timm pretrained_cfg can take weights from


def default_slug(model: str) -> str:
    """The dataset slug for ``model``'s weights: ``timm-`` + the name in lowercase letters, digits and '-'
    (a registry model: its name + ``-weights``)."""
    entry = registry_entry(model)
    if entry is not None:
        return f"{entry.name}-weights"
    return ("timm-" + re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-"))[:50].rstrip("-")


def registry_entry(model: str):
    """The registry ``Entry`` that ``model`` names (a registry name, or ``hf-hub:`` + its hub id), else None."""
    from hcd_kit.backbones import get_entry

    name = model.strip()
    if name.startswith("hf-hub:"):
        name = name[len("hf-hub:") :].split("@")[0]
    return get_entry(name) if name else None


def check_licence(entry, private_ok: bool) -> None:
    """Refuse re-hosting weights whose licence forbids it, unless the user confirms a private, own-use copy."""
    if entry.redistribute or private_ok:
        return
    raise ConfigError(
        f"'{entry.name}' is under {entry.licence}, which does not allow re-hosting its weights; if its terms let "
        f"you keep a private copy for your own use, pass --private-ok (hcd makes the dataset private: never "
        f"share it), or skip the copy: `hcd kernel push --hub-secret NAME` reads it from the hub with your token"
    )


def pretrained_train_args(train_args: list[str], pretrained_from: str, user: str) -> list[str]:
    """``train_args`` (words) plus ``--weights dataset:OWNER/SLUG/model.safetensors`` for ``pretrained_from``."""
    if not pretrained_from:
        return list(train_args)
    ref = pretrained_from if "/" in pretrained_from else f"{user}/{pretrained_from}"
    return [*train_args, "--weights", reference(ref, WEIGHTS_FILE)]


def _hub_error(name: str, exc: Exception) -> ConfigError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set here, so the hub was not asked" if offline else first
    return ConfigError(
        f"could not get the pretrained weights of '{name}' from the Hugging Face hub ({why}): run "
        f"`hcd weights push {name}` where huggingface.co is reachable"
        f"{' and HF_HUB_OFFLINE is unset' if offline else ''}, or pass --from-file FILE (its state dict)"
    )


def load_pretrained(name: str, from_file: str | os.PathLike[str] | None = None):
    """timm model ``name`` with its pretrained weights (from the hub, or ``from_file``), head as pretrained."""
    import timm

    from hcd_kit.model import check_model_name, create_published

    check_model_name(name)
    if from_file is not None and not Path(from_file).is_file():
        raise ConfigError(f"--from-file {Path(from_file)}: no such file")
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError as exc:  # an unknown tag
        raise ConfigError(f"'{name}': {exc}") from None
    if from_file is None and (cfg is None or not any(getattr(cfg, k, None) for k in _SOURCES)):
        raise ConfigError(
            f"timm has no pretrained weights for '{name}'; pick a name that has them, e.g. from "
            f"`python -c \"import timm; print(timm.list_pretrained('{name.split('.')[0]}*'))\"`"
        )
    try:
        # the backbone as published (its own head): model.create_model builds hcd's 1-logit variant from it
        return create_published(name, from_file)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        if from_file is None:
            raise _hub_error(name, exc) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"--from-file {from_file}: not a state dict of timm model '{name}' ({first})") from None


def _hub_ready(entry) -> None:
    """Offline and not in the hub cache: say what to do in one line now, not after timm's retries."""
    from hcd_kit.backbones.hub import WEIGHT_FILES, cached_file, offline_reason

    reason = offline_reason()
    if reason is None or (cached_file(entry.hub, ("config.json",)) and cached_file(entry.hub, WEIGHT_FILES)):
        return
    gated = f" (it is gated: request access at {entry.url} and set HF_TOKEN)" if entry.gated else ""
    raise ConfigError(
        f"could not get the weights of '{entry.name}' from the Hugging Face hub ({entry.hub}): the hub cannot be "
        f"asked here ({reason}) and its cache has no copy; run `hcd weights push {entry.name}` where huggingface.co "
        f"is reachable{gated}, or pass --from-file FILE (its timm state dict)"
    )


def load_registry(entry, from_file: str | os.PathLike[str] | None = None):
    """Registry model ``entry`` as published (head-less, the registry's kwargs), from the hub or ``from_file``."""
    from hcd_kit.model import create_model

    if from_file is None:
        _hub_ready(entry)
        return create_model(entry.name, pretrained=True, num_classes=0)
    path = Path(from_file)
    if not path.is_file():
        raise ConfigError(f"--from-file {path}: no such file")
    model = create_model(entry.name, pretrained=False, num_classes=0)  # offline: the architecture, no hub
    try:
        state = read_state_dict(path)
        classifier = model.pretrained_cfg.get("classifier") or "head"
        state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
        model.load_state_dict(state, strict=True)  # every tensor, or say why not
    except Exception as exc:  # noqa: BLE001 - any unreadable or mismatching file is the same user error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:160]
        raise ConfigError(
            f"--from-file {path}: not a state dict of '{entry.name}' (timm {entry.architecture}): {first}"
        ) from None
    return model.eval()


def _registry_description(entry, name: str, source: str, ref: str) -> str:
    own = (
        (
            "a PRIVATE copy for the account owner's own use under that licence (it does not allow re-hosting): "
            "keep this dataset private and do not share it. "
        )
        if not entry.redistribute
        else ""
    )
    return (
        f"Pretrained weights of `{entry.name}` ({entry.hub}, from {source}; licence {entry.licence}): {own}"
        f"Saved by `hcd weights push {name}`. Train with `hcd kernel push --pretrained-from {ref} --train-args "
        f'"--model {entry.name}"`, or `hcd train/embed --model {entry.name} --weights {WEIGHTS_FILE}`, or '
        "--model local-dir:FOLDER."
    )


def build_weights_dataset(
    name: str,
    folder: str | os.PathLike[str],
    ref: str,
    from_file: str | os.PathLike[str] | None = None,
    private_ok: bool = False,
) -> list[str]:
    """Fill ``folder`` (emptied first) with the pretrained weights of ``name`` (a timm or registry model) for
    dataset ``ref``. Returns the file names written. The hub is asked unless ``from_file`` (a state dict of
    ``name``) is given. A registry model whose licence forbids re-hosting needs ``private_ok``.
    """
    entry = registry_entry(name)
    if entry is not None:
        check_licence(entry, private_ok)  # before any download
        model = load_registry(entry, from_file)
    else:
        model = load_pretrained(name, from_file)  # before touching the folder: a failure leaves it as it was
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise DataError(f"{folder} is a file; pass --out-dir FOLDER")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source = f"file {Path(from_file).name}" if from_file is not None else "the Hugging Face hub"
    if entry is None:
        names = save_local_dir(model, folder)  # timm's own config.json: the model as published
        licence = "their own licence applies"
        description = (
            f"Pretrained weights of timm model `{name}` (from {source}; {licence}), saved by `hcd "
            f"weights push`. Train with `hcd train --model {name} --weights {WEIGHTS_FILE}`, or "
            "timm.create_model('local-dir:FOLDER')."
        )
    else:
        hcd = {
            "registry": entry.name,
            "model_kwargs": dict(entry.kwargs),
            "source_model": name,
            "hub": entry.hub,
            "licence": entry.licence,
            "redistribute": entry.redistribute,
            "img_size": entry.input_size,
            "written_by": "hcd weights push",
        }
        names = save_local_dir(
            model, folder, img_size=entry.input_size, model_kwargs=dict(entry.kwargs), hcd=hcd, licence=entry.licence
        )
        licence, description = entry.licence, _registry_description(entry, name, source, ref)
    meta = {"title": ref.split("/")[1], "id": ref, "licenses": [{"name": "other"}], "description": description}
    atomic_write_json(folder / "dataset-metadata.json", meta)
    info = {"model": name, "weights": WEIGHTS_FILE}
    if entry is not None:
        info.update(registry=entry.name, licence=licence, private_copy=not entry.redistribute)
    atomic_write_json(folder / "hcd-weights.json", info)
    return names + ["hcd-weights.json"]
