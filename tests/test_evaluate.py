"""``hcd evaluate`` on a real tiny run: its AUC is the AUC of ``hcd predict``'s probabilities for the same patches
scored by hand, a folder that shares ids with the training data is refused in one line (``--allow-overlap``
reports the overlap and scores the unseen patches alone), the record lands in ``RUN/evaluations/`` and in
``hcd report``, and bad input is one line. The metrics behind it are checked against brute force.

The run trains on 64 patches of the shipped sample; the evaluation folder holds 40 others (disjoint ids).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.metrics import bootstrap_auc, threshold_scores, youden_threshold
from hcd_kit.runs import read_evaluations, read_run_oof

runner = CliRunner()
FAST = [
    *("--model", "test_resnet", "--no-pretrained", "--epochs", "1", "--img-size", "32", "--batch-size", "16"),
    *("--device", "cpu", "--threads", "1", "--precision", "fp32"),
]
SAME = ("--device", "cpu", "--precision", "fp32", "--batch-size", "32")  # evaluate and predict alike


def hcd(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def copy_patches(src: Path, dest: Path, labels: pd.DataFrame, test: pd.DataFrame | None = None) -> Path:
    """A competition-layout folder of ``labels``' patches: train/ + train_labels.csv; ``test``'s patches (of the
    sample's labelled ones too) go to test/ + sample_submission.csv, so that `hcd predict` scores exactly them."""
    splits = [("train", "train_labels.csv", labels)]
    if test is not None:
        splits.append(("test", "sample_submission.csv", test.assign(label=0)))
    for folder, csv, table in splits:
        (dest / folder).mkdir(parents=True)
        for i in table["id"]:
            shutil.copyfile(src / "train" / f"{i}.tif", dest / folder / f"{i}.tif")
        table[["id", "label"]].to_csv(dest / csv, index=False)
    return dest


@pytest.fixture(scope="module")
def world(sample_root, tmp_path_factory):
    """A 2-fold test_resnet run (1 epoch, 32 px) on 64 patches, and a folder of 40 other labelled patches."""
    from hcd_kit.data import create_folds, prepare

    root = tmp_path_factory.mktemp("evaluate")
    labels = pd.read_csv(sample_root / "train_labels.csv", dtype={"id": str})
    parts = [g.sample(n=52, random_state=0) for _, g in labels.groupby("label")]  # balanced, disjoint halves
    seen = pd.concat([p.iloc[:32] for p in parts]).sort_values("id")
    held = pd.concat([p.iloc[32:] for p in parts]).sort_values("id")
    data = copy_patches(sample_root, root / "data", seen)
    prepare(data, workers=1)
    create_folds(data, n_folds=2, seed=0)
    run = root / "run"
    res = hcd("train", "--data-dir", data, "--run-dir", run, *FAST)
    assert res.exit_code == 0, res.output
    return dict(
        root=root, data=data, run=run, seen=seen, held=held, held_dir=copy_patches(sample_root, root / "held", held)
    )


def evaluate(world, *args):
    return hcd("evaluate", "--run-dir", world["run"], *SAME, *args)


def test_the_auc_is_the_auc_of_predict_s_probabilities_scored_by_hand(world, sample_root, tmp_path):
    twin = copy_patches(sample_root, tmp_path / "twin", world["held"], test=world["held"])  # held ones as a test set
    res = evaluate(world, "--data-dir", twin, "--tta", 2, "--bootstrap", 300)
    assert res.exit_code == 0, res.output
    path = world["run"] / "evaluations" / "twin.json"  # the default name: the data folder's
    record = json.loads(path.read_text())

    out = tmp_path / "sub.csv"
    pred = hcd("predict", "--run-dir", world["run"], "--data-dir", twin, "--tta", 2, "--out", out, "--no-oof", *SAME)
    assert pred.exit_code == 0, pred.output
    sub = pd.read_csv(out, dtype={"id": str}).merge(world["held"], on="id", suffixes=("_p", ""))
    assert len(sub) == len(world["held"]) == record["n"] == 40 and record["positives"] == 20
    assert record["auc"] == pytest.approx(roc_auc_score(sub["label"], sub["label_p"]), abs=1e-6)

    lo, hi = record["auc_ci"]
    assert lo <= record["auc"] <= hi and record["bootstrap"] == {"resamples": 300, "seed": 0}
    assert set(record["fold_auc"]) == {"0", "1"} and record["folds"] == [0, 1] and record["tta"] == 2
    oof = read_run_oof(world["run"])
    assert record["threshold"] == pytest.approx(youden_threshold(oof["label"], oof["prob"]))
    assert record["threshold_source"] == "fold*/oof.csv"  # no oof_tta2.csv: predict ran with --no-oof
    at = threshold_scores(sub["label"], sub["label_p"], record["threshold"])
    assert record["at_threshold"]["accuracy"] == pytest.approx(at["accuracy"])
    assert record["at_threshold"]["tp"] == at["tp"] and record["at_threshold"]["tn"] == at["tn"]
    cal = record["calibration"]
    assert cal["observed_rate"] == 0.5 and cal["mean_prob"] == pytest.approx(sub["label_p"].mean(), abs=1e-6)
    assert (
        cal["bins"] == 10
        and 0 <= cal["ece"] <= 1
        and cal["brier"] == pytest.approx(((sub["label_p"] - sub["label"]) ** 2).mean(), abs=1e-6)
    )
    assert record["overlap"]["checked"] and record["overlap"]["ids"] == 0 and "unseen" not in record
    assert record["data_dir"] == str(twin.resolve()) and record["kind"] == "train"
    assert f"AUC {record['auc']:.4f} [{lo:.4f}, {hi:.4f}] on 40 patches (20 positive)" in res.stdout
    assert "fold AUC" in res.stdout and "sensitivity" in res.stdout and "Brier" in res.stdout
    assert str(path) in res.stdout.replace("\n", "")

    again = evaluate(world, "--data-dir", twin, "--tta", 2)  # the name is taken: refused, unless --force
    assert again.exit_code == 2 and "--force" in one_line(again)
    assert evaluate(world, "--data-dir", twin, "--tta", 1, "--force", "--bootstrap", 0).exit_code == 0
    assert json.loads(path.read_text())["auc_ci"] == [None, None]


def test_a_folder_sharing_ids_with_the_training_data_is_refused_unless_allowed(world, sample_root, tmp_path):
    res = evaluate(world, "--data-dir", world["data"], "--tta", 1)
    line = one_line(res)
    assert res.exit_code == 2 and "64 of the 64 patches" in line and "--allow-overlap" in line
    assert not (world["run"] / "evaluations" / "data.json").exists()

    mixed = pd.concat([world["held"], world["seen"].head(10)]).sort_values("id")
    folder = copy_patches(sample_root, tmp_path / "mixed", mixed)
    res = evaluate(world, "--data-dir", folder, "--tta", 1, "--name", "mixed", "--allow-overlap")
    assert res.exit_code == 0, res.output
    record = json.loads((world["run"] / "evaluations" / "mixed.json").read_text())
    assert record["n"] == 50 and record["overlap"]["ids"] == 10 and record["unseen"]["n"] == 40
    assert record["overlap"]["example"] in set(world["seen"]["id"])
    assert "10 of the 50 patches were in the training data" in res.stdout.replace("\n", " ")

    clean = evaluate(world, "--data-dir", world["held_dir"], "--tta", 1, "--name", "clean")
    assert clean.exit_code == 0, clean.output
    alone = json.loads((world["run"] / "evaluations" / "clean.json").read_text())
    assert record["unseen"]["auc"] == pytest.approx(alone["auc"], abs=1e-6)  # the same 40 patches


def test_every_evaluation_is_in_the_report_and_runs_still_lists_one_run(world, tmp_path):
    assert evaluate(world, "--data-dir", world["held_dir"], "--tta", 1, "--name", "report-me").exit_code == 0
    records, notes = read_evaluations(world["run"])
    assert "report-me" in [r["name"] for r in records] and not notes
    out = tmp_path / "report.html"
    res = hcd(
        "report",
        *("--run-dir", world["run"], "--data-dir", world["data"], "--out", out),
        *("--n-errors", 0, "--device", "cpu", "--ledger", tmp_path / "none.jsonl"),
    )
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    part = re.search(r'<section id="evaluations">(.*?)</section>', text, re.S).group(1)
    mine = next(r for r in records if r["name"] == "report-me")
    assert part.count('<tr class="evaluation">') == len(records)
    assert "report-me" in part and str(world["held_dir"].resolve()) in part and f"{mine['auc']:.4f}" in part
    assert "Evaluations" in text.split("</nav>")[0]  # in the page's table of contents

    rows = hcd("runs", world["root"], "--json")
    assert rows.exit_code == 0, rows.output
    assert [r["run"] for r in json.loads(rows.stdout)] == ["run"]  # RUN/evaluations/ is no run of its own


def test_bad_input_is_one_line(world, subset_factory, tmp_path):
    unlabelled = subset_factory(n_train=2, n_test=4)
    shutil.rmtree(unlabelled / "train")
    (unlabelled / "train_labels.csv").unlink()
    res = evaluate(world, "--data-dir", unlabelled)
    assert res.exit_code == 1 and "no labelled patches" in one_line(res)

    res = hcd("evaluate", "--run-dir", tmp_path / "nowhere", "--data-dir", world["held_dir"])
    assert res.exit_code == 2 and "config.toml not found" in one_line(res)
    assert not (tmp_path / "nowhere").exists()  # the refused command leaves no empty run folder

    res = evaluate(world, "--data-dir", world["held_dir"], "--name", "../escape")
    assert res.exit_code == 2 and "--name" in one_line(res)
    res = evaluate(world, "--data-dir", tmp_path / "missing")
    assert res.exit_code == 1 and "is not a folder" in one_line(res)


def test_bootstrap_interval_is_the_percentiles_of_brute_force_resamples():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60) * 0.6 + 0.4 * y, 2)  # rounded: ties, which count half
    lo, hi = bootstrap_auc(y, p, n_boot=200, seed=3)
    draw, aucs = np.random.default_rng(3), []
    for _ in range(200):
        idx = draw.integers(0, 60, 60)
        if len(set(y[idx])) == 2:
            aucs.append(roc_auc_score(y[idx], p[idx]))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])), abs=1e-12)
    assert bootstrap_auc(y, p, n_boot=200, seed=3) == (lo, hi)  # a fixed seed: the same interval
    assert all(np.isnan(bootstrap_auc(np.ones(5), np.arange(5.0))))


def test_threshold_scores_count_prob_at_or_above_the_threshold_as_positive():
    s = threshold_scores([1, 1, 0, 0, 1], [0.9, 0.5, 0.5, 0.1, 0.2], 0.5)
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (2, 1, 1, 1)
    assert s["accuracy"] == 3 / 5 and s["sensitivity"] == 2 / 3 and s["specificity"] == 1 / 2
    assert np.isnan(threshold_scores([1, 1], [0.2, 0.9], 0.5)["specificity"])


@pytest.fixture(scope="module")
def probed(world, sample_root, tmp_path_factory):
    """A logistic-regression probe run on the features of a tiny random ViT saved as a local-dir backbone (32 px,
    2 views) of the 64 seen patches; its test set is the 40 held patches, so its submission scores them."""
    import timm
    import torch
    from conftest import save_timm

    from hcd_kit.data import create_folds, prepare
    from hcd_kit.features import embed, probe

    root = tmp_path_factory.mktemp("probe")
    torch.manual_seed(0)
    net = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )
    spec = f"local-dir:{save_timm(net.eval(), root / 'vit')}"
    data = copy_patches(sample_root, root / "data", world["seen"], test=world["held"])
    prepare(data, workers=1)
    create_folds(data, n_folds=2, seed=0)
    embed(data, spec, root / "features", tta=2, device="cpu", precision="fp32", batch_size=64)
    probe(root / "features", data, root / "run", c=0.1)
    return root / "run"


def test_a_probe_run_is_evaluated_like_its_own_predictions(world, probed, tmp_path):
    res = hcd("evaluate", "--run-dir", probed, "--data-dir", world["held_dir"], "--device", "cpu")
    assert res.exit_code == 0, res.output
    record = json.loads((probed / "evaluations" / "held.json").read_text())
    sub = pd.read_csv(probed / "submission.csv", dtype={"id": str}).merge(world["held"], on="id", suffixes=("_p", ""))
    assert len(sub) == record["n"] == 40 and record["kind"] == "probe" and record["tta"] == 2
    assert record["auc"] == pytest.approx(roc_auc_score(sub["label"], sub["label_p"]), abs=1e-6)
    assert record["threshold_source"] == "oof_tta2.csv" and set(record["fold_auc"]) == {"0", "1"}
    assert not list((probed / "evaluations").glob(".features-*"))  # the scratch features are gone

    res = hcd("evaluate", "--run-dir", probed, "--data-dir", world["held_dir"], "--tta", 8, "--name", "x")
    assert res.exit_code == 2 and "2-view features" in one_line(res)
    res = hcd("evaluate", "--run-dir", probed, "--data-dir", world["data"], "--name", "x")
    assert res.exit_code == 2 and "--allow-overlap" in one_line(res)
    changed = shutil.copytree(probed, tmp_path / "changed")  # a probe that no longer fits as recorded: refused
    table = pd.read_csv(changed / "fold1" / "oof.csv", dtype={"id": str})
    table.assign(prob=1 - table["prob"]).to_csv(changed / "fold1" / "oof.csv", index=False)
    res = hcd("evaluate", "--run-dir", changed, "--data-dir", world["held_dir"], "--name", "y", "--device", "cpu")
    assert res.exit_code == 1 and "fitted again does not give" in one_line(res)
