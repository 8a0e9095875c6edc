"""Fine-tuning large backbones: --layer-decay, --train-blocks, --lora, --grad-ckpt, and the foundation
models' default --img-size.

The model is timm's ``test_vit`` (6 blocks, width 64, dynamic image size: it takes 32 px input), so every
check here exercises a real timm ViT with its real layer grouping in well under a second per step.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import dev_extra, packed_subset
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.errors import ConfigError
from hcd_kit.layout import RunLayout
from hcd_kit.training import Env, Hooks, TrainConfig, build_trainer, load_checkpoint, resolve_config, train, train_step
from hcd_kit.training.finetune import layer_ids, prepare_model, trainable_summary

VIT, N_BLOCKS = "test_vit", 6
CPU = Env(torch.device("cpu"), None)
FAST = [
    "--device",
    "cpu",
    "--no-pretrained",
    "--img-size",
    "32",
    "--threads",
    "1",
    "--batch-size",
    "16",
    "--precision",
    "fp32",
]


def cfg_of(**kw) -> TrainConfig:
    base = dict(
        model=VIT,
        pretrained=False,
        device="cpu",
        img_size=32,
        threads=1,
        batch_size=8,
        epochs=1,
        lr=1e-2,
        precision="fp32",
    )
    return TrainConfig(**{**base, **kw})


def trainer(**kw):
    torch.manual_seed(0)
    return build_trainer(cfg_of(**kw), steps_per_epoch=10, train_labels=np.array([0, 1]), env=CPU)


def batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.tensor([0.0, 1.0] * (n // 2))


def lr_of(optimizer) -> dict[int, float]:
    """Each parameter's peak lr (the schedule's base: ``initial_lr``, which LambdaLR multiplies)."""
    return {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}


# ------------------------------------------------------------------------------------------ --layer-decay


def test_layer_decay_gives_block_i_of_n_decay_to_the_n_minus_i_and_the_schedule_keeps_the_ratio():
    t = trainer(layer_decay=0.5, weight_decay=0.05)
    lrs, names = lr_of(t.optimizer), dict(t.model.named_parameters())
    expected = {
        "head.weight": 1.0,
        "norm.weight": 0.5,
        "cls_token": 0.5 ** (N_BLOCKS + 1),
        "patch_embed.proj.weight": 0.5 ** (N_BLOCKS + 1),
    }
    for i in range(N_BLOCKS):  # block i of n at decay^(n - i)
        expected[f"blocks.{i}.attn.qkv.weight"] = expected[f"blocks.{i}.norm1.bias"] = 0.5 ** (N_BLOCKS - i)
    for name, scale in expected.items():
        assert lrs[id(names[name])] == pytest.approx(1e-2 * scale), name
    assert len(lrs) == len(names)  # every parameter, once
    for g in t.optimizer.param_groups:  # no weight decay on 1-d tensors (biases, norm scales)
        assert g["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in g["params"]) else 0.05)
    assert t.optimizer.param_groups[0]["initial_lr"] == 1e-2  # the loop logs group 0's lr: the head's

    ratio = [g["lr"] / t.optimizer.param_groups[0]["lr"] for g in t.optimizer.param_groups]
    assert ratio == pytest.approx([g["initial_lr"] / 1e-2 for g in t.optimizer.param_groups])
    start = t.optimizer.param_groups[0]["lr"]
    for _ in range(4):
        t.optimizer.step()
        t.scheduler.step()
    assert t.optimizer.param_groups[0]["lr"] > 2 * start  # the schedule moved (one-cycle warm-up) ...
    assert [g["lr"] / t.optimizer.param_groups[0]["lr"] for g in t.optimizer.param_groups] == pytest.approx(ratio)


def test_no_layer_decay_keeps_the_two_plain_groups():
    t = trainer()
    assert [g["initial_lr"] for g in t.optimizer.param_groups] == [1e-2, 1e-2]


# ------------------------------------------------------------------------------------------ --train-blocks


def test_train_blocks_trains_only_the_last_k_blocks_the_norm_and_the_head():
    t = trainer(train_blocks=2)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    assert train_step(t, *batch(), CPU, grad_clip=0) is not None
    trained = re.compile(r"^(blocks\.[45]\.|norm\.|head\.)")
    for name, p in t.model.named_parameters():
        if trained.match(name):
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
            assert torch.equal(p, before[name]), name  # frozen: unchanged by the step
    assert not torch.equal(t.model.head.weight, before["head.weight"])
    assert not torch.equal(t.model.blocks[4].attn.qkv.weight, before["blocks.4.attn.qkv.weight"])
    opt_params = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in t.model.parameters() if p.requires_grad}


def test_train_blocks_uses_timm_grouping_for_cnns_too():
    model = prepare_model(_create("test_resnet"), cfg_of(model="test_resnet", train_blocks=1))
    layers = layer_ids(model)
    last = max(layers.values()) - 1
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, depth in layers.items() if depth >= last
    }
    assert any(n.startswith("layer4.") for n, p in model.named_parameters() if p.requires_grad)
    assert not any(n.startswith("layer3.") for n, p in model.named_parameters() if p.requires_grad)


def test_train_blocks_beyond_the_block_count_names_the_count():
    with pytest.raises(ConfigError, match=rf"^--train-blocks 7: {VIT} has {N_BLOCKS} blocks; use 1-{N_BLOCKS}"):
        trainer(train_blocks=7)


# ------------------------------------------------------------------------------------------ --lora


def test_lora_trains_adapters_head_and_norm_only():
    dev_extra("peft")
    t = trainer(lora=4)
    total = sum(p.numel() for p in t.model.parameters())
    trained = {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for n, p in t.model.named_parameters() if n in trained) < 0.1 * total
    assert all("lora_" in n or re.search(r"\.(head|norm)\.", n) for n in trained), sorted(trained)
    adapted = {n.split(".lora_A")[0].rpartition(".")[2] for n in trained if ".lora_A." in n}
    assert adapted == {"qkv", "proj", "fc1", "fc2"}
    assert sum(".lora_A." in n for n in trained) == 4 * N_BLOCKS  # every block, not the patch embedding
    assert trainable_summary(t.model, cfg_of(lora=4)).startswith(
        f"trainable 21.7k of {total / 1e6:.1f}M parameters (LoRA r=4)"
    )


def test_lora_with_layer_decay_gives_each_blocks_adapters_its_lr():
    dev_extra("peft")
    t = trainer(lora=4, layer_decay=0.5)
    lrs, named = lr_of(t.optimizer), dict(t.model.named_parameters())
    assert set(lrs) == {id(p) for p in named.values() if p.requires_grad}  # trainable ones only, all of them
    for i in range(N_BLOCKS):
        p = named[f"base_model.model.blocks.{i}.mlp.fc1.lora_A.default.weight"]
        assert lrs[id(p)] == pytest.approx(1e-2 * 0.5 ** (N_BLOCKS - i))
    assert lrs[id(named["base_model.model.head.weight"])] == pytest.approx(1e-2)


def _stop(fold, epoch):
    raise KeyboardInterrupt


def test_lora_cli_run_saves_merged_weights_that_predict_loads_strictly(lora_data, tmp_path):
    dev_extra("peft")
    from hcd_kit.inference.runs import load_fold_model
    from hcd_kit.runs.model import read_run_model

    run = tmp_path / "run"
    res = invoke(
        "--data-dir", lora_data, "--model", VIT, "--lora", 4, "--fold", 0, "--epochs", 1, "--run-dir", run, *FAST
    )
    assert res.exit_code == 0, res.output
    best = torch.load(RunLayout.of(run).best(0), weights_only=True)
    assert not any("lora" in k or "base_layer" in k for k in best)
    spec = read_run_model(run)
    assert (spec.model, spec.img_size) == (VIT, 32)
    load_fold_model(run, 0, spec, torch.device("cpu"))  # strict: no missing or unexpected keys

    # the trained, still wrapped model, from last.pt: kept by a fold stopped after its first epoch (a finished fold
    # keeps none), whose best.pt is that epoch's
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg_of(lora=4, epochs=2), lora_data, cut, folds=[0], hooks=Hooks(epoch_end=_stop))
    loaded = load_fold_model(cut, 0, read_run_model(cut), torch.device("cpu"))
    t = build_trainer(cfg_of(lora=4), 1, np.array([0, 1]), CPU)
    load_checkpoint(RunLayout.of(cut).last(0), t)
    lora_b = [p for n, p in t.model.named_parameters() if ".lora_B." in n]
    assert any(p.abs().max() > 0 for p in lora_b)  # the adapters trained: merging them changes the weights
    x, _ = batch(8, seed=3)
    with torch.no_grad():
        assert torch.allclose(loaded(x), t.model.eval()(x), atol=1e-5)
    assert "base_model.model.head.weight" in t.model.state_dict()  # last.pt keeps the wrapped state


def test_lora_fold_resumes_exactly(lora_data, tmp_path):
    dev_extra("peft")
    cfg = cfg_of(lora=4, epochs=2, batch_size=16, ema=True)
    train(cfg, lora_data, tmp_path / "full", folds=[0])

    def stop_after_first(fold, epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, lora_data, tmp_path / "cut", folds=[0], hooks=Hooks(epoch_end=stop_after_first))
    res = invoke("--data-dir", lora_data, "--run-dir", tmp_path / "cut", "--resume")
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 1" in res.output
    a = torch.load(tmp_path / "full/fold0/best.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/fold0/best.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    history = pd.read_csv(tmp_path / "cut/fold0/history.csv")
    assert list(history["epoch"]) == [1, 2]


def test_lora_on_a_cnn_suggests_train_blocks():
    dev_extra("peft")
    with pytest.raises(ConfigError, match=r"^--lora: test_resnet has no transformer linear layers .*--train-blocks"):
        trainer(model="test_resnet", lora=4)


def test_lora_without_peft_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(ConfigError, match=r'^--lora needs the peft package: pip install "hcd-kit\[lora\]"$'):
        trainer(lora=4)


# ------------------------------------------------------------------------------------------ --grad-ckpt


@pytest.mark.parametrize("lora", [0, pytest.param(4, id="lora")])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(lora):
    if lora:
        dev_extra("peft")
    x, y = batch(4)
    out = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = prepare_model(_create(VIT), cfg_of(lora=lora, grad_ckpt=ckpt)).train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss.backward()
        out.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss_a, grads_a), (loss_b, grads_b) = out
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert grads_a.keys() == grads_b.keys() and all(g is not None for g in grads_b.values())
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)
    assert (model.get_base_model() if lora else model).grad_checkpointing  # it was on in the second run


def test_grad_checkpointing_without_support_is_one_line():
    with pytest.raises(ConfigError, match=r"^--grad-ckpt: plain does not support gradient checkpointing"):
        prepare_model(torch.nn.Linear(2, 1), cfg_of(model="plain", grad_ckpt=True))


# ------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(lora=4, train_blocks=2), r"^--lora and --train-blocks cannot be combined: LoRA already freezes"),
        (dict(layer_decay=0.0), r"^--layer-decay must be in \(0, 1\], got 0.0$"),
        (dict(layer_decay=1.5), r"^--layer-decay must be in \(0, 1\], got 1.5$"),
        (dict(train_blocks=-1), r"^--train-blocks must be >= 0, got -1$"),
        (dict(lora=-2), r"^--lora must be >= 0, got -2$"),
    ],
)
def test_bad_settings_are_one_line(kw, message):
    with pytest.raises(ConfigError, match=message):
        cfg_of(**kw)


def test_foundation_models_default_to_their_input_size(tmp_path, capsys):
    cfg, _ = resolve_config(None, {"model": "kaiko-vits16", "device": "cpu"}, tmp_path / "a", resume=False)
    assert cfg.img_size == 224  # the cpu recipe's img_size does not count
    note = "note: --img-size 224 (kaiko-vits16's input size; patches are upscaled on the device)"
    assert note in capsys.readouterr().out

    cfg, _ = resolve_config(None, {"model": "kaiko-vits16", "device": "cpu", "img_size": 96}, tmp_path / "b", False)
    assert cfg.img_size == 96 and "--img-size" not in capsys.readouterr().out  # a flag wins
    toml = tmp_path / "train.toml"
    toml.write_text('model = "kaiko-vits16"\nimg_size = 128\n')
    assert resolve_config(toml, {"device": "cpu"}, tmp_path / "c", resume=False)[0].img_size == 128  # so does a file
    assert resolve_config(None, {"device": "cpu"}, tmp_path / "d", resume=False)[0].img_size != 224  # a timm CNN

    capsys.readouterr()
    run = tmp_path / "run"  # resume keeps the run's recorded size
    run.mkdir()
    (run / "config.toml").write_text('model = "kaiko-vits16"\nimg_size = 96\n')
    assert resolve_config(None, {}, run, resume=True)[0].img_size == 96
    assert "note" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def lora_data(sample_root, tmp_path_factory):
    """64 of the shipped real patches, packed, in 2 folds: a fold trains on 32 images (2 batches of 16)."""
    root = packed_subset(sample_root, tmp_path_factory.mktemp("finetune") / "data", n_train=64, n_test=4)
    return root


def invoke(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def _create(name: str):
    from hcd_kit.model import create_model

    return create_model(name)
