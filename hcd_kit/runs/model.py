"""What inference reads from a training run folder: the network to rebuild, the folds it has, their weights.

``hcd train`` leaves ``RUN/config.toml`` (the resolved training config, of which inference needs ``model``
and ``img_size``), ``RUN/plan.json`` (the folds it was asked for), and ``RUN/foldK/best.pt`` per finished
fold; ``expected_folds`` says which folds a complete run has. Every error here is one line that says which file is wrong and what to do about it::

    spec = read_run_model("runs/r18")                  # RunModel(model="resnet18", img_size=96)
    folds = select_folds("runs/r18", None)             # every fold with a best.pt
    model = load_fold_model("runs/r18", folds[0], spec, torch.device("cpu"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields

from hcd_kit.choices import MIN_IMG_SIZE
from hcd_kit.config import from_dict, read_toml
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import RunLayout


@dataclass(frozen=True)
class RunModel:
    """The part of ``RUN/config.toml`` needed to rebuild a run's network (same key names as the file)."""

    model: str  # timm name
    img_size: int  # the size patches were upscaled to in training; predicting at another size loses AUC

    def __post_init__(self) -> None:
        if self.img_size < MIN_IMG_SIZE:
            raise ConfigError(f"`img_size` must be an integer >= {MIN_IMG_SIZE}, got {self.img_size!r}")


def read_run_model(run_dir: str | os.PathLike[str]) -> RunModel:
    """``model`` (timm name) and ``img_size`` from ``RUN/config.toml``; a one-line ConfigError otherwise."""
    path = RunLayout.of(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{path} not found; --run-dir must be a run folder written by `hcd train`")
    fix = f"restore it (predicting needs only its model and img_size, which {path.parent / 'train.log'} names)"
    cfg = read_toml(path, fix=fix)
    if cfg.get("kind") == "probe":  # `hcd probe` writes a run folder without weights: nothing to re-predict
        root = RunLayout.of(run_dir).root
        raise ConfigError(
            f"{root} is a probe run: `hcd probe` already wrote its test predictions to "
            f"{root / 'submission.csv'}; blend it with `hcd ensemble` or submit it"
        )
    if not cfg.get("model"):
        raise ConfigError(f'{path} has no `model = "<timm name>"` line, as a config written by hcd train has; {fix}')
    try:  # only the keys inference needs: the rest of the file is training's business
        spec = from_dict(RunModel, {f.name: cfg.get(f.name) for f in fields(RunModel)})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    from hcd_kit.model import check_model_name

    check_model_name(spec.model)
    return spec


def select_folds(run_dir: str | os.PathLike[str], folds: Sequence[int] | None = None) -> list[int]:
    """Folds to use: every fold with a ``best.pt`` for None, else ``folds`` (each must have one), sorted."""
    run = RunLayout.of(run_dir)
    have = [k for k in run.folds_present() if run.best(k).is_file()]
    if not have:
        raise DataError(f"no fold*/best.pt in {run.root}; train the run first (`hcd train`) or fix --run-dir")
    if folds is None:
        return have
    want = sorted(set(folds))
    missing = [k for k in want if k not in have]
    if not want or missing:
        raise DataError(f"no best.pt for fold(s) {missing or want} in {run.root} (has {have}); choose among those")
    return want


def expected_folds(run_dir: str | os.PathLike[str]) -> list[int] | None:
    """The folds a complete run has: every fold of its split (``RUN/folds.csv``), else the folds it was asked
    for (``RUN/plan.json``); None if neither is readable (a report then only judges the folds it finds)."""
    run = RunLayout.of(run_dir)
    if run.folds.is_file():
        from hcd_kit.data import read_folds

        try:
            return sorted(set(read_folds(run.folds)["fold"].tolist()))
        except DataError:
            pass
    try:
        return run.planned_folds()
    except DataError:
        return None  # a damaged plan is train's business (it says so on --resume)
