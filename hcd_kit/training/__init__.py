"""Training: cross-validated, resumable training of a timm backbone on the packed store.

    from hcd_kit.training import TrainConfig, resolve_config, train

    cfg, run = resolve_config("train.toml", {"epochs": 3}, "runs/r18", resume=False)  # defaults <- TOML <- flags
    results = train(cfg, "data", run, folds="all")          # {fold: FoldResult}
    print(results[0].best_auc)

``TrainConfig``'s fields carry their help text (``dataclasses.fields(TrainConfig)[i].metadata["help"]``) and
its choices are the ``Literal`` types of ``hcd_kit.choices``. ``build_trainer``, ``train_input`` and
``train_step`` are the pieces of one training step, for benchmarks and tools.

Names load on first use (``hcd_kit.lazy``), so importing one module of the package imports no more than it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcd_kit.lazy import public_api

__all__, __getattr__, __dir__ = public_api(
    __name__,
    {
        "augment": "augment_batch draw_uniforms mixup stain_jitter",
        "budget": "Plan RunClock Speeds Work fit_epochs format_duration parse_duration",
        "checkpoint": "FoldState Trainer load_checkpoint",
        "config": "AugmentConfig RUNTIME_KEYS TrainConfig",
        "finetune": "param_groups prepare_model trainable_summary",
        "loop": "Hooks train",
        "optim": "Ema Swa build_optimizer build_schedule",
        "recipes": "Recipe default_recipe list_recipes load_recipe recipe_config recipe_names",
        "runs": "FoldResult resolve_config",
        "speed": "measure_speeds plan_run",
        "step": "Env build_trainer train_batch train_input train_step",
        "trackers": "Tracker check_tracker tracking",
        "train_args": "TrainArgs parse_train_args",
    },
)

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from hcd_kit.training.augment import augment_batch, draw_uniforms, mixup, stain_jitter
    from hcd_kit.training.budget import Plan, RunClock, Speeds, Work, fit_epochs, format_duration, parse_duration
    from hcd_kit.training.checkpoint import FoldState, Trainer, load_checkpoint
    from hcd_kit.training.config import RUNTIME_KEYS, AugmentConfig, TrainConfig
    from hcd_kit.training.finetune import param_groups, prepare_model, trainable_summary
    from hcd_kit.training.loop import Hooks, train
    from hcd_kit.training.optim import Ema, Swa, build_optimizer, build_schedule
    from hcd_kit.training.recipes import Recipe, default_recipe, list_recipes, load_recipe, recipe_config, recipe_names
    from hcd_kit.training.runs import FoldResult, resolve_config
    from hcd_kit.training.speed import measure_speeds, plan_run
    from hcd_kit.training.step import Env, build_trainer, train_batch, train_input, train_step
    from hcd_kit.training.trackers import Tracker, check_tracker, tracking
    from hcd_kit.training.train_args import TrainArgs, parse_train_args
