"""`hcd embed` on the shipped real patches with a tiny ViT: the store's shape and ids, features equal to a
direct forward of the same network, resume after an interruption, a rerun that does nothing, refused
changes, a hub checkpoint from the offline cache, and one-line errors for stores that cannot be read.

The ViT is random but real: saved as timm saves a checkpoint for the hub (config.json + safetensors), once
as a ``local-dir:`` folder and once in the Hugging Face cache layout for ``hf-hub:``. Its config names
mean/std 0.5, so hcd's input re-normalisation is on the path the reference forward checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import hold_in_another_process, hub_snapshot, save_timm
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import open_store, prepare
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.features import PooledFeatures, embed, open_features
from hcd_kit.inference import tta_transforms
from hcd_kit.model import create_model
from hcd_kit.preprocess import IMAGENET_MEAN, IMAGENET_STD, dihedral, to_input

HUB_ID = "hcd-test/tiny-vit"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A 2-block ViT at 32 px, as a local-dir folder and as a cached hub repository."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0
    ).eval()
    folder = save_timm(net, root / "local")
    save_timm(net, hub_snapshot(root / "hf", HUB_ID))
    return SimpleNamespace(net=net, spec=f"local-dir:{folder}", folder=folder, hf_home=root / "hf")


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_root) -> Path:
    """The shipped sample (240 labelled, 40 test patches), packed, in a folder of this module's own."""
    root = tmp_path_factory.mktemp("embed") / "data"
    shutil.copytree(sample_root, root)
    prepare(root)
    return root


def reference(net, images: np.ndarray, views: int, size: int = 32) -> np.ndarray:
    """(N, views, D) features computed without hcd: the network's own normalisation, the same dihedral views."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5  # the checkpoint's mean/std, as its config.json says
    with torch.no_grad():
        return torch.stack([net(dihedral(x, k)) for k in tta_transforms(views)], dim=1).numpy()


def test_features_are_a_direct_forward_of_every_view_of_every_patch(tiny, data, tmp_path):
    out = tmp_path / "feat"
    res = embed(data, tiny.spec, out, tta=2, batch_size=64, precision="fp32")

    assert not res.skipped and res.dim == 32 and res.img_size == 32  # the size from the folder's config.json
    assert [(s.split, s.rows, s.status) for s in res.splits] == [("train", 240, "embedded"), ("test", 40, "embedded")]
    fs = open_features(out)
    m = fs.manifest
    assert m["complete"] and m["model"] == f"local-dir:{tiny.folder.resolve()}" and m["kind"] == "local-dir"
    assert (m["tta"], m["views"], m["dim"], m["pool"], m["dtype"]) == (2, [0, 4], 32, "head", "float16")
    assert m["architecture"] == "vit_tiny_patch16_224" and m["data"]["train"]["count"] == 240
    assert json.loads((out / "progress.json").read_text()) == {"train": 240, "test": 40}
    for split in ("train", "test"):
        store, got = open_store(data / "packed", split), fs.split(split)
        assert got.features.shape == (len(store), 2, 32) and got.features.dtype == np.float16
        assert not got.features.flags.writeable
        assert got.ids.tolist() == store.ids.tolist()
        assert (got.labels is None) == (store.labels is None)
        want = reference(tiny.net, store.images, 2)
        np.testing.assert_allclose(got.features, want, rtol=5e-3, atol=5e-3 * np.abs(want).max())
    assert np.array_equal(fs.split("train").labels, open_store(data / "packed", "train").labels)


def test_an_interrupted_embed_resumes_to_a_clean_runs_features_and_a_rerun_does_nothing(tiny, data, tmp_path):
    kw = dict(tta=2, batch_size=32, splits=("train",), chunk_rows=32)
    clean = tmp_path / "clean"
    embed(data, tiny.spec, clean, **kw)

    class Stop(Exception):
        pass

    def stop(split, done):
        raise Stop(f"{split} {done}")

    out = tmp_path / "cut"
    with pytest.raises(Stop, match="train 32"):
        embed(data, tiny.spec, out, on_chunk=stop, **kw)
    assert json.loads((out / "progress.json").read_text()) == {"train": 32}
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(DataError, match=r"incomplete \(train: 32 of 240 rows\); run the same `hcd embed` again"):
        open_features(out)

    seen = []
    res = embed(data, tiny.spec, out, on_chunk=lambda s, n: seen.append(n), **kw)
    assert [(s.status, s.start) for s in res.splits] == [("resumed", 32)]
    assert seen[0] == 64 and seen[-1] == 240  # it went on from row 32, not from the start
    a, b = open_features(clean).split("train"), open_features(out).split("train")
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(b.features, a.features, rtol=0, atol=1e-3)

    before = (out / "train_features.npy").stat().st_mtime_ns
    again = embed(data, tiny.spec, out, **kw)
    assert again.skipped and [s.status for s in again.splits] == ["already embedded"]
    assert (out / "train_features.npy").stat().st_mtime_ns == before


def test_other_settings_or_data_are_refused_in_one_line_unless_forced(tiny, data, subset_factory, tmp_path):
    out = tmp_path / "feat"
    base = ["embed", "--data-dir", data, "--model", tiny.spec, "--out", out, "--split", "test"]
    first = runner.invoke(app, [*map(str, base), "--tta", "2"])
    assert first.exit_code == 0, first.output
    assert "40 patches x 2 view(s) x 32 features" in first.stdout and "img/s" in first.stdout
    again = runner.invoke(app, [*map(str, base), "--tta", "2"])
    assert again.exit_code == 0 and "already embedded" in again.stdout

    for extra, says in [
        (["--tta", "4"], "tta = 2, but this embed asks for 4"),
        (["--tta", "2", "--img-size", "64"], "img_size = 32, but this embed asks for 64"),
        (["--tta", "2", "--no-pretrained"], "pretrained = True, but this embed asks for False"),
    ]:
        r = runner.invoke(app, [*map(str, base), *extra])
        assert r.exit_code == 2, r.output
        (line,) = r.stderr.strip().splitlines()
        assert says in line and "pass --force to rebuild it, or choose another --out" in line
    with pytest.raises(ConfigError, match="test features of another packed store"):
        embed(subset_factory(n_train=4, n_test=6), tiny.spec, out, tta=2, splits=("test",))

    res = embed(data, tiny.spec, out, tta=4, splits=("test",), force=True)
    assert not res.skipped and open_features(out).split("test").features.shape == (40, 4, 32)


def test_a_hub_checkpoint_comes_from_the_offline_cache(tiny, data, tmp_path):
    local, hub = tmp_path / "local", tmp_path / "hub"
    embed(data, tiny.spec, local, tta=2, splits=("test",), precision="fp32")
    env = {**os.environ, "HF_HOME": str(tiny.hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    cmd = [
        sys.executable,
        "-m",
        "hcd_kit",
        "embed",
        "--data-dir",
        str(data),
        "--model",
        f"hf-hub:{HUB_ID}",
        "--tta",
        "2",
        "--out",
        str(hub),
        "--split",
        "test",
        "--precision",
        "fp32",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    got = open_features(hub)
    assert got.manifest["kind"] == "hf-hub" and got.manifest["img_size"] == 32  # from the hub's config.json
    np.testing.assert_allclose(
        got.split("test").features, open_features(local).split("test").features, rtol=0, atol=1e-3
    )

    cmd[7], cmd[11] = "hf-hub:hcd-test/absent", str(tmp_path / "absent")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "HF_HUB_OFFLINE" in p.stderr and not (tmp_path / "absent").exists()


def test_class_token_and_mean_patch_token_pooling_sees_the_renormalised_input(tiny):
    net = create_model(tiny.spec, pretrained=True, num_classes=0).eval()  # with the 0.5/0.5 input hook
    x = to_input(torch.randint(0, 256, (3, 96, 96, 3), dtype=torch.uint8), 32)
    with torch.no_grad():
        got = PooledFeatures(net, "cls+mean")(x)
        raw = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        tokens = tiny.net.forward_features((raw - 0.5) / 0.5)
    want = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)
    assert got.shape == (3, 64)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_unpacked_folder_is_packed_first_and_a_missing_one_is_named(subset_factory, tmp_path):
    src = subset_factory(n_train=6, n_test=4)
    res = embed(src, "test_convnext", tmp_path / "cnn", pretrained=False, splits=("test",))
    assert (src / "packed" / "manifest.json").is_file() and res.img_size == 96  # a timm CNN keeps 96 px
    assert open_features(tmp_path / "cnn").split("test").features.shape[:2] == (4, 1)
    shutil.rmtree(src / "train")
    with pytest.raises(DataError, match="no packed train store and no .*train folder; get the data with `hcd download"):
        embed(src, "test_convnext", tmp_path / "cnn2", pretrained=False, splits=("train",))


def test_missing_incomplete_or_damaged_stores_are_one_line_errors(tiny, data, tmp_path):
    with pytest.raises(DataError, match=r"no feature store in .*; run `hcd embed --out"):
        open_features(tmp_path / "nothing")
    out = tmp_path / "feat"
    embed(data, tiny.spec, out, splits=("test",))
    np.save(out / "test_features.npy", np.zeros((39, 1, 32), np.float16))
    with pytest.raises(DataError, match=r"damaged \(test: features \(39, 1, 32\).*rebuild it with `hcd embed --force`"):
        open_features(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest.json is damaged .*`hcd embed --force`"):
        open_features(out)
    embed(data, tiny.spec, out, splits=("test",), force=True)
    with pytest.raises(DataError, match="has no train features; run `hcd embed --split train"):
        open_features(out).split("train")


def test_a_store_that_cannot_fit_or_is_being_written_is_refused_in_one_line(tiny, data, tmp_path, monkeypatch):
    out = tmp_path / "feat"
    base = ["embed", "--data-dir", data, "--model", tiny.spec, "--out", out, "--split", "test"]
    monkeypatch.setenv("HCD_FAULT_FREE_BYTES", "1000")  # 40 patches x 1 view x 32 float16 features: 2,560 bytes
    r = runner.invoke(app, [*map(str, base)])
    assert r.exit_code == 1, r.output
    (line,) = r.stderr.strip().splitlines()
    assert "not enough disk space for the test features: about 2.6 KB needed" in line and "1.0 KB free" in line
    assert not out.exists()
    monkeypatch.delenv("HCD_FAULT_FREE_BYTES")

    holder = hold_in_another_process(out, "hcd embed")  # another process writing this store
    try:
        r = runner.invoke(app, [*map(str, base)])
        assert r.exit_code == 3, r.output
        (line,) = r.stderr.strip().splitlines()
        assert f"is in use by hcd embed (PID {holder.pid} on" in line and "another --out" in line
    finally:
        holder.kill()
        holder.wait()
    r = runner.invoke(app, [*map(str, base)])  # its holder is gone: taken over
    assert r.exit_code == 0 and "no longer running; taken over" in " ".join(r.stderr.split())


def test_kill_9_mid_embed_then_the_rerun_gives_a_clean_runs_features(tiny, data, tmp_path):
    base = [sys.executable, "-m", "hcd_kit", "embed", "--data-dir", str(data), "--model", tiny.spec, "--split", "test"]
    clean, out = tmp_path / "clean", tmp_path / "cut"
    assert runner.invoke(app, [*base[3:], "--out", str(clean)]).exit_code == 0  # the reference, in-process
    env = {**os.environ, "HCD_FAULT_KILL": "progress.json"}  # killed as it records its first chunk
    killed = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, env=env)
    assert killed.returncode == -9, killed.stderr
    with pytest.raises(DataError, match="incomplete"):
        open_features(out)
    again = runner.invoke(app, [*base[3:], "--out", str(out)])  # the rerun (in-process: one start-up saved)
    assert again.exit_code == 0, again.output
    assert "taken over" in " ".join(again.stderr.split()) and not list(out.glob(".tmp-*"))
    a, b = open_features(clean).split("test"), open_features(out).split("test")
    assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.features, b.features)


@pytest.mark.parametrize("name", ["test_features.npy", "progress.json", "manifest.json"])
def test_a_full_disk_mid_embed_is_one_line_and_the_rerun_gives_a_clean_runs_features(tiny, data, tmp_path, name):
    base = ["embed", "--data-dir", data, "--model", tiny.spec, "--split", "test"]
    clean, out = tmp_path / "clean", tmp_path / "cut"
    assert runner.invoke(app, [*map(str, base), "--out", str(clean)]).exit_code == 0
    env = {"HCD_FAULT_ENOSPC": name, "HCD_FAULT_FREE_BYTES": "100000"}
    r = runner.invoke(app, [*map(str, base), "--out", str(out)], env=env)
    assert r.exit_code == 1, r.output
    (line,) = r.stderr.strip().splitlines()
    assert f"disk full: could not write {out / name}: " in line and "100.0 KB is free there" in line, line
    assert not list(out.glob(".tmp-*"))
    r = runner.invoke(app, [*map(str, base), "--out", str(out)])
    assert r.exit_code == 0, r.output
    a, b = open_features(clean).split("test"), open_features(out).split("test")
    assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.features, b.features)
