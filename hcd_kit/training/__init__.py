"""Training: cross-validated, resumable training of a timm backbone on the packed store.

    from hcd_kit.training import TrainConfig, train
    train(TrainConfig(model="resnet18", epochs=8), "data", "runs/r18", folds="all")
"""

from hcd_kit.training.augment import AugmentConfig, augment_batch
from hcd_kit.training.loop import FoldResult, Hooks, TrainConfig, resolve_config, train

__all__ = ["AugmentConfig", "FoldResult", "Hooks", "TrainConfig", "augment_batch", "resolve_config", "train"]
