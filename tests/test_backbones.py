"""The foundation-model registry and what --model may name: every entry's arguments reach timm and build the
published architecture, registry weights come from the hub cache, offline failures are one line without waiting
on the network, and the weights' own normalisation is applied inside the model.

Hub cases run in a fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when first imported.
"Without waiting on the network" is counted, not timed: an audit hook in that interpreter records every name
lookup and connection any library attempts, so the tests hold on a slow machine as on a fast one.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import hub_snapshot, save_timm

from hcd_kit.backbones import entries, get_entry, resolve
from hcd_kit.backbones.registry import import_kwargs, symbolic_kwargs
from hcd_kit.cli import main
from hcd_kit.errors import ConfigError
from hcd_kit.model import create_model, input_normalisation
from hcd_kit.preprocess import IMAGENET_MEAN, IMAGENET_STD

ENTRIES = entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_entry_builds_its_published_architecture(entry):
    """Built at full size on the meta device (no memory): the parameter count is the published one and the
    pooled feature length is the registry's."""
    with torch.device("meta"):
        model = timm.create_model(entry.architecture, pretrained=False, num_classes=0, **import_kwargs(entry.kwargs))
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert (
        abs(params_m - entry.params_m) / entry.params_m < 0.02
    )  # published sizes are rounded, (params_m, entry.params_m)
    assert model.num_features * (2 if entry.pool == "cls+mean" else 1) == entry.features


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_registry_argument_reaches_timm(entry):
    """At tiny width (2 blocks of 32 dims), each kwarg the registry names is visible on the built model."""
    kwargs = {**import_kwargs(entry.kwargs), "embed_dim": 32, "depth": 2, "num_heads": 2}
    model = timm.create_model(entry.architecture, pretrained=False, num_classes=1, **kwargs)
    block = model.blocks[0]
    for key, value in kwargs.items():
        if key == "init_values":
            assert block.ls1.gamma.shape == (32,) and torch.allclose(block.ls1.gamma, torch.full((32,), value))
        elif key == "reg_tokens":
            assert model.num_reg_tokens == value
        elif key == "no_embed_class":
            assert model.no_embed_class is value
        elif key == "dynamic_img_size":
            assert model.dynamic_img_size is value
        elif key == "patch_size":
            assert model.patch_embed.patch_size == (value, value)
        elif key == "img_size":
            assert model.patch_embed.img_size == (value, value)
        elif key == "mlp_layer":
            assert type(block.mlp).__name__ == "GluMlp" and isinstance(block.mlp.act, torch.nn.SiLU)
        elif key == "act_layer":
            assert isinstance(block.mlp.act, value)
        elif key == "mlp_ratio":
            assert block.mlp.fc1.out_features == int(32 * value)  # a GluMlp splits it into value and gate
        elif key == "global_pool":
            assert model.global_pool == value
    x = torch.zeros(1, 3, entry.input_size, entry.input_size)
    assert model(x).shape == (1, 1)


def test_symbolic_kwargs_round_trip():
    entry = get_entry("uni2-h")
    assert import_kwargs(symbolic_kwargs(import_kwargs(entry.kwargs), entry)) == import_kwargs(entry.kwargs)
    json.dumps(symbolic_kwargs(import_kwargs(entry.kwargs), entry))


def test_resolve_names_every_kind(tmp_path):
    assert resolve("resnet18").kind == "timm" and not resolve("resnet18").renormalise
    uni = resolve("UNI")
    assert (uni.kind, uni.name, uni.hub_id, uni.input_size) == (
        "registry",
        "vit_large_patch16_224",
        "MahmoodLab/uni",
        224,
    )
    assert resolve("hf-hub:bioptimus/H-optimus-0").entry.name == "h-optimus-0"  # the registry knows the id
    assert resolve("hf-hub:someone/else").entry is None
    with pytest.raises(ConfigError, match="no config.json"):
        resolve(f"local-dir:{tmp_path}")
    with pytest.raises(ConfigError, match="no such folder"):
        resolve(f"local-dir:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="hcd models"):
        create_model("resnet_does_not_exist")


def test_registry_models_build_offline_without_weights():
    model = create_model("kaiko-vits16", pretrained=False)  # the architecture alone: no hub, no network
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1)
    assert input_normalisation(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_renormalisation_feeds_the_weights_their_own_statistics(monkeypatch):
    """hcd feeds ImageNet-normalised input; h-optimus-0's weights must see (raw - its mean) / its std."""
    import dataclasses

    import hcd_kit.backbones as backbones

    real = backbones.resolve  # its real architecture and registry entry, one block deep (not 40: 1.1B parameters)

    def one_block(spec):
        b = real(spec)
        return dataclasses.replace(b, kwargs={**b.kwargs, "depth": 1}) if spec == "h-optimus-0" else b

    monkeypatch.setattr(backbones, "resolve", one_block)
    entry = get_entry("h-optimus-0")
    model = create_model("h-optimus-0", pretrained=False)
    seen = {}
    model.patch_embed.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    raw = torch.rand(1, 3, 224, 224)
    mean0, std0 = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        model.eval()((raw - mean0) / std0)
    want = (raw - torch.tensor(entry.mean).view(1, 3, 1, 1)) / torch.tensor(entry.std).view(1, 3, 1, 1)
    assert torch.allclose(seen["x"], want, atol=1e-5)
    assert input_normalisation(create_model("resnet18")) == (IMAGENET_MEAN, IMAGENET_STD)


def _tiny_vit(**kw):
    return timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, embed_dim=32, depth=1, num_heads=2, **kw
    )


def _hub_cache(root: Path, repo_id: str, model) -> Path:
    """HF_HOME ``root`` whose hub cache holds ``model`` as ``repo_id``, as after a download."""
    save_timm(model, hub_snapshot(root, repo_id))
    return root


# Prepended to a child interpreter's script: NET lists every name lookup and connection attempted, from any
# thread or library (huggingface_hub's retries included), as ("socket.getaddrinfo", host) /
# ("socket.connect", address); with HCD_TEST_NET_LOG set, the list is written there as the process exits.
NET_AUDIT = """
import atexit, os, sys
NET = []
sys.addaudithook(lambda event, args: NET.append((event, args[-1] if event == "socket.connect" else args[0]))
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
if os.environ.get("HCD_TEST_NET_LOG"):
    atexit.register(lambda: open(os.environ["HCD_TEST_NET_LOG"], "w").write(repr(NET)))
"""

LOAD = (
    NET_AUDIT
    + """
import torch, timm
from hcd_kit.errors import ConfigError
from hcd_kit.model import create_model, input_normalisation
try:
    m = create_model(sys.argv[1], pretrained=True, num_classes=0)
except ConfigError as exc:
    print("NET", repr(NET))
    print("ERROR", exc)
    sys.exit(3)
torch.save(m.state_dict(), sys.argv[2])
print(input_normalisation(m))
"""
)


def _refused(res: subprocess.CompletedProcess) -> tuple[list, str]:
    """(network attempts, error line) of a LOAD that failed with a ConfigError."""
    assert res.returncode == 3, res.stdout + res.stderr
    net, line = res.stdout.strip().split("\n")
    assert net.startswith("NET ")
    return ast.literal_eval(net[4:]), line


def _load(spec: str, out: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    full.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-c", LOAD, spec, str(out)], env=full, text=True, capture_output=True, timeout=120
    )


def test_registry_weights_come_from_the_hub_cache_under_its_real_id(tmp_path):
    entry = get_entry("kaiko-vits16")
    source = _tiny_vit(dynamic_img_size=True)
    home = _hub_cache(tmp_path / "hf", entry.hub, source)
    res = _load("kaiko-vits16", tmp_path / "out.pt", HF_HOME=str(home), HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stdout + res.stderr
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert got.keys() == source.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in source.state_dict().items())
    assert "(0.5, 0.5, 0.5)" in res.stdout  # kaiko's own normalisation, from the registry


def test_any_hub_id_loads_from_the_cache(tmp_path):
    source = _tiny_vit()
    home = _hub_cache(tmp_path / "hf", "someone/tiny-path-vit", source)
    res = _load("hf-hub:someone/tiny-path-vit", tmp_path / "out.pt", HF_HOME=str(home), HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stdout + res.stderr
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert all(torch.equal(got[k], v) for k, v in source.state_dict().items())


def test_local_dir_folder_loads_offline(tmp_path):
    source = _tiny_vit()
    folder = save_timm(source, tmp_path / "w")
    model = create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_gated_model_offline_fails_in_one_line_without_touching_the_network(tmp_path):
    res = _load("uni", tmp_path / "out.pt", HF_HOME=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    net, line = _refused(res)
    assert net == []  # offline: not one lookup or connection (left to itself, the hub client retries for ~50 s)
    assert "MahmoodLab/uni" in line and "gated" in line and "HF_TOKEN" in line and "local-dir:FOLDER" in line
    assert "Traceback" not in res.stderr


def test_unreachable_hub_is_detected_by_one_probe_connection(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    env_clean = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    res = subprocess.run(
        [sys.executable, "-c", LOAD, "uni2-h", str(tmp_path / "o.pt")],
        env={**env_clean, **env},
        text=True,
        capture_output=True,
        timeout=120,
    )
    net, line = _refused(res)
    # the probe's one connection, refused; then the hub client is never let loose on the endpoint (no retries)
    assert [e for e in net if e[0] == "socket.connect"] == [("socket.connect", ("127.0.0.1", port))], net
    assert "unreachable" in line and "MahmoodLab/UNI2-h" in line


def test_hcd_models_lists_every_entry(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models", "--json"])
    assert exc.value.code == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == [e.name for e in ENTRIES]
    for row in listed:
        assert row["licence"] and row["input_size"] == 224 and row["t4_images_per_s"] > 0
        assert isinstance(row["gated"], bool) and row["url"].startswith("https://huggingface.co/")
    with pytest.raises(SystemExit):
        main(["models"])
    table = capsys.readouterr().out
    for e in ENTRIES:
        assert e.name in table


def test_a_fixed_size_timm_vit_trains_and_predicts_at_the_run_size(subset_factory, tmp_path):
    """timm's plain ViTs are built for 224 px; hcd builds them for --img-size (timm resamples the position
    embeddings), in training and when inference rebuilds the fold."""
    from hcd_kit.data import create_folds, prepare
    from hcd_kit.inference import predict_run
    from hcd_kit.training import TrainConfig, train

    data = subset_factory(n_train=48, n_test=8)
    prepare(data, workers=1)
    create_folds(data, n_folds=2, seed=0)
    cfg = TrainConfig(
        model="vit_tiny_patch16_224",
        pretrained=False,
        device="cpu",
        img_size=32,
        threads=1,
        batch_size=16,
        epochs=1,
        precision="fp32",
    )
    train(cfg, data, tmp_path / "vit", folds=[0])
    res = predict_run(data, tmp_path / "vit", tta=1, device="cpu", precision="fp32")
    assert res.n_images == 8
    assert create_model("vit_tiny_patch16_224", img_size=32).patch_embed.img_size == (32, 32)
    assert not hasattr(create_model("resnet18", img_size=32), "patch_embed")  # a CNN takes any size as it is


def test_a_foundation_model_trains_from_its_weights_unless_told_otherwise(tmp_path):
    """The cpu recipe trains its CNN from scratch; a registry model is chosen for its weights, so they stay on
    (and its input size is used) unless a flag or the config file says otherwise."""
    from hcd_kit.training.runs import resolve_config

    cfg, _ = resolve_config(None, {"model": "uni"}, tmp_path / "r", False, recipe="cpu")
    assert cfg.pretrained and cfg.img_size == 224
    cfg, _ = resolve_config(
        None, {"model": "uni", "pretrained": False, "img_size": 96}, tmp_path / "r", False, recipe="cpu"
    )
    assert not cfg.pretrained and cfg.img_size == 96
    cfg, _ = resolve_config(None, {"model": "resnet18"}, tmp_path / "r", False, recipe="cpu")
    assert not cfg.pretrained and cfg.img_size == 96  # the recipe's, for a plain timm CNN


def test_offline_training_of_a_gated_model_stops_before_writing_anything(sample_root, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    data = tmp_path / "data"
    import shutil

    shutil.copytree(sample_root, data)
    subprocess.run(
        [sys.executable, "-m", "hcd_kit", "prepare", "--data-dir", str(data)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [sys.executable, "-m", "hcd_kit", "folds", "--data-dir", str(data)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    net_log = tmp_path / "net.txt"
    hcd = NET_AUDIT + "from hcd_kit.cli import main\nmain(sys.argv[1:])\n"  # `hcd train ...`, network counted
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            hcd,
            "train",
            "--data-dir",
            str(data),
            "--model",
            "uni",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        env={**env, "HCD_TEST_NET_LOG": str(net_log)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "MahmoodLab/uni" in lines[0] and "gated" in lines[0], res.stderr
    assert not (tmp_path / "run").exists()
    assert ast.literal_eval(net_log.read_text()) == []  # the hub is never asked, so never waited on


@pytest.mark.parametrize("name", ["uni", "hf-hub:MahmoodLab/uni"])
def test_registry_normalisation_does_not_depend_on_how_the_model_was_built(name, monkeypatch):
    """UNI wants ImageNet statistics: rebuilt offline from its bare architecture (whose timm default cfg says
    0.5/0.5) to predict a fine-tuned run, it must see the same input as when its hub weights were loaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an hf-hub: id the registry knows builds without the hub too
    model = create_model(name, pretrained=False, num_classes=1)
    assert input_normalisation(model) == (IMAGENET_MEAN, IMAGENET_STD)
    assert not model._forward_pre_hooks
