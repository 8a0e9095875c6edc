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
_FIELD_METAVARS = {"model": "NAME", "weights": "FILE", "pseudo": "FILE", "device": "DEVICE", "time_budget": "DURATION"}


def _config_options() -> list[inspect.Parameter]:
    """One keyword-only parameter per ``TrainConfig`` field that has help text (tables such as augment have none)."""
    from hcd_kit.training.recipes import list_recipes

    hints = typing.get_type_hints(TrainConfig)
    by_recipe = {key for r in list_recipes() for key in r.train}  # what a recipe sets, its flag's default does not
    params = []
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata:
            continue
        shown = _shown_default(f)
        extra = {"show_default": f"recipe's, else {shown}"} if f.name in by_recipe else {}
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))  # weights: str | None -> str
        flag = f.name.replace("_", "-")
        if tp is bool:
            option = typer.Option(f"--{flag}/--no-{flag}", metavar="", help=f.metadata["help"], **extra)
        elif typing.get_origin(tp) is typing.Literal:  # a long <a|b|...> label would squeeze the help column
            short = len("|".join(map(str, typing.get_args(tp)))) <= 12
            option = typer.Option(
                f"--{flag}", metavar=None if short else f.name.upper(), help=f.metadata["help"], **extra
            )
        else:
            metavar = _FIELD_METAVARS.get(f.name, _METAVARS.get(tp, "VALUE"))
            option = typer.Option(f"--{flag}", metavar=metavar, help=f.metadata["help"], **extra)
        ann = Annotated[Optional[tp] if f.default is None else tp, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=f.default))
    return params


def _shown_default(f: dataclasses.Field) -> str:
    if isinstance(f.default, bool):
        return f.name.replace("_", "-") if f.default else "no-" + f.name.replace("_", "-")
    return str(f.default)


def train(
    ctx: typer.Context,
    data_dir: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Competition folder with packed/ (hcd prepare) and folds.csv (hcd folds)."),
    ] = Path("data"),
    fold: Annotated[
        Optional[str],
        typer.Option(
            metavar="FOLDS",
            show_default="all; with --resume, the folds the run was started for",
            help="Fold(s) to train: all, one number, or a list like 0,2.",
        ),
    ] = None,
    run_dir: Annotated[
        Optional[Path],
        typer.Option(metavar="DIR", show_default="runs/MODEL", help="Where checkpoints, logs and OOF go."),
    ] = None,
    recipe: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            show_default="cpu on a CPU, t4x2-fast on CUDA",
            help="Named recipe (`hcd recipes`) or recipe TOML file; --config and flags override it.",
        ),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="TOML file with TrainConfig keys; flags override it.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", metavar="", help="Continue interrupted folds from last.pt; finished folds are skipped."
        ),
    ] = False,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            metavar="",
            help="Measure this machine, print the time plan (speeds, epochs, time per fold and for prediction, expected finish) and exit without training or writing anything.",
        ),
    ] = False,
    **settings,
) -> None:
    """Train a timm model on one fold, several or all, keeping honest out-of-fold (OOF) predictions.

    Needs DATA_DIR/packed (`hcd prepare`) and DATA_DIR/folds.csv (`hcd folds`).
    Writes RUN_DIR/config.toml, RUN_DIR/train.log and, per fold, RUN_DIR/foldK/ best.pt, state.json, last.pt
    (until the fold finishes),
    history.csv, oof.csv. oof.csv (id,fold,prob,label) holds the fold's validation predictions from its
    best epoch. Mixed precision is on by default; a step with a NaN/inf loss is skipped and counted,
    never trained on.

    Examples:

      hcd train --fold all --recipe t4x2-fast  (see `hcd recipes`; flags override the recipe)

      hcd train --fold all --model resnet18 --epochs 8

      hcd train --fold all --time-budget 11h --plan  (measure, print the plan, train nothing; drop --plan to train)

      hcd train --run-dir runs/resnet18 --resume  (after an interruption)

      torchrun --nproc_per_node 2 -m hcd_kit train --fold 0 --strategy ddp

      hcd train --fold all --strategy fold-parallel  (one fold per GPU at a time)
    """
    if run_dir is not None and not plan:  # before torch is imported: a second `hcd train` is refused at once
        from hcd_kit.locks import hold_run

        with hold_run(run_dir):
            _train(ctx, data_dir, fold, run_dir, recipe, config, resume, plan, settings)
    else:
        _train(ctx, data_dir, fold, run_dir, recipe, config, resume, plan, settings)


def _train(ctx, data_dir, fold, run_dir, recipe, config, resume, plan, settings) -> None:
    from hcd_kit.training import load_recipe, resolve_config
    from hcd_kit.training import train as run_training

    folds = parse_folds(fold)
    # only the flags given on the command line override the config file (a shown default is not a choice)
    given = {k: v for k, v in settings.items() if _given(ctx, k)}
    if given.get("weights") is not None:
        given["weights"] = str(given["weights"])
    # --fold all with --resume means every fold; --resume alone, the folds the run was started for
    folds = folds if folds is not None or fold is None else "all"
    chosen = load_recipe(recipe) if recipe is not None else None
    if chosen is not None and chosen.is_blend:
        _train_blend(chosen, data_dir, run_dir, config, given, folds, resume, plan)
        return
    cfg, run = resolve_config(config, given, run_dir, resume, recipe)
    if plan:
        from hcd_kit.training import plan_run

        plan_run(cfg, data_dir, folds)
        return
    run_training(cfg, data_dir, run, folds=folds, resume=resume)


def _train_blend(
    blend, data_dir: Path, run_dir: Optional[Path], config, given: dict, folds, resume: bool, plan: bool = False
) -> None:
    """A blend recipe: one run per member under RUN_DIR/<member>, one after the other, then the next steps.
    A --time-budget is shared: each run gets what is left of it, split over the runs still to train."""
    import time

    from hcd_kit.console import console
    from hcd_kit.training import plan_run, resolve_config
    from hcd_kit.training import train as run_training
    from hcd_kit.training.budget import share_budget

    started = time.time()

    root = run_dir or Path("runs") / blend.name
    runs = []
    for i, member in enumerate(blend.members, 1):
        console.rule(
            f"[bold]{blend.name}: run {i}/{len(blend.members)}, recipe {member.recipe} -> {root / member.name}"
        )
        cfg, run = resolve_config(config, given, root / member.name, resume, member.recipe)
        cfg = dataclasses.replace(cfg, time_budget=share_budget(cfg.time_budget, started, len(blend.members) - i + 1))
        if plan:
            plan_run(cfg, data_dir, folds)
            continue
        run_training(cfg, data_dir, run, folds=folds, resume=resume)
        runs.append(run)
    if plan:
        return
    console.print(
        f"Trained {len(runs)} runs. Next: `hcd predict --data-dir {data_dir} --run-dir RUN` for each of "
        f"{', '.join(map(str, runs))}, then `hcd ensemble {' '.join(map(str, runs))} --weights auto "
        f"--out {root}/submission.csv`",
        soft_wrap=True,
    )


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


_own = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
command(signature=inspect.Signature([*_own, *_config_options()]))(train)
