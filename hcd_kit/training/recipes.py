"""Named training recipes: TOML files shipped in ``hcd_kit/assets/recipes`` (or any TOML file of that shape).

A recipe is a ``[recipe]`` table (what it is for and what it is based on) and a ``[train]`` table of
``TrainConfig`` keys; a blend recipe instead lists ``[[members]]``, each a recipe name (and a run-folder
name), whose runs are trained one after the other and blended on their out-of-fold predictions.
Precedence when training: ``TrainConfig`` defaults <- recipe <- ``--config`` file <- flags.

    cfg = recipe_config("cpu", {"epochs": 4})
    for r in list_recipes(): print(r.name, r.model, r.img_size)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcd_kit.config import load_config, read_toml
from hcd_kit.errors import ConfigError
from hcd_kit.training.config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parents[1] / "assets" / "recipes"
CPU_DEFAULT, CUDA_DEFAULT = "cpu", "t4x2-fast"


@dataclass(frozen=True)
class Member:
    """One run of a blend recipe: the recipe it trains and the sub-folder of the blend's run folder."""

    recipe: str
    name: str


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    hardware: str  # "cpu" or "t4x2": what its cost figures and defaults are for
    based_on: str
    train: dict[str, Any] = field(default_factory=dict)
    members: tuple[Member, ...] = ()  # a blend recipe's runs; empty for a single-run recipe
    path: Path | None = None

    @property
    def is_blend(self) -> bool:
        return bool(self.members)

    @property
    def model(self) -> str:
        return " + ".join(load_recipe(m.recipe).model for m in self.members) if self.members else self.config().model

    @property
    def img_size(self) -> str:
        if self.members:
            return " + ".join(load_recipe(m.recipe).img_size for m in self.members)
        return str(self.config().img_size)

    def config(self, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        if self.members:
            raise ConfigError(
                f"recipe '{self.name}' is a blend of {', '.join(m.recipe for m in self.members)}: "
                "it trains one run per member"
            )
        return load_config(TrainConfig, None, {"recipe": self.name, **(overrides or {})}, base=self.train)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """A shipped recipe by name, or a recipe TOML file by path; ConfigError naming the choices otherwise."""
    text = str(name_or_path)
    path = Path(text) if text.endswith(".toml") else RECIPE_DIR / f"{text}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe '{text}' (choose from {', '.join(recipe_names())}, or a .toml file)")
    data = read_toml(path)
    meta = data.get("recipe", {})
    unknown = sorted(set(data) - {"recipe", "train", "members"})
    if unknown:
        raise ConfigError(f"recipe {path}: unknown table '{unknown[0]}' (known: recipe, train, members)")
    members = tuple(Member(m["recipe"], m.get("name", m["recipe"])) for m in data.get("members", []))
    recipe = Recipe(
        name=path.stem,
        description=meta.get("description", ""),
        hardware=meta.get("hardware", "any"),
        based_on=meta.get("based_on", ""),
        train=data.get("train", {}),
        members=members,
        path=path,
    )
    if not members:
        recipe.config()  # a wrong key or value in a recipe fails here, naming it, not mid-run
    return recipe


def list_recipes() -> list[Recipe]:
    return [load_recipe(n) for n in recipe_names()]


def recipe_config(name_or_path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """``TrainConfig`` defaults <- the recipe <- ``overrides`` (nested or dotted keys; None = not given)."""
    return load_recipe(name_or_path).config(overrides)


def default_recipe(device_type: str) -> str:
    """The recipe used when none is named: ``cpu`` on a CPU, ``t4x2-fast`` on CUDA."""
    return CPU_DEFAULT if device_type == "cpu" else CUDA_DEFAULT
