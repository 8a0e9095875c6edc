"""Command: train (cross-validated timm training on the packed store; see ``hcd_kit.training``).

Its model and optimisation flags are generated from ``TrainConfig``'s fields: each field's
``metadata["help"]`` is the flag's help, its default the shown default, a ``Literal`` field a choice and a
``bool`` field a ``--x/--no-x`` switch, so a new setting needs no code here. Only the flags given on the
command line override the config file (or, with --resume, the run's own config.toml).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command, parse_folds
from hcd_kit.training import TrainConfig

_METAVARS = {int: "N", float: "X", str: "TEXT"}
_FIELD_METAVARS = {"model": "NAME", "weights": "FILE", "device": "DEVICE"}


def _config_options() -> list[inspect.Parameter]:
    """One keyword-only parameter per ``TrainConfig`` field that has help text (tables such as augment have none)."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata:
            continue
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))  # weights: str | None -> str
        flag = f.name.replace("_", "-")
        if tp is bool:
            option = typer.Option(f"--{flag}/--no-{flag}", metavar="", help=f.metadata["help"])
        elif typing.get_origin(tp) is typing.Literal:  # a long <a|b|...> label would squeeze the help column
            short = len("|".join(map(str, typing.get_args(tp)))) <= 12
            option = typer.Option(f"--{flag}", metavar=None if short else f.name.upper(), help=f.metadata["help"])
        else:
            metavar = _FIELD_METAVARS.get(f.name, _METAVARS.get(tp, "VALUE"))
            option = typer.Option(f"--{flag}", metavar=metavar, help=f.metadata["help"])
        ann = Annotated[Optional[tp] if f.default is None else tp, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=f.default))
    return params


def train(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Option(metavar="DIR", help="Competition folder with packed/ (hcd prepare) and folds.csv (hcd folds).")] = Path("data"),
    fold: Annotated[Optional[str], typer.Option(metavar="FOLDS", show_default="all; with --resume, the folds the run was started for", help="Fold(s) to train: all, one number, or a list like 0,2.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(metavar="DIR", show_default="runs/MODEL", help="Where checkpoints, logs and OOF go.")] = None,
    config: Annotated[Optional[Path], typer.Option(metavar="FILE", help="TOML file with TrainConfig keys; flags override it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="Continue interrupted folds from last.pt; finished folds are skipped.")] = False,
    **settings,
) -> None:
    """Train a timm model on one fold, several or all, keeping honest out-of-fold (OOF) predictions.

    Needs DATA_DIR/packed (`hcd prepare`) and DATA_DIR/folds.csv (`hcd folds`).
    Writes RUN_DIR/config.toml, RUN_DIR/train.log and, per fold, RUN_DIR/foldK/ best.pt, last.pt,
    history.csv, oof.csv. oof.csv (id,fold,prob,label) holds the fold's validation predictions from its
    best epoch. Mixed precision is on by default; a step with a NaN/inf loss is skipped and counted,
    never trained on.

    Examples:

      hcd train --fold all --model resnet18 --epochs 8

      hcd train --run-dir runs/resnet18 --resume  (after an interruption)

      torchrun --nproc_per_node 2 -m hcd_kit train --fold 0 --strategy ddp

      hcd train --fold all --strategy fold-parallel  (one fold per GPU at a time)
    """
    from hcd_kit.training import resolve_config, train as run_training

    folds = parse_folds(fold)
    # only the flags given on the command line override the config file (a shown default is not a choice)
    given = {k: v for k, v in settings.items() if _given(ctx, k)}
    if given.get("weights") is not None:
        given["weights"] = str(given["weights"])
    cfg, run = resolve_config(config, given, run_dir, resume)
    # --fold all with --resume means every fold; --resume alone, the folds the run was started for
    run_training(cfg, data_dir, run, folds=folds if folds is not None or fold is None else "all", resume=resume)


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


_own = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
command(signature=inspect.Signature([*_own, *_config_options()]))(train)
