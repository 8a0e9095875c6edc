"""`hcd predict` end to end on real patches: submission order, TTA, OOF with/without TTA, fold blends, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.config import dumps_toml
from hcd_kit.errors import ConfigError
from hcd_kit.inference import predict_run
from hcd_kit.model import create_model, save_weights
from hcd_kit.runs import validate_submission

MODEL = "test_convnext"  # the fastest of timm's tiny test models on a CPU
runner = CliRunner()


def make_run(run: Path, folds=(0, 1), model: str = MODEL, img_size: int = 96) -> Path:
    """A run folder as `hcd train` leaves it: config.toml + one randomly initialised best.pt per fold."""
    run.mkdir(parents=True)
    (run / "config.toml").write_text(dumps_toml({"model": model, "img_size": img_size, "seed": 0}))
    for k in folds:
        torch.manual_seed(100 + k)
        save_weights(create_model(model), run / f"fold{k}" / "best.pt")
    return run


def keep_test_only(data: Path) -> Path:
    """Strip a competition folder to what a Kaggle test-time kernel sees: test/ and sample_submission.csv."""
    shutil.rmtree(data / "train")
    (data / "train_labels.csv").unlink()
    return data


def shuffle_sample(data: Path, seed: int = 1) -> list[str]:
    """Reorder sample_submission.csv so that 'same order as the sample' differs from any sorted order."""
    sample = pd.read_csv(data / "sample_submission.csv", dtype={"id": str})
    sample = sample.sample(frac=1.0, random_state=seed)
    sample.to_csv(data / "sample_submission.csv", index=False)
    return sample["id"].tolist()


def predict(*args: str):
    return runner.invoke(app, ["predict", *map(str, args)])


def test_predict_with_only_test_data_writes_the_sample_ids_in_order(subset_factory, tmp_path):
    data = keep_test_only(subset_factory(n_train=2, n_test=8))
    ids = shuffle_sample(data)
    run = make_run(tmp_path / "run")
    out = tmp_path / "subs" / "sub.csv"

    res = predict("--data-dir", data, "--run-dir", run, "--tta", 8, "--out", out)

    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[0] == "id,label"
    sub = validate_submission(out, data / "sample_submission.csv")  # what submit checks before upload
    assert sub["id"].tolist() == ids
    assert sub["label"].between(0, 1).all() and sub["label"].nunique() > 1
    assert (data / "packed" / "manifest.json").is_file()  # test/ was packed on the way
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["runs"] == [str(run.resolve())] and side["folds"] == [0, 1]
    assert side["tta"] == 8 and side["ensemble"] == "mean" and side["cv_auc"] is None
    assert "OOF AUC with/without TTA is skipped" in res.stdout
    assert "img/s" in res.stdout

    one = tmp_path / "tta1.csv"  # TTA really changes the inputs: 1 view gives other numbers
    assert predict("--data-dir", data, "--run-dir", run, "--tta", 1, "--out", one).exit_code == 0
    assert not np.allclose(pd.read_csv(one)["label"], sub["label"], atol=1e-4)


def _reference_probs(model, paths: list[Path], views: int) -> np.ndarray:
    """Independent of hcd's loader/preprocess/tta code: PIL decode, numpy flips, per-view sigmoid mean."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0
        img = (img - mean) / std
        rots = [np.rot90(img, r) for r in range(4)]
        all8 = rots + [r[:, ::-1] for r in rots]
        batch = np.stack(all8[:views]).transpose(0, 3, 1, 2)  # 1 view -> identity only
        with torch.no_grad():
            logits = model(torch.tensor(batch.copy(), dtype=torch.float32)).view(-1)
        out.append(torch.sigmoid(logits).mean().item())
    return np.array(out)


def test_oof_auc_with_and_without_tta_matches_an_independent_computation(subset_factory, tmp_path):
    from hcd_kit.data import prepare

    data = subset_factory(n_train=16, n_test=4)
    prepare(data, splits=("train",), workers=1)
    labels = pd.read_csv(data / "train_labels.csv", dtype={"id": str})
    labels["fold"] = np.arange(len(labels)) % 2  # ids are sorted, labels mixed: both folds hold both classes
    labels[["id", "fold"]].to_csv(data / "folds.csv", index=False)
    run = make_run(tmp_path / "run")
    out = tmp_path / "sub.csv"

    res = predict("--data-dir", data, "--run-dir", run, "--out", out, "--precision", "fp32", "--batch-size", 8)

    assert res.exit_code == 0, res.output
    assert "1 view" in res.stdout and "8 views" in res.stdout
    y, p1, p8 = [], [], []
    for k in (0, 1):
        model = create_model(MODEL)
        model.load_state_dict(torch.load(run / f"fold{k}" / "best.pt", weights_only=True))
        model.eval()
        val = labels[labels["fold"] == k]
        paths = [data / "train" / f"{i}.tif" for i in val["id"]]
        y.append(val["label"].to_numpy())
        p1.append(_reference_probs(model, paths, 1))
        p8.append(_reference_probs(model, paths, 8))
    auc1 = roc_auc_score(np.concatenate(y), np.concatenate(p1))
    auc8 = roc_auc_score(np.concatenate(y), np.concatenate(p8))
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["oof_auc_1view"] == pytest.approx(auc1, abs=1e-6)
    assert side["oof_auc_tta"] == pytest.approx(auc8, abs=1e-6)
    assert side["cv_auc"] == side["oof_auc_1view"]  # no oof.csv in this run: the 1-view OOF AUC, as hcd cv
    assert f"{auc1:.4f}" in res.stdout and f"{auc8:.4f}" in res.stdout


def test_predict_keeps_the_tta_oof_predictions_for_ensemble(subset_factory, tmp_path):
    from hcd_kit.data import prepare

    data = subset_factory(n_train=16, n_test=4)
    prepare(data, splits=("train",), workers=1)
    labels = pd.read_csv(data / "train_labels.csv", dtype={"id": str})
    labels["fold"] = np.arange(len(labels)) % 2
    labels[["id", "fold"]].to_csv(data / "folds.csv", index=False)
    run = make_run(tmp_path / "run")
    out = tmp_path / "sub.csv"

    res = predict("--data-dir", data, "--run-dir", run, "--tta", 4, "--out", out, "--precision", "fp32")

    assert res.exit_code == 0, res.output
    oof = pd.read_csv(run / "oof_tta4.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", "prob", "label"]
    assert sorted(oof["id"]) == sorted(labels["id"])  # every validation id once, in the fold that held it out
    merged = oof.merge(labels, on="id", suffixes=("", "_true"))
    assert (merged["fold"] == merged["fold_true"]).all() and (merged["label"] == merged["label_true"]).all()
    assert oof["prob"].between(0, 1).all()
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["tta"] == 4 and side["oof_tta_file"] == str((run / "oof_tta4.csv").resolve())
    assert side["oof_auc_tta"] == pytest.approx(roc_auc_score(oof["label"], oof["prob"]), abs=1e-9)
    assert f"wrote {run / 'oof_tta4.csv'} (OOF with TTA x4" in res.stdout


def test_one_progress_bar_per_fold_and_the_oof_auc_line_matches_the_oof_files(subset_factory, tmp_path):
    """The OOF AUC line of `hcd predict --tta 2`: 1 view vs 2 views, and the signed gain, as scikit-learn scores
    the OOF files that `--tta 1` and `--tta 2` write (view 0 of TTA is the plain view). How a gain that rounds
    to zero is signed ("+0.0000", never "-0.0000") is test_blend's ``signed`` test."""
    from hcd_kit.data import prepare

    data = subset_factory(n_train=12, n_test=4)
    prepare(data, splits=("train",), workers=1)
    labels = pd.read_csv(data / "train_labels.csv", dtype={"id": str})
    labels["fold"] = np.arange(len(labels)) % 3
    labels[["id", "fold"]].to_csv(data / "folds.csv", index=False)
    run = make_run(tmp_path / "run", folds=(0, 1, 2))
    one = predict(
        "--data-dir", data, "--run-dir", run, "--tta", 1, "--out", tmp_path / "one.csv", "--precision", "fp32"
    )
    assert one.exit_code == 0, one.output

    res = predict(
        "--data-dir", data, "--run-dir", run, "--tta", 2, "--out", tmp_path / "sub.csv", "--precision", "fp32"
    )

    assert res.exit_code == 0, res.output
    auc = {n: roc_auc_score(f["label"], f["prob"]) for n in (1, 2) for f in [pd.read_csv(run / f"oof_tta{n}.csv")]}
    gain = f"{auc[2] - auc[1]:+.4f}".replace("-0.0000", "+0.0000")
    (line,) = [line for line in res.stdout.splitlines() if line.startswith("OOF AUC  all")]
    assert line.split() == ["OOF", "AUC", "all", "12", f"{auc[1]:.4f}", f"{auc[2]:.4f}", "(TTA", "x2:", f"{gain})"]
    bars = [line.split() for line in res.stderr.splitlines() if line.startswith("fold ")]
    per_fold = (labels["fold"].value_counts() + 4).to_dict()  # each fold's bar: the 4 test + its OOF patches
    assert [(b[0], b[1], b[3]) for b in bars] == [("fold", str(k), f"{n}/{n}") for k, n in sorted(per_fold.items())]
    assert "test fold" not in res.stderr and "OOF fold" not in res.stderr


def test_rank_and_mean_fold_ensembles(subset_factory, tmp_path):
    data = keep_test_only(subset_factory(n_train=2, n_test=8))
    run = make_run(tmp_path / "run")
    got = {}
    variants = {"f0": ["--fold", "0"], "f1": ["--fold", "1"], "mean": [], "rank": ["--blend", "rank"]}
    for name, extra in variants.items():
        out = tmp_path / f"{name}.csv"
        res = predict("--data-dir", data, "--run-dir", run, "--tta", 1, "--precision", "fp32", "--out", out, *extra)
        assert res.exit_code == 0, res.output
        got[name] = pd.read_csv(out)["label"].to_numpy()
    f = np.stack([got["f0"], got["f1"]])
    assert np.allclose(got["mean"], f.mean(0), atol=1e-6)
    ranks = np.stack([(rankdata(r) - 1) / (len(r) - 1) for r in f])
    assert np.allclose(got["rank"], ranks.mean(0), atol=1e-6)
    assert not np.allclose(got["rank"], got["mean"])
    assert json.loads(Path(f"{tmp_path / 'f1.csv'}.json").read_text())["folds"] == [1]


def _break_no_weights(run: Path, data: Path) -> None:
    shutil.rmtree(run / "fold0"), shutil.rmtree(run / "fold1")


def _break_no_config(run: Path, data: Path) -> None:
    (run / "config.toml").unlink()


def _break_config_without_model(run: Path, data: Path) -> None:
    (run / "config.toml").write_text("img_size = 96\n")


def _break_bad_toml(run: Path, data: Path) -> None:
    (run / "config.toml").write_text("model = \n")


def _break_no_sample(run: Path, data: Path) -> None:
    (data / "sample_submission.csv").unlink()


def _break_wrong_architecture(run: Path, data: Path) -> None:
    save_weights(create_model("test_resnet"), run / "fold1" / "best.pt")


@pytest.mark.parametrize(
    "breaker, extra, message",
    [
        (_break_no_weights, [], "no fold*/best.pt in"),
        (_break_no_config, [], "config.toml not found"),
        (_break_config_without_model, [], "has no `model"),
        (_break_bad_toml, [], "is not valid TOML"),
        (_break_no_sample, [], "sample_submission.csv not found"),
        (_break_wrong_architecture, [], "fold1/best.pt does not match model 'test_convnext'"),
        (None, ["--fold", "0,5"], "no best.pt for fold(s) [5]"),
    ],
)
def test_errors_are_one_actionable_line(subset_factory, tmp_path, breaker, extra, message):
    data = keep_test_only(subset_factory(n_train=2, n_test=4))
    run = make_run(tmp_path / "run")
    if breaker is not None:
        breaker(run, data)
    out = tmp_path / "sub.csv"
    res = predict("--data-dir", data, "--run-dir", run, "--out", out, "--tta", 1, *extra)
    assert res.exit_code != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert message in " ".join(res.stderr.split())
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value, choices",
    [("--tta", "3", ["1", "2", "4", "8"]), ("--blend", "median", ["mean", "rank"])],
)
def test_a_choice_outside_the_list_is_refused_before_any_work(subset_factory, tmp_path, flag, value, choices):
    data = keep_test_only(subset_factory(n_train=2, n_test=4))
    run = make_run(tmp_path / "run")
    out = tmp_path / "sub.csv"
    res = predict("--data-dir", data, "--run-dir", run, "--out", out, flag, value)
    assert res.exit_code != 0 and not out.exists()
    msg = " ".join(res.stderr.split())
    assert flag in msg and value in msg and all(c in msg for c in choices), res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(tta=3), "--tta: 3 is not one of 1, 2, 4, 8"),
        (dict(blend="median"), "--blend: 'median' is not one of 'mean', 'rank'"),
        (dict(batch_size=0), "--batch-size must be >= 1, got 0"),
    ],
)
def test_library_callers_get_the_same_checks(subset_factory, tmp_path, options, message):
    data = keep_test_only(subset_factory(n_train=2, n_test=4))
    run = make_run(tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        predict_run(data, run, out=tmp_path / "sub.csv", **options)
    assert str(err.value) == message
    assert not (tmp_path / "sub.csv").exists()


def test_a_trained_run_finds_its_data_folder_without_data_dir(subset_factory, tmp_path, monkeypatch):
    """`hcd train` records the data folder (RUN/data.json); predict and report use it when --data-dir is not
    given, from any working directory, and predict says so when the packed store changed since."""
    from hcd_kit.data import create_folds, prepare

    data = subset_factory(n_train=48, n_test=8)
    prepare(data, workers=1)
    create_folds(data, n_folds=2)
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train",
            "--data-dir",
            str(data),
            "--fold",
            "0",
            "--model",
            "test_resnet",
            "--epochs",
            "1",
            "--run-dir",
            str(run),
            "--device",
            "cpu",
            "--no-pretrained",
            "--img-size",
            "32",
            "--threads",
            "1",
            "--batch-size",
            "16",
        ],
    )
    assert res.exit_code == 0, res.output
    recorded = json.loads((run / "data.json").read_text())
    assert Path(recorded["data_dir"]) == data.resolve() and recorded["train_fingerprint"]
    elsewhere = tmp_path / "elsewhere"  # no ./data here: only the run's record can name the folder
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    res = predict("--run-dir", run, "--tta", "1", "--out", elsewhere / "sub.csv")
    assert res.exit_code == 0, res.output
    sample = pd.read_csv(data / "sample_submission.csv", dtype={"id": str})
    assert pd.read_csv(elsewhere / "sub.csv", dtype={"id": str})["id"].tolist() == sample["id"].tolist()
    assert "changed since" not in res.output

    rep = runner.invoke(app, ["report", "--run-dir", str(run), "--out", str(elsewhere / "r.html"), "--n-errors", "2"])
    assert rep.exit_code == 0, rep.output
    assert "patches not shown" not in rep.output and "data-dir" not in rep.output

    first = sorted((data / "train").glob("*.tif"))[0]  # the training data changes: the packed store is re-made
    first.unlink()
    labels = pd.read_csv(data / "train_labels.csv", dtype={"id": str})
    labels[labels["id"] != first.stem].to_csv(data / "train_labels.csv", index=False)
    prepare(data, workers=1)
    res = predict("--run-dir", run, "--tta", "1", "--out", elsewhere / "sub2.csv", "--no-oof")
    assert res.exit_code == 0, res.output
    assert "changed since" in " ".join(res.output.split()) and str(data.resolve()) in "".join(res.output.split())
