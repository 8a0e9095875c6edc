"""The options of `hcd kernel push|run` about which model a kernel uses: registry models (the hub with a token
from a Kaggle secret, or a dataset of the weights), probe kernels, and the recipe check. The rules themselves
live in ``hcd_kit.kaggle.hub_access``."""

from __future__ import annotations

from typing import Annotated

import typer

HubSecret = Annotated[str, typer.Option(
    metavar="NAME", show_default="none",
    help="Route A to a registry model's weights (`hcd models`: uni, virchow2, ...): the hub, with your token. Turns "
         "the kernel's internet on and sets HF_TOKEN from your Kaggle secret NAME at its start (add your Hugging "
         "Face read token in the notebook's Add-ons > Secrets under that name; only the name is in the kernel). "
         "Route B, offline: --pretrained-from a dataset made by `hcd weights push MODEL`.")]
Probe = Annotated[str, typer.Option(
    metavar="MODEL", show_default="none",
    help="Make a probe kernel instead of train + predict: `hcd embed` every patch with the frozen MODEL (--tta "
         "views), then `hcd probe` fits a linear probe and writes submission.csv. MODEL's weights come from "
         "--pretrained-from (offline) or --hub-secret (the hub).")]


def model_fields(opts: dict) -> dict:
    """The ``KernelSpec`` fields these options set (``kernel_spec`` of cli/kernel.py reads them here)."""
    return {"hub_secret": (opts.get("hub_secret") or "").strip(), "probe": (opts.get("probe") or "").strip(),
            "internet": bool(opts["internet"] or (opts.get("hub_secret") or "").strip())}


def refuse_blend_recipe(train_args: str) -> None:
    """A kernel trains and predicts one run; a blend recipe's members go in one kernel each, then `hcd ensemble`."""
    import shlex

    from hcd_kit.errors import ConfigError
    from hcd_kit.training.recipes import load_recipe

    words = shlex.split(train_args or "")
    names = [w.split("=", 1)[1] for w in words if w.startswith("--recipe=")]
    names += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--recipe"]
    for name in names:
        recipe = load_recipe(name)
        if recipe.is_blend:
            members = " and ".join(f'--train-args "--recipe {m.recipe}"' for m in recipe.members)
            raise ConfigError(f"--train-args: recipe '{name}' trains {len(recipe.members)} runs, a kernel one; push one "
                              f"kernel per member ({members}), then `hcd ensemble` their runs --weights auto")
