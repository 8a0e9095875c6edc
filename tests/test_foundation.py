"""Foundation models end to end, offline, as a user runs them: a backbone from the hub cache (or a fold of a
CNN run exported as a timm ``local-dir:`` folder) -> ``hcd embed`` -> ``hcd probe`` -> ``hcd ensemble`` with a
fine-tuned CNN run, on real patches (the shipped sample; a subset of hcd-mini where it is present).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
from conftest import hub_snapshot, packed_subset, save_timm
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.runs import validate_submission

runner = CliRunner()


def _hcd(*args: str) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.stdout


def _cnn_run(data: Path, run: Path, epochs: int = 1, seed: int = 0) -> Path:
    from hcd_kit.training import TrainConfig, train

    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=48,
        threads=1,
        batch_size=32,
        epochs=epochs,
        lr=3e-3,
        precision="fp32",
        seed=seed,
    )
    train(cfg, data, run)
    return run


def _tiny_vit_in_hub_cache(home: Path, repo_id: str) -> None:
    """A tiny ViT (the architecture of the registry's ViTs at 32 dims) laid out as the hub cache keeps a download."""
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=32, depth=2, num_heads=2
    )
    save_timm(model, hub_snapshot(home, repo_id))


@pytest.fixture(params=["sample_root", pytest.param("mini_root", marks=pytest.mark.shared_data)])
def data(request, tmp_path) -> Path:
    """Real patches in the competition layout, packed and split in 3 folds: 120 of the shipped sample, or
    400 of hcd-mini."""
    root = request.getfixturevalue(request.param)
    n_train, n_test = (120, 20) if request.param == "sample_root" else (400, 40)
    return packed_subset(root, tmp_path / "data", n_train=n_train, n_test=n_test, n_folds=3)


def test_hub_cache_vit_embed_probe_and_blend_with_a_cnn_run(data, tmp_path):
    from hcd_kit.inference import predict_run

    cnn = _cnn_run(data, tmp_path / "cnn")
    predict_run(data, cnn, tta=2, device="cpu", precision="fp32")
    home = tmp_path / "hf"
    _tiny_vit_in_hub_cache(home, "hcd-test/tiny-path-vit")
    features = tmp_path / "features"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    embed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hcd_kit",
            "embed",
            "--data-dir",
            str(data),
            "--model",
            "hf-hub:hcd-test/tiny-path-vit",
            "--tta",
            "2",
            "--out",
            str(features),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert embed.returncode == 0, embed.stdout + embed.stderr
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["complete"] and manifest["tta"] == 2

    probe = tmp_path / "probe"
    out = _hcd("probe", "--features", features, "--data-dir", data, "--run-dir", probe)
    assert "OOF" in out
    cv = _hcd("cv", "--run-dir", probe, "--no-plots")
    assert "overall OOF AUC" in cv
    blend = tmp_path / "blend.csv"
    out = _hcd("ensemble", cnn, probe, "--weights", "auto", "--out", blend, "--data-dir", data)

    # both runs are scored on OOF made like their test predictions (TTA x2), and the blend's gain is reported
    assert out.count("(TTA x2 OOF)") == 2, out
    assert re.search(
        r"nested OOF AUC \(5 held-out parts\): auto \d\.\d{4} vs equal-weight \w+ \d\.\d{4} "
        r"\([+-]\d\.\d{4}\)",
        out,
    ), out
    assert len(validate_submission(blend, data / "sample_submission.csv")) == len(
        pd.read_csv(data / "sample_submission.csv")
    )
    oof_cnn = pd.read_csv(cnn / "oof_tta2.csv").sort_values("id")
    oof_probe = pd.read_csv(probe / "oof_tta2.csv").sort_values("id")
    assert oof_cnn["id"].tolist() == oof_probe["id"].tolist()  # the same split: every OOF id lines up
    assert (oof_cnn["fold"].to_numpy() == oof_probe["fold"].to_numpy()).all()


def _split_subset(root: Path, dest: Path, ids: list[str], test_ids: list[str]) -> Path:
    """``ids`` of ``root`` (and its test patches ``test_ids``) in the competition layout under ``dest``."""
    import shutil

    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str}).set_index("id").loc[ids].reset_index()
    (dest / "train").mkdir(parents=True)
    (dest / "test").mkdir()
    for i in ids:
        shutil.copyfile(root / "train" / f"{i}.tif", dest / "train" / f"{i}.tif")
    for i in test_ids:
        shutil.copyfile(root / "test" / f"{i}.tif", dest / "test" / f"{i}.tif")
    labels.to_csv(dest / "train_labels.csv", index=False)
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(dest / "sample_submission.csv", index=False)
    return dest


def test_an_exported_fold_embeds_patches_it_never_saw_well_above_chance(mini_root, tmp_path):
    """hcd-mini split in two disjoint halves: a CNN fold trained on half A, exported as a timm local-dir folder,
    embeds half B; a probe on B beats chance by far, and the blend with a CNN run on B reports its gain."""
    from hcd_kit.data import create_folds, prepare
    from hcd_kit.inference import predict_run
    from hcd_kit.training import TrainConfig, train

    labels = pd.read_csv(mini_root / "train_labels.csv", dtype={"id": str}).sample(n=800, random_state=0)
    test_ids = pd.read_csv(mini_root / "sample_submission.csv", dtype={"id": str})["id"].head(20).tolist()
    a = _split_subset(mini_root, tmp_path / "A", labels["id"][:400].tolist(), test_ids)
    b = _split_subset(mini_root, tmp_path / "B", labels["id"][400:].tolist(), test_ids)
    for data in (a, b):
        prepare(data, workers=1)
        create_folds(data, n_folds=3, seed=0)
    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=64,
        threads=1,
        batch_size=32,
        epochs=4,
        lr=3e-3,
        precision="fp32",
    )
    train(cfg, a, tmp_path / "runA", folds=[0])
    _hcd("weights", "export", tmp_path / "runA", "--fold", "0", "--out", tmp_path / "backbone")

    _hcd(
        "embed",
        "--data-dir",
        b,
        "--model",
        f"local-dir:{tmp_path / 'backbone'}",
        "--tta",
        "2",
        "--out",
        tmp_path / "features",
        "--device",
        "cpu",
    )
    out = _hcd("probe", "--features", tmp_path / "features", "--data-dir", b, "--run-dir", tmp_path / "probe")
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    auc = float(re.search(r"OOF AUC\s+all\s+[\d,]+\s+(\d\.\d{4})", out).group(1))
    assert auc > 0.75, out  # chance is 0.5; the backbone never saw these patches
    assert probe["folds"]

    cnn = _cnn_run(b, tmp_path / "cnnB")
    predict_run(b, cnn, tta=2, device="cpu", precision="fp32")
    blend = _hcd(
        "ensemble", cnn, tmp_path / "probe", "--weights", "auto", "--out", tmp_path / "blend.csv", "--data-dir", b
    )
    assert re.search(
        r"nested OOF AUC \(5 held-out parts\): auto \d\.\d{4} vs equal-weight \w+ \d\.\d{4} "
        r"\([+-]\d\.\d{4}\)",
        blend,
    ), blend
