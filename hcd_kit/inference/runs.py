"""A trained fold's network, rebuilt from its run folder for prediction (``load_fold_model``).

What to rebuild (``RunModel``: the model name and input size) and which folds exist come from
``hcd_kit.runs.model``; this module loads ``RUN/foldK/best.pt`` into that network::

    spec = read_run_model("runs/r18")
    model = load_fold_model("runs/r18", select_folds("runs/r18")[0], spec, torch.device("cpu"))
"""

from __future__ import annotations

import os

import torch
from torch import nn

from hcd_kit.damage import damaged, load_torch
from hcd_kit.errors import DataError
from hcd_kit.layout import RunLayout
from hcd_kit.runs.model import RunModel
from hcd_kit.runs.record import retrain_fold


def load_fold_model(run_dir: str | os.PathLike[str], fold: int, spec: RunModel, device: torch.device) -> nn.Module:
    """Fold ``fold``'s best weights in a fresh ``spec.model`` network on ``device``, in eval mode."""
    from hcd_kit.model import create_model

    run = RunLayout.of(run_dir)
    path = run.best(fold)
    model = create_model(spec.model, pretrained=False, img_size=spec.img_size)
    state = load_torch(path, fix=retrain_fold(run, fold))  # any damage: one line with the command that retrains
    if not isinstance(state, dict):
        raise damaged(path, f"a {type(state).__name__}, not the state_dict `hcd train` writes", retrain_fold(run, fold))
    try:
        keys = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes (e.g. another width of the same family)
        raise DataError(
            f"{path} does not match model '{spec.model}' named in config.toml (tensor shapes differ: "
            f"{_first_line(exc, 120)}); predict with the run folder that wrote these weights"
        ) from None
    if keys.missing_keys or keys.unexpected_keys:
        example = (keys.missing_keys or keys.unexpected_keys)[0]
        raise DataError(
            f"{path} does not match model '{spec.model}' named in config.toml ({len(keys.missing_keys)} missing, "
            f"{len(keys.unexpected_keys)} unexpected keys, e.g. {example}); "
            "predict with the run folder that wrote these weights"
        )
    return model.to(device).eval()


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines and lines[0].startswith("Error(s)") else (lines[0] if lines else "")
    return (line or type(exc).__name__)[:limit]
