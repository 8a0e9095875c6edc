"""`hcd probe` on feature stores with known content: the run folder it writes, and what `hcd cv`, `hcd ensemble`
and `hcd predict` make of it; its AUC where the features carry the label and where they are pure noise; and
one-line errors for missing folds, ids or labels, and run folders it must not write into.

The stores are written with the feature store's own writer over the shipped sample's real ids and labels:
``planted`` shifts three of 16 features by the label (plus noise), ``noise`` has no label in it at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import create_folds, read_folds
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.features import probe
from hcd_kit.features.probes import C_GRID
from hcd_kit.features.store import SplitWriter, write_manifest
from hcd_kit.layout import OOF_COLUMNS
from hcd_kit.runs import validate_submission

runner = CliRunner()
DIM, VIEWS = 16, 2


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_root) -> Path:
    """The shipped sample's CSVs (240 labelled ids, 40 test ids in a shuffled sample order) and 5 folds."""
    root = tmp_path_factory.mktemp("probe") / "data"
    root.mkdir()
    shutil.copyfile(sample_root / "train_labels.csv", root / "train_labels.csv")
    sample = pd.read_csv(sample_root / "sample_submission.csv", dtype={"id": str}).sample(frac=1.0, random_state=3)
    sample.to_csv(root / "sample_submission.csv", index=False)
    create_folds(root, n_folds=5, seed=0)
    return root


def write_store(root: Path, data: Path, signal: float, seed: int = 0, labels: bool = True, views: int = VIEWS) -> Path:
    """A complete feature store over ``data``'s ids: features 0..2 shifted by ``signal`` * (2y - 1)."""
    rng = np.random.default_rng(seed)
    train = pd.read_csv(data / "train_labels.csv", dtype={"id": str}).sample(frac=1.0, random_state=seed)
    test = pd.read_csv(data / "sample_submission.csv", dtype={"id": str}).sort_values("id")
    manifest = {
        "model": "planted",
        "img_size": 96,
        "pool": "head",
        "dim": DIM,
        "tta": views,
        "views": [0, 4][:views],
        "data": {},
        "splits": {},
    }
    root.mkdir(parents=True)
    for split, ids, y in [
        ("train", train["id"].to_numpy(), train["label"].to_numpy()),
        ("test", test["id"].to_numpy(), rng.integers(0, 2, len(test))),
    ]:
        x = rng.normal(size=(len(ids), DIM))
        x[:, :3] += signal * (2 * y[:, None] - 1)
        feats = np.stack([x, x + 0.3 * rng.normal(size=x.shape)], axis=1)[:, :views]
        writer = SplitWriter(root, split, ids, y if split == "train" and labels else None, views, DIM)
        writer.write(0, feats.astype(np.float16))
        writer.flush(len(ids))
        writer.close()
        manifest["splits"][split] = {"rows": len(ids), "complete": True}
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory, data) -> Path:
    return write_store(tmp_path_factory.mktemp("planted") / "feat", data, signal=0.8)


def oof_auc(frame: pd.DataFrame) -> float:
    return roc_auc_score(frame["label"], frame["prob"])


def test_a_probe_is_a_run_that_cv_ensemble_and_submit_take(planted, data, tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["probe", "--features", str(planted), "--data-dir", str(data), "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    assert "OOF AUC   all    240" in r.stdout and "2 views" in r.stdout

    cfg = (run / "config.toml").read_text()
    assert 'kind = "probe"' in cfg and 'model = "planted"' in cfg and f'features = "{planted.resolve()}"' in cfg
    assert json.loads((run / "plan.json").read_text()) == {"folds": [0, 1, 2, 3, 4]}
    assert (run / "folds.csv").read_bytes() == (data / "folds.csv").read_bytes()
    folds = read_folds(data / "folds.csv")
    frames = []
    for k in range(5):
        oof = pd.read_csv(run / f"fold{k}" / "oof.csv", dtype={"id": str})
        assert tuple(oof.columns) == OOF_COLUMNS and (oof["fold"] == k).all()
        assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == k, "id"])
        frames.append(oof)
    oof = pd.concat(frames)
    tta = pd.read_csv(run / "oof_tta2.csv", dtype={"id": str})
    assert tuple(tta.columns) == OOF_COLUMNS and sorted(tta["id"]) == sorted(oof["id"])
    assert not np.allclose(tta.set_index("id").loc[oof["id"], "prob"], oof["prob"])  # view 1 was scored too

    probe_json = json.loads((run / "probe.json").read_text())
    assert oof_auc(oof) > 0.85 and oof_auc(oof) == pytest.approx(probe_json["oof_auc_1view"])
    assert oof_auc(tta) == pytest.approx(probe_json["oof_auc_tta"])
    assert all(f["c"] in C_GRID for f in probe_json["folds"]) and probe_json["features_manifest"]["model"] == "planted"
    sub = validate_submission(run / "submission.csv", data / "sample_submission.csv")
    assert sub["id"].tolist() == pd.read_csv(data / "sample_submission.csv", dtype={"id": str})["id"].tolist()
    side = json.loads((run / "submission.csv.json").read_text())
    assert {
        "runs",
        "folds",
        "tta",
        "ensemble",
        "cv_auc",
        "model",
        "img_size",
        "oof_auc_1view",
        "oof_auc_tta",
        "oof_tta_file",
    } <= set(side)
    assert side["tta"] == 2 and side["folds"] == [0, 1, 2, 3, 4] and side["cv_auc"] == pytest.approx(oof_auc(oof))

    r = runner.invoke(app, ["cv", "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    assert f"overall OOF AUC: {oof_auc(oof):.4f}" in r.stdout
    assert (run / "oof_roc.png").is_file() and not (run / "learning_curves.png").exists()

    r = runner.invoke(app, ["predict", "--run-dir", str(run), "--data-dir", str(data)])
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"{run} is a probe run: `hcd probe` already wrote its test predictions to {run / 'submission.csv'}" in line
    assert "blend it with `hcd ensemble` or submit it" in line


def test_an_mlp_probe_blends_with_a_logreg_probe(planted, data, tmp_path):
    a = probe(planted, data, tmp_path / "logreg", c=0.1)
    b = probe(planted, data, tmp_path / "mlp", head="mlp", seed=1)
    assert [f.c for f in a.folds] == [0.1] * 5 and all(f.c is None for f in b.folds)
    assert b.oof_auc_1 > 0.8 and b.views == 2 and b.oof_tta_file == tmp_path / "mlp" / "oof_tta2.csv"

    out = tmp_path / "blend.csv"
    r = runner.invoke(app, ["ensemble", str(a.run_dir), str(b.run_dir), "--out", str(out), "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("(TTA x2 OOF)") == 2 and "blend (mean, 240 ids)" in r.stdout
    validate_submission(out, data / "sample_submission.csv")


def test_a_one_view_store_and_a_re_probe_leave_only_this_probes_files(planted, data, tmp_path):
    run = tmp_path / "run"
    probe(planted, data, run)
    assert (run / "oof_tta2.csv").is_file() and (run / "fold4" / "oof.csv").is_file()
    res = probe(write_store(tmp_path / "one", data, signal=0.8, views=1), data, run, folds=[0, 2])
    assert res.views == 1 and res.oof_tta_file is None and res.oof_auc_n == res.oof_auc_1
    assert not list(run.glob("oof_tta*.csv"))
    assert [k for k in range(5) if (run / f"fold{k}" / "oof.csv").is_file()] == [0, 2]
    assert json.loads((run / "plan.json").read_text()) == {"folds": [0, 2]}
    side = json.loads((run / "submission.csv.json").read_text())
    assert side["tta"] == 1 and side["oof_tta_file"] is None and side["folds"] == [0, 2]
    r = runner.invoke(app, ["cv", "--run-dir", str(run), "--no-plots"])
    assert r.exit_code == 0 and "fold(s) 1, 3, 4 have no oof.csv" in r.stderr


def test_features_without_the_label_score_near_chance(data, tmp_path):
    aucs = [
        probe(write_store(tmp_path / f"noise{s}", data, signal=0.0, seed=s), data, tmp_path / f"run{s}").oof_auc_1
        for s in range(2)
    ]
    assert all(0.35 < a < 0.65 for a in aucs), aucs


def test_what_a_probe_cannot_use_is_one_line(planted, data, tmp_path):
    no_folds = tmp_path / "nofolds"
    no_folds.mkdir()
    shutil.copyfile(data / "sample_submission.csv", no_folds / "sample_submission.csv")
    with pytest.raises(DataError, match=r"no folds file .*folds.csv; run `hcd folds --data-dir"):
        probe(planted, no_folds, tmp_path / "r0")

    fewer = tmp_path / "fewer"
    shutil.copytree(data, fewer)
    folds = read_folds(data / "folds.csv")
    folds.iloc[3:].to_csv(fewer / "folds.csv", index=False)
    with pytest.raises(DataError, match=r"has no fold for 3 id\(s\), e.g. .*; run `hcd folds`"):
        probe(planted, fewer, tmp_path / "r1")

    unlabelled = write_store(tmp_path / "nolabels", data, signal=0.8, labels=False)
    with pytest.raises(DataError, match="train_ids.csv has no labels"):
        probe(unlabelled, data, tmp_path / "r2")
    ids = pd.read_csv(planted / "train_ids.csv", dtype={"id": str})
    shutil.copytree(planted, tmp_path / "holes")
    ids.assign(label=ids["label"].where(ids.index != 5)).to_csv(tmp_path / "holes" / "train_ids.csv", index=False)
    with pytest.raises(DataError, match=rf"no 0/1 label for 1 id\(s\), e.g. {ids['id'][5]}"):
        probe(tmp_path / "holes", data, tmp_path / "r3")

    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.toml").write_text('model = "resnet18"\nimg_size = 96\n')
    r = runner.invoke(app, ["probe", "--features", str(planted), "--data-dir", str(data), "--run-dir", str(trained)])
    assert r.exit_code == 2 and "holds a run of `hcd train`; choose another --run-dir" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    other = tmp_path / "other"
    probe(planted, data, other, c=1.0, folds=[0])
    (other / "folds.csv").write_text("id,fold\n")
    with pytest.raises(ConfigError, match="differs from .*folds.csv: this run was made on another split"):
        probe(planted, data, other)
    with pytest.raises(ConfigError, match="--fold 7 is out of range"):
        probe(planted, data, tmp_path / "r4", folds=[7])
    with pytest.raises(ConfigError, match="--head mlp takes none"):
        probe(planted, data, tmp_path / "r5", head="mlp", c=0.5)
    r = runner.invoke(
        app,
        [
            "probe",
            "--features",
            str(planted),
            "--data-dir",
            str(data),
            "--run-dir",
            str(tmp_path / "r6"),
            "--c",
            "lots",
        ],
    )
    assert r.exit_code == 2 and "--c must be auto or a positive number" in r.stderr
