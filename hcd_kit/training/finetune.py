"""Fine-tuning large pretrained backbones: what of the model trains, at which learning rate, in how much memory.

Four ``TrainConfig`` settings, all off by default, shape a fold's model before its optimiser is built:

* ``train_blocks`` K: only the last K blocks (and the final norm, which timm groups with the last block) and
  the head train; everything before them is frozen (``requires_grad`` off, so the optimiser never sees it).
* ``lora`` r: LoRA adapters (peft) of rank r on the blocks' linear layers (timm's ``qkv``, ``proj``, ``fc1``,
  ``fc2``); the backbone is frozen, the head and the final norm train fully. ``hcd_kit.model.save_weights``
  folds the adapters into the base weights, so ``best.pt`` stays a plain timm state dict.
* ``layer_decay`` d < 1: layer-wise learning-rate decay, through timm's own layer grouping
  (``param_groups_layer_decay``): the head trains at ``lr``, the last block at ``lr x d``, the one before at
  ``lr x d^2``, down to the stem. Each group carries its own ``lr``, so the per-step schedules (``LambdaLR``,
  which scales every group's base lr) keep the ratios.
* ``grad_ckpt``: timm's ``set_grad_checkpointing`` (activations recomputed in the backward pass).

Blocks are timm's layer groups (``group_matcher(coarse=False)``, as timm's layer decay uses them): group 0 is
the stem, the last group the head, the ones between are the blocks, for ViTs and CNNs alike.

    model = prepare_model(create_model("uni", pretrained=True), cfg)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, groups=param_groups(model, cfg))
    log(trainable_summary(model, cfg))   # "trainable 1.2M of 303.4M parameters (LoRA r=8)"
"""

from __future__ import annotations

from torch import nn

from hcd_kit.errors import ConfigError
from hcd_kit.training.config import TrainConfig
from hcd_kit.training.optim import param_groups as plain_groups

LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # timm's ViT block linears (attention and MLP, SwiGLU included)
FINAL_NORMS = ("norm", "fc_norm", "head_norm")  # trained fully with LoRA, like the head


def prepare_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """``model`` set up as ``cfg`` asks: checkpointing on, blocks frozen, or wrapped with LoRA adapters."""
    if cfg.grad_ckpt:
        _grad_checkpointing(model, cfg.model)
    if cfg.train_blocks:
        layers = layer_ids(model)
        head = max(layers.values())
        n_blocks = head - 1
        if cfg.train_blocks > n_blocks:
            raise ConfigError(
                f"--train-blocks {cfg.train_blocks}: {cfg.model} has {n_blocks} blocks; use 1-{n_blocks} (0 trains all)"
            )
        for name, p in model.named_parameters():
            p.requires_grad_(layers.get(name, head) >= head - cfg.train_blocks)
    if cfg.lora:
        model = _add_lora(model, cfg.lora, cfg.model)
    return model


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimiser's groups: trainable parameters only, no weight decay on 1-d tensors (biases, norm scales),
    and with ``layer_decay`` < 1 one group per layer and decay class with its own ``lr`` (head's first)."""
    if cfg.layer_decay >= 1:
        return plain_groups(model, cfg.weight_decay)
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(base_model(model), cfg.weight_decay, layer_decay=cfg.layer_decay)
    for g in groups:
        g["lr"] = cfg.lr * g.pop("lr_scale")
    # the full-lr group first: the loop logs param_groups[0]'s lr as the run's lr
    return sorted((g for g in groups if g["params"]), key=lambda g: -g["lr"])


def trainable_summary(model: nn.Module, cfg: TrainConfig) -> str:
    """One line for the log: "trainable 1.2M of 22.0M parameters (LoRA r=8)"."""
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    how = [f"LoRA r={cfg.lora}"] if cfg.lora else []
    how += [f"last {cfg.train_blocks} blocks"] if cfg.train_blocks else []
    how += [f"layer decay {cfg.layer_decay:g}"] if cfg.layer_decay < 1 else []
    how += ["gradient checkpointing"] if cfg.grad_ckpt else []
    extra = f" ({', '.join(how)})" if how else ""
    return f"trainable {_millions(trained)} of {_millions(sum(p.numel() for p in params))} parameters{extra}"


def base_model(model: nn.Module) -> nn.Module:
    """The timm model inside DataParallel / DDP and a peft LoRA wrapper (its names are timm's)."""
    model = getattr(model, "module", model)
    get = getattr(type(model), "get_base_model", None)  # peft.PeftModel; not through its attribute forwarding
    return get(model) if get is not None else model


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name -> timm layer group: 0 the stem, 1..n the blocks, n + 1 the head (as timm's layer decay)."""
    from timm.models import group_parameters
    from timm.optim._param_groups import auto_group_layers

    model = base_model(model)
    if hasattr(model, "group_matcher"):
        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    return auto_group_layers(model)


def _grad_checkpointing(model: nn.Module, name: str) -> None:
    setter = getattr(model, "set_grad_checkpointing", None)
    try:
        if setter is None:
            raise NotImplementedError
        setter(True)
    except (AssertionError, NotImplementedError, RuntimeError, TypeError):
        raise ConfigError(
            f"--grad-ckpt: {name} does not support gradient checkpointing; "
            "drop the flag (or lower --batch-size to save memory)"
        ) from None


def _add_lora(model: nn.Module, rank: int, name: str) -> nn.Module:
    try:
        import peft
    except ImportError:
        raise ConfigError('--lora needs the peft package: pip install "hcd-kit[lora]"') from None
    layers = layer_ids(model)
    head = max(layers.values())
    in_blocks = {n.rpartition(".")[0] for n, layer in layers.items() if 0 < layer < head}
    targets = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n.rpartition(".")[2] in LORA_TARGETS and n in in_blocks
    ]
    if not targets:
        raise ConfigError(
            f"--lora: {name} has no transformer linear layers ({', '.join(LORA_TARGETS)}) to adapt; "
            "use --train-blocks K to fine-tune the last K blocks of a CNN"
        )
    config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets)
    wrapped = peft.get_peft_model(model, config)  # freezes everything but the adapters
    for n, p in model.named_parameters():  # the new head (and the final norm) train fully
        if layers.get(n) == head or n.partition(".")[0] in FINAL_NORMS:  # adapted layers' names are new
            p.requires_grad_(True)
    return wrapped


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"
