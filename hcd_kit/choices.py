"""Every choice a user makes by name, defined once: the ``Literal`` types the library checks and the CLI offers.

The library validates a value against these (``hcd_kit.config.check_choice``) where it enters, and the CLI
uses them as option types, so ``--help`` lists the same values the library accepts. This module imports
nothing heavy, so ``hcd --help`` stays instant.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal[
    "auto", "fp16", "bf16", "fp32"
]  # auto: fp16 + GradScaler on CUDA; on a CPU bf16 where native, else fp32
Strategy = Literal["auto", "single", "dp", "ddp", "fold-parallel"]  # auto: DataParallel on 2+ GPUs
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["onecycle", "cosine"]
Imbalance = Literal["none", "pos-weight", "balanced"]
TtaViews = Literal[1, 2, 4, 8]  # views per patch: the dihedral subgroups of that size
BlendMode = Literal["mean", "rank"]  # mean probability, or mean rank (ignores calibration between models)
Tracker = Literal["none", "tensorboard", "wandb", "mlflow"]  # hcd train --tracker: each needs its extra
# `hcd kernel push|run --machine-shape`: the Kaggle accelerators that exist today (kaggle-cli docs, 2026; some are
# offered only to some accounts or competitions); NvidiaTeslaT4 is T4 x2, the default GPU
MachineShape = Literal["NvidiaTeslaT4", "NvidiaL4", "NvidiaL4X1", "NvidiaTeslaA100", "NvidiaH100", "NvidiaRtxPro6000"]
ProbeHead = Literal[
    "logreg", "mlp"
]  # hcd probe --head: standardised features -> logistic regression, or one hidden layer of 256

# the help of options that several commands share (--help of train, predict, embed, demo, report)
PRECISION_HELP = "Autocast: auto (fp16 on CUDA; bf16 on a CPU that has it natively, else fp32), fp16, bf16 or fp32."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."

TTA_CHOICES: tuple[int, ...] = get_args(TtaViews)
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)
MACHINE_SHAPES: tuple[str, ...] = get_args(MachineShape)

MIN_IMG_SIZE = 32  # the smallest --img-size every stage takes (train, predict, embed); checked when a run is configured
DEFAULT_MODEL = "resnet18"  # --model takes any timm name; small ImageNet CNNs do well on 96 px tissue
