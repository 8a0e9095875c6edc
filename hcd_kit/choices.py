"""Every choice a user makes by name, defined once: the ``Literal`` types the library checks and the CLI offers.

The library validates a value against these (``hcd_kit.config.check_choice``) where it enters, and the CLI
uses them as option types, so ``--help`` lists the same values the library accepts. This module imports
nothing heavy, so ``hcd --help`` stays instant.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["auto", "fp16", "bf16", "fp32"]  # auto: fp16 + GradScaler on CUDA; on a CPU bf16 where native, else fp32
Strategy = Literal["auto", "single", "dp", "ddp", "fold-parallel"]  # auto: DataParallel on 2+ GPUs
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["onecycle", "cosine"]
Imbalance = Literal["none", "pos-weight", "balanced"]
TtaViews = Literal[1, 2, 4, 8]  # views per patch: the dihedral subgroups of that size
BlendMode = Literal["mean", "rank"]  # mean probability, or mean rank (ignores calibration between models)
Tracker = Literal["none", "tensorboard", "wandb", "mlflow"]  # hcd train --tracker: each needs its extra

TTA_CHOICES: tuple[int, ...] = get_args(TtaViews)
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)

DEFAULT_MODEL = "resnet18"  # --model takes any timm name; small ImageNet CNNs do well on 96 px tissue
