"""The registry of pathology foundation models, and what ``--model`` may name.

``hcd_kit/assets/backbones.toml`` lists each model once (its comments say what every field means); this
module reads it and resolves a ``--model`` value into a ``Backbone``:

    resolve("resnet18")                    # a timm name: timm knows everything, ImageNet normalisation
    resolve("uni2-h")                      # a registry name: hub id + the kwargs timm alone does not know
    resolve("hf-hub:bioptimus/H-optimus-0")  # a hub id: the registry's kwargs when it knows the id
    resolve("local-dir:/kaggle/input/w")   # a folder with timm's config.json and the weights

Nothing here imports torch or timm until a class named by ``"py:module.Name"`` has to be imported.
"""

from __future__ import annotations

import functools
import importlib
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from hcd_kit.errors import ConfigError
from hcd_kit.weights_io import read_config as folder_config  # a local-dir: folder's config.json

Kind = Literal["timm", "registry", "hf-hub", "local-dir"]
Pool = Literal["head", "cls+mean"]
T4_FLOPS = 12e12  # effective fp16 FLOP/s of one T4 on ViT inference (65 peak); the throughput estimate's base
HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class Entry:
    """One registry model (fields as in ``backbones.toml``)."""

    name: str
    hub: str
    architecture: str
    kwargs: dict = field(default_factory=dict)  # as written: "py:..." strings not yet imported
    input_size: int = 224
    features: int = 0
    pool: Pool = "head"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    params_m: float = 0.0
    gmacs: float = 0.0
    licence: str = ""
    gated: bool = False
    redistribute: bool = False
    pcam: float | None = None
    about: str = ""

    @property
    def url(self) -> str:
        return f"{HUB_URL}/{self.hub}"

    @property
    def t4_images_per_s(self) -> float:
        """Rough frozen-feature throughput on one T4 in fp16 at ``input_size`` (see ``T4_FLOPS``)."""
        return T4_FLOPS / (2e9 * self.gmacs) if self.gmacs > 0 else math.nan


@dataclass(frozen=True)
class Backbone:
    """What ``--model`` names, resolved: how to build it and what it expects."""

    spec: str  # as the user wrote it
    kind: Kind
    name: str  # a timm architecture (timm, registry) or the "hf-hub:ID" / "local-dir:/abs/path" timm reads
    kwargs: dict = field(default_factory=dict)  # extra create_model arguments, classes imported
    entry: Entry | None = None
    hub_id: str | None = None  # where pretrained weights come from on the hub (None: not from the hub)
    folder: Path | None = None  # a local-dir folder

    @property
    def input_size(self) -> int | None:
        """The pixels its pretrained weights expect (None: no preference, e.g. an ImageNet CNN)."""
        if self.entry is not None:
            return self.entry.input_size
        if self.folder is not None:
            size = folder_config(self.folder).get("pretrained_cfg", {}).get("input_size")
            return int(size[-1]) if size else None
        return None

    @property
    def pool(self) -> Pool:
        return self.entry.pool if self.entry is not None else "head"

    @property
    def renormalise(self) -> bool:
        """True when the input must be re-normalised from ImageNet's statistics to the weights' own."""
        return self.kind != "timm"

    @property
    def label(self) -> str:
        return self.entry.name if self.entry is not None else self.spec


def _parse_entry(name: str, raw: dict) -> Entry:
    known = set(Entry.__dataclass_fields__) - {"name"}
    unknown = set(raw) - known
    if unknown or "hub" not in raw or "architecture" not in raw:
        raise ConfigError(f"backbones.toml [{name}]: unknown keys {sorted(unknown)} or no hub / architecture")
    data = dict(raw)
    for key in ("mean", "std"):
        if key in data:
            data[key] = tuple(float(v) for v in data[key])
    return Entry(name=name, **data)


@functools.cache
def _registry() -> dict[str, Entry]:
    text = resources.files("hcd_kit").joinpath("assets", "backbones.toml").read_text(encoding="utf-8")
    return {name: _parse_entry(name, raw) for name, raw in tomllib.loads(text).items()}


def entries() -> list[Entry]:
    """Every registry model, in file order."""
    return list(_registry().values())


def get_entry(name: str) -> Entry | None:
    """The registry entry called ``name`` (case-insensitive), or the one whose hub id is ``name``."""
    key = name.strip().lower()
    for entry in _registry().values():
        if entry.name == key or entry.hub.lower() == key:
            return entry
    return None


def import_kwargs(kwargs: dict) -> dict:
    """``kwargs`` with every ``"py:module.Name"`` value replaced by the object it names."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("py:"):
            module, _, attr = value[3:].rpartition(".")
            try:
                value = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                raise ConfigError(f"model argument {key}={value!r}: cannot import {value[3:]}") from None
        out[key] = value
    return out


def symbolic_kwargs(kwargs: dict, entry: Entry | dict | None) -> dict:
    """``kwargs`` made JSON-writable: an imported class becomes the ``"py:module.Name"`` it was written as, in
    the registry ``entry`` (or a dict of such written kwargs, e.g. a local-dir folder's)."""
    written_kwargs = entry.kwargs if isinstance(entry, Entry) else (entry or {})
    out = {}
    for key, value in kwargs.items():
        if not isinstance(value, (str, int, float, bool, list, tuple, type(None))):
            written = written_kwargs.get(key)
            if not (isinstance(written, str) and written.startswith("py:")):
                raise ConfigError(f"model argument {key}={value!r} cannot be written to config.json")
            value = written
        out[key] = value
    return out


def resolve(spec: str) -> Backbone:
    """Turn a ``--model`` value into a ``Backbone``; a one-line ConfigError for a name nothing knows."""
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError(
            "--model is empty; give a timm name, a registry name (`hcd models`), hf-hub:ORG/NAME or local-dir:FOLDER"
        )
    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:") :]).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"{spec}: no such folder")
        hcd = folder_config(folder).get("hcd", {})
        entry = get_entry(hcd["registry"]) if hcd.get("registry") else None
        kwargs = {**(entry.kwargs if entry else {}), **hcd.get("model_kwargs", {})}
        for key in ("img_size", "patch_size", "embed_dim", "depth", "num_heads"):  # the folder's config says
            kwargs.pop(key, None)
        return Backbone(spec, "local-dir", f"local-dir:{folder}", import_kwargs(kwargs), entry, folder=folder)
    if spec.startswith("hf-hub:"):
        hub_id = spec[len("hf-hub:") :]
        if "/" not in hub_id:
            raise ConfigError(f"{spec}: a hub id is ORG/NAME, e.g. hf-hub:bioptimus/H-optimus-0")
        entry = get_entry(hub_id.split("@")[0])
        return Backbone(spec, "hf-hub", spec, import_kwargs(entry.kwargs) if entry else {}, entry, hub_id=hub_id)
    entry = get_entry(spec)
    if entry is not None:
        return Backbone(spec, "registry", entry.architecture, import_kwargs(entry.kwargs), entry, hub_id=entry.hub)
    return Backbone(spec, "timm", spec)
