"""The training configuration: every setting of ``hcd train``, its default, its help text and its checks.

``TrainConfig`` is the one boundary where training settings are validated; each field's ``metadata["help"]``
is the text the CLI shows for its flag, and every choice is one ``Literal`` type from ``hcd_kit.choices`` that the
CLI uses as the option's type. Errors name the flag (``--epochs must be >= 1, got 0``), since a config-file key ``epochs``
is the flag ``--epochs``.

    cfg = load_config(TrainConfig, "train.toml", {"epochs": 3})
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hcd_kit.choices import (
    DEFAULT_MODEL,
    DEVICE_HELP,
    MIN_IMG_SIZE,
    PRECISION_HELP,
    Imbalance,
    Optimizer,
    Precision,
    Schedule,
    Strategy,
    Tracker,
)
from hcd_kit.config import check_choice, flag
from hcd_kit.errors import ConfigError
from hcd_kit.training.budget import parse_duration

# Keys that may differ between the sessions of one run: where it runs, not what it computes (gradient
# checkpointing trades memory for time: a fold may resume with it on a smaller GPU; the tracker only watches).
RUNTIME_KEYS = {
    "device",
    "strategy",
    "threads",
    "fold_workers",
    "val_batch_size",
    "time_budget",
    "grad_ckpt",
    "tracker",
}


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConfig:
    dihedral: bool = True  # random flips + 90° rotations (8 dihedral transforms)
    color: float = 0.1  # brightness/contrast/saturation jitter strength, 0 = off
    hue: float = 0.02  # hue shift strength, 0 = off
    stain: float = 0.0  # H&E stain jitter strength (HED space), 0 = off; 0.01 moves colours ~3 %, 0.05 ~14 %
    crop_scale: float = 1.0  # min area fraction of random resized crop; 1.0 = off
    # training/distort.py: what a scanner or a slide does (0 = off)
    gamma: float = 0.0  # gamma jitter: x ** g, log g uniform in [-gamma, gamma]; 0.2 = g in 0.82..1.22
    blur: float = 0.0  # Gaussian blur, sigma uniform in [0, blur] pixels of the 96 px patch (at most 1.5)
    rotate: float = 0.0  # small rotations, uniform in [-rotate, rotate] degrees, reflected corners (at most 45)
    erase: float = 0.0  # probability of erasing one rectangle (2-10 % of the patch, never the labelled centre)

    def __post_init__(self) -> None:
        limits = {"color": 1.0, "hue": 0.5, "stain": 1.0, "gamma": 1.0, "blur": 1.5, "rotate": 45.0, "erase": 1.0}
        for key, hi in limits.items():
            v = getattr(self, key)
            if not 0.0 <= v <= hi:
                raise ConfigError(f"augment.{key} must be in [0, {hi}], got {v}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"augment.crop_scale must be in (0, 1], got {self.crop_scale}")

    @property
    def is_identity(self) -> bool:
        jitter = (self.color, self.hue, self.stain, self.gamma, self.blur, self.rotate, self.erase)
        return not self.dihedral and not any(jitter) and self.crop_scale >= 1


@dataclass
class TrainConfig:
    model: str = _opt(DEFAULT_MODEL, "Any timm model name.")  # small ImageNet CNNs do well on 96 px tissue
    # ImageNet weights: the largest single gain on 220k small patches
    pretrained: bool = _opt(True, "Start from ImageNet weights (Hugging Face hub).")
    # for offline Kaggle kernels
    weights: str | None = _opt(None, "Local pretrained weights file for offline use (implies --pretrained).")
    pseudo: str | None = _opt(
        None,
        "Pseudo-label file (`hcd pseudo`): its test patches join every fold's training part, never a validation part.",
    )
    drop_rate: float = _opt(0.0, "Dropout before the head, in [0, 1).")
    drop_path: float = _opt(0.0, "Stochastic depth rate (timm drop_path_rate), in [0, 1).")
    # fine-tuning large pretrained backbones (pathology foundation ViTs): see training/finetune.py
    layer_decay: float = _opt(
        1.0,
        "Layer-wise LR decay d: the head trains at lr, the last block at lr x d, the one "
        "before at lr x d^2, and so on (block i of 0..n-1: d^(n - i)); 1 = off, "
        "0.65-0.85 suits pretrained ViTs. In (0, 1].",
    )
    train_blocks: int = _opt(
        0,
        "Train only the last K blocks (timm's layer groups: ViT blocks, CNN stage blocks) "
        "plus the final norm and the head; the rest stays frozen. 0 = train all.",
    )
    lora: int = _opt(
        0,
        "LoRA rank: low-rank adapters on the blocks' linear layers (qkv, proj, fc1, fc2), the "
        "backbone frozen, the head trained; best.pt keeps the merged weights. 0 = off. Needs peft: "
        'pip install "hcd-kit[lora]".',
    )
    grad_ckpt: bool = _opt(
        False,
        "Gradient checkpointing: recompute activations in the backward pass; much less "
        "GPU memory for large ViTs, about 30% slower.",
    )
    # 96 keeps T4 throughput, 128-192 can add AUC for more time
    img_size: int = _opt(
        96,
        "Upscale the 96 px patches to this size on the device; a foundation model "
        "(`hcd models`) defaults to its own input size, e.g. 224.",
    )
    epochs: int = _opt(8, "Epochs per fold.")
    time_budget: str | None = _opt(
        None,
        "Wall-clock budget for every fold + the TTA x8 prediction, e.g. 11h, 1h30m, "
        "90m: measures this machine first, trains fewer epochs if needed, stops "
        "a fold early if still late (--plan shows the plan).",
    )
    batch_size: int = _opt(128, "Batch size per process (x ranks under ddp).")
    # no gradients at validation, so twice the batch fits
    val_batch_size: int = _opt(0, "Validation batch size; 0 = 2 x batch size.")
    lr: float = _opt(1e-3, "Peak learning rate (AdamW; use ~0.05 for sgd).")
    weight_decay: float = _opt(1e-2, "Weight decay (not applied to biases and norm weights).")
    optimizer: Optimizer = _opt("adamw", "adamw, or sgd (Nesterov momentum).")
    momentum: float = _opt(0.9, "SGD momentum (sgd only).")
    schedule: Schedule = _opt("onecycle", "Per-step LR schedule: onecycle, or cosine with a linear warm-up.")
    # a short warm-up keeps early fp16 steps from blowing up
    warmup_epochs: float = _opt(0.5, "Warm-up length in epochs.")
    # caps the rare huge step that turns into NaN
    grad_clip: float = _opt(2.0, "Max gradient norm; 0 = off.")
    ema: bool = _opt(False, "Validate and save an exponential moving average (EMA) of the weights.")
    ema_decay: float = _opt(0.999, "EMA decay, in (0, 1).")
    swa_epochs: int = _opt(
        0, "Stochastic weight averaging: validate and save the mean of the weights of the last N epochs; 0 = off."
    )
    label_smoothing: float = _opt(0.0, "Label smoothing: targets become y (1 - e) + e/2, e in [0, 0.5).")
    mixup: float = _opt(0.0, "Mixup Beta(a, a) strength a: each image is blended with another of the batch; 0 = off.")
    patience: int = _opt(0, "Stop a fold after N epochs without a better val AUC; 0 = never.")
    # train is ~40% positive: the imbalance is mild
    imbalance: Imbalance = _opt("none", "none, pos-weight (BCE weight neg/pos) or balanced (50/50 resampling).")
    precision: Precision = _opt("auto", PRECISION_HELP)
    strategy: Strategy = _opt(
        "auto",
        "auto (dp on 2+ GPUs), single, dp (DataParallel), ddp (under torchrun) "
        "or fold-parallel (one fold per device at a time).",
    )
    device: str = _opt("auto", DEVICE_HELP)
    seed: int = _opt(0, "Seed for weight init, shuffling and augmentation.")
    max_bad_steps: int = _opt(50, "Consecutive non-finite steps before a fold is stopped.")
    threads: int = _opt(0, "CPU threads for torch; 0 = cores / processes.")
    fold_workers: int = _opt(0, "Fold-parallel workers; 0 = one per GPU (2 on the CPU).")
    tracker: Tracker = _opt(
        "none",
        "Experiment tracker: none, tensorboard (RUN/tb), wandb (offline unless WANDB_MODE "
        "is set; RUN/wandb) or mlflow (RUN/mlruns unless MLFLOW_TRACKING_URI is set); "
        'each needs its extra, e.g. pip install "hcd-kit[tensorboard]".',
    )
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # a [augment] table in the config file
    recipe: str | None = None  # the recipe the run started from (`hcd train --recipe`), for the record

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "max_bad_steps"):
            _require(key, getattr(self, key) >= 1, "must be >= 1", getattr(self, key))
        _require("img_size", self.img_size >= MIN_IMG_SIZE, f"must be >= {MIN_IMG_SIZE}", self.img_size)
        for key in (
            "patience",
            "val_batch_size",
            "threads",
            "fold_workers",
            "warmup_epochs",
            "grad_clip",
            "seed",
            "weight_decay",
            "momentum",
            "train_blocks",
            "lora",
            "swa_epochs",
        ):
            _require(key, getattr(self, key) >= 0, "must be >= 0", getattr(self, key))
        _require("lr", self.lr > 0, "must be positive", self.lr)
        _require("drop_rate", 0 <= self.drop_rate < 1, "must be in [0, 1)", self.drop_rate)
        _require("drop_path", 0 <= self.drop_path < 1, "must be in [0, 1)", self.drop_path)
        _require("layer_decay", 0 < self.layer_decay <= 1, "must be in (0, 1]", self.layer_decay)
        if self.lora and self.train_blocks:
            raise ConfigError(
                "--lora and --train-blocks cannot be combined: LoRA already freezes every block and "
                "adapts them all; choose one"
            )
        _require("label_smoothing", 0 <= self.label_smoothing < 0.5, "must be in [0, 0.5)", self.label_smoothing)
        _require("mixup", self.mixup >= 0, "must be >= 0", self.mixup)
        if self.time_budget is not None:
            parse_duration(self.time_budget)  # 11h, 1h30m, 90s, 5400; a one-line error otherwise
        _require("ema_decay", 0 < self.ema_decay < 1, "must be in (0, 1)", self.ema_decay)
        if self.ema and self.swa_epochs:
            raise ConfigError("--ema and --swa-epochs both average the weights; choose one")
        for key, choices in (
            ("optimizer", Optimizer),
            ("schedule", Schedule),
            ("imbalance", Imbalance),
            ("precision", Precision),
            ("strategy", Strategy),
            ("tracker", Tracker),
        ):
            check_choice(flag(key), getattr(self, key), choices)


def _require(key: str, ok: bool, rule: str, value) -> None:
    if not ok:
        raise ConfigError(f"{flag(key)} {rule}, got {value}")
