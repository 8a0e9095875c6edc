"""`hcd weights export RUN --fold K --out DIR`: a fold of a run as a timm local-dir: folder that rebuilds the fold's
network exactly (its logit, and its pooled features with num_classes=0, as `hcd embed` takes them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hcd_kit.backbones import registry
from hcd_kit.cli import app
from hcd_kit.config import dumps_toml
from hcd_kit.inference.runs import load_fold_model
from hcd_kit.model import create_model, save_weights
from hcd_kit.runs.model import read_run_model

runner = CliRunner()
TINY = "tiny-path"  # a registry entry at tiny width: what uni or uni2-h are, with classes in its kwargs
TINY_ENTRY = registry.Entry(
    name=TINY,
    hub="someone/tiny-path",
    architecture="vit_small_patch16_224",
    kwargs={
        "img_size": 32,
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "init_values": 1e-5,
        "reg_tokens": 2,
        "no_embed_class": True,
        "mlp_layer": "py:timm.layers.SwiGLUPacked",
        "act_layer": "py:torch.nn.SiLU",
        "dynamic_img_size": True,
    },
    input_size=32,
    features=32,
    mean=(0.7, 0.6, 0.7),
    std=(0.2, 0.25, 0.2),
    licence="CC-BY-NC-ND-4.0",
    gated=True,
)


@pytest.fixture
def tiny_registry(monkeypatch):
    """The packaged registry plus TINY (in this process only)."""
    packaged = registry._registry()
    monkeypatch.setattr(registry, "_registry", lambda: {**packaged, TINY: TINY_ENTRY})


def make_run(run: Path, model: str = "test_resnet", img_size: int = 32, folds=(0, 1)) -> Path:
    """A run folder as `hcd train` leaves it: config.toml, folds.csv (fold 0: 4 ids, fold 1: 6), fold*/best.pt."""
    run.mkdir(parents=True)
    (run / "config.toml").write_text(dumps_toml({"model": model, "img_size": img_size, "seed": 0}))
    pd.DataFrame({"id": [f"p{i:02d}" for i in range(10)], "fold": [0] * 4 + [1] * 6}).to_csv(
        run / "folds.csv", index=False
    )
    for k in folds:
        torch.manual_seed(100 + k)
        net = create_model(model)
        with torch.no_grad():  # not an initialisation's zeros: the exported numbers must be the fold's own
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        save_weights(net, run / f"fold{k}" / "best.pt")
    return run


def export(*args) -> object:
    return runner.invoke(app, ["weights", "export", *map(str, args)])


def check_reload(run: Path, fold: int, out: Path, img_size: int) -> None:
    """local-dir:OUT gives the fold's logits exactly, and with num_classes=0 its pooled features."""
    fold_net = load_fold_model(run, fold, read_run_model(run), torch.device("cpu"))
    x = torch.randn(3, 3, img_size, img_size)
    logit = create_model(f"local-dir:{out}", pretrained=True, num_classes=1).eval()
    features = create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
    pooled = copy.deepcopy(fold_net)
    pooled.reset_classifier(0)  # keeps the re-normalisation hook, drops the head
    with torch.no_grad():
        assert torch.equal(logit(x), fold_net(x))
        assert torch.equal(features(x), pooled(x)) and features(x).shape[1] == pooled.num_features


def test_export_reloads_exactly_as_a_local_dir_model(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "exports" / "r-fold1"
    r = export(run, "--fold", 1, "--out", out)
    assert r.exit_code == 0, r.output
    assert f"exported fold 1 of {run} (test_resnet, 32 px, trained on 4 patches)" in r.stdout
    assert f"hcd embed --model local-dir:{out}" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in out.parent.iterdir()] == ["r-fold1"]  # no temporary sibling left
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 1
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert cfg["pretrained_cfg"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert cfg["hcd"] == {
        "registry": None,
        "model_kwargs": {},
        "source_model": "test_resnet",
        "run": str(run.resolve()),
        "fold": 1,
        "img_size": 32,
        "train_patches": 4,
        "licence": None,
        "written_by": "hcd weights export",
    }
    check_reload(run, 1, out, 32)
    import timm  # timm alone loads it too, head included

    state = torch.load(run / "fold1" / "best.pt", weights_only=True)
    plain = timm.create_model(f"local-dir:{out}", pretrained=True).state_dict()
    assert plain.keys() == state.keys() and all(plain[k].equal(state[k]) for k in state)


def test_export_refuses_a_folder_with_files_unless_force(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "out"
    assert export(run, "--fold", 0, "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = export(run, "--fold", 1, "--out", out)
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"--out {out} already holds files; pass --force" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = export(run, "--fold", 1, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["hcd"]["fold"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # the old copy is gone, no temporaries
    check_reload(run, 1, out, 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(run, "--fold", 0, "--out", empty).exit_code == 0  # an empty folder is no data to lose
    assert (empty / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args, code, says",
    [
        (("--fold", 3), 1, "no best.pt for fold(s) [3]"),
        (("--fold", 0, "--out-is-file"), 1, "is a file; name a folder"),
    ],
)
def test_export_refusals_are_one_line(tmp_path, args, code, says):
    run = make_run(tmp_path / "run", folds=(0,))
    out = tmp_path / "out"
    if "--out-is-file" in args:
        out.write_text("x")
        args = args[:-1]
    r = export(run, *args, "--out", out)
    assert r.exit_code == code, r.output
    (line,) = r.stderr.strip().splitlines()
    assert says in line, line
    assert not (tmp_path / "out").is_dir() and len(list(tmp_path.iterdir())) == 1 + out.is_file()


def test_export_of_a_registry_model_keeps_its_kwargs_and_normalisation(tmp_path, tiny_registry):
    run = make_run(tmp_path / "run", model=TINY, img_size=32, folds=(0,))
    out = tmp_path / "tiny-fold0"
    r = export(run, "--fold", 0, "--out", out)
    assert r.exit_code == 0, r.output
    assert "trained on 6 patches" in r.stdout and "under CC-BY-NC-ND-4.0" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "vit_small_patch16_224"
    hcd = cfg["hcd"]
    assert hcd["registry"] == TINY and hcd["source_model"] == TINY and hcd["licence"] == "CC-BY-NC-ND-4.0"
    assert hcd["model_kwargs"]["mlp_layer"] == "py:timm.layers.SwiGLUPacked"  # the class, written back as a name
    assert hcd["model_kwargs"]["act_layer"] == "py:torch.nn.SiLU"
    assert cfg["model_args"]["embed_dim"] == 32 and cfg["model_args"]["mlp_layer"] == "py:timm.layers.SwiGLUPacked"
    assert cfg["pretrained_cfg"]["mean"] == pytest.approx([0.7, 0.6, 0.7])  # what the weights expect
    assert cfg["pretrained_cfg"]["std"] == pytest.approx([0.2, 0.25, 0.2])
    assert cfg["pretrained_cfg"]["license"] == "CC-BY-NC-ND-4.0"
    check_reload(run, 0, out, 32)


def test_hcd_embed_takes_the_export(tmp_path, subset_factory):
    """`hcd embed --model local-dir:DIR`: the export's pooled features, at the run's img_size (its config says)."""
    import numpy as np

    run = make_run(tmp_path / "run", folds=(0,))
    out = tmp_path / "export"
    assert export(run, "--fold", 0, "--out", out).exit_code == 0
    data = subset_factory(n_train=8, n_test=4)
    feats = tmp_path / "features"
    r = runner.invoke(
        app,
        [
            "embed",
            "--data-dir",
            str(data),
            "--model",
            f"local-dir:{out}",
            "--out",
            str(feats),
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "at 32 px" in r.stdout
    stored = np.load(feats / "train_features.npy")
    assert stored.shape[0] == 8 and stored.shape[-1] == create_model("test_resnet", num_classes=0).num_features
