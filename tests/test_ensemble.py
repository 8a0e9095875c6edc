"""`hcd ensemble`: weighted mean/rank blends of runs' test and OOF predictions, aligned by id, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.errors import ConfigError
from hcd_kit.inference import ensemble_runs

runner = CliRunner()


def make_run(root: Path, test_ids, oof_ids, labels, seed: int, quality: float, folds: int = 2) -> Path:
    """A run folder with submission.csv and fold*/oof.csv; ``quality`` mixes the label into the scores."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    test = pd.DataFrame({"id": test_ids, "label": rng.random(len(test_ids))})
    test.sample(frac=1.0, random_state=seed).to_csv(root / "submission.csv", index=False)  # own row order
    prob = np.clip(quality * labels + (1 - quality) * rng.random(len(labels)), 0, 1)
    oof = pd.DataFrame({"id": oof_ids, "fold": np.arange(len(oof_ids)) % folds, "prob": prob, "label": labels})
    for k in range(folds):
        (root / f"fold{k}").mkdir()
        oof[oof["fold"] == k].sample(frac=1.0, random_state=seed + k).to_csv(root / f"fold{k}" / "oof.csv", index=False)
    return root


@pytest.fixture
def two_runs(tmp_path):
    rng = np.random.default_rng(0)
    test_ids = [f"t{i:03d}" for i in range(30)]
    oof_ids = [f"o{i:03d}" for i in range(40)]
    labels = rng.integers(0, 2, len(oof_ids))
    a = make_run(tmp_path / "a", test_ids, oof_ids, labels, seed=1, quality=0.3)
    b = make_run(tmp_path / "b", test_ids, oof_ids, labels, seed=2, quality=0.2)
    return a, b


def _read(run: Path, name: str = "submission.csv") -> pd.Series:
    return pd.read_csv(run / name, dtype={"id": str}).set_index("id")["label"]


def _oof(run: Path) -> pd.DataFrame:
    return pd.concat(pd.read_csv(f, dtype={"id": str}) for f in sorted(run.glob("fold*/oof.csv"))).set_index("id")


def test_weighted_mean_blend_and_its_oof_auc(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "blend.csv"
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--weights", "3,2", "--out", str(out)])
    assert res.exit_code == 0, res.output

    got = pd.read_csv(out, dtype={"id": str})
    assert got["id"].tolist() == pd.read_csv(a / "submission.csv", dtype={"id": str})["id"].tolist()
    ta, tb = _read(a), _read(b)
    expected = 0.6 * ta + 0.4 * tb.loc[ta.index]
    assert np.allclose(got["label"], expected.to_numpy(), atol=1e-7)

    oa, ob = _oof(a), _oof(b)
    y = oa["label"].to_numpy()
    blend_auc = roc_auc_score(y, 0.6 * oa["prob"] + 0.4 * ob.loc[oa.index, "prob"].to_numpy())
    auc_a, auc_b = roc_auc_score(y, oa["prob"]), roc_auc_score(y, ob.loc[oa.index, "prob"])
    assert len({round(blend_auc, 4), round(auc_a, 4), round(auc_b, 4)}) == 3  # the checks below can tell them apart
    for value in (auc_a, auc_b, blend_auc):
        assert f"{value:.4f}" in res.stdout
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["cv_auc"] == pytest.approx(blend_auc, abs=1e-12)
    assert side["weights"] == pytest.approx([0.6, 0.4]) and side["ensemble"] == "mean"
    assert side["runs"] == [str(a.resolve()), str(b.resolve())]


def test_rank_blend_follows_the_sample_order(two_runs, tmp_path):
    a, b = two_runs
    data = tmp_path / "data"
    data.mkdir()
    order = list(reversed(_read(a).index))
    pd.DataFrame({"id": order, "label": 0}).to_csv(data / "sample_submission.csv", index=False)
    out = tmp_path / "rank.csv"
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--blend", "rank", "--data-dir", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(out, dtype={"id": str})
    assert got["id"].tolist() == order
    ra, rb = (_read(r).loc[order].to_numpy() for r in (a, b))
    expected = ((rankdata(ra) - 1) / (len(ra) - 1) + (rankdata(rb) - 1) / (len(rb) - 1)) / 2
    assert np.allclose(got["label"], expected, atol=1e-7)


def test_errors(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "x.csv"

    def run(*args):
        res = runner.invoke(app, ["ensemble", *map(str, args), "--out", str(out)])
        assert res.exit_code != 0 and not out.exists()
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        return " ".join(res.stderr.split())

    assert "--weights has 3 value(s) but 2 run(s)" in run(a, b, "--weights", "1,1,1")
    c = make_run(tmp_path / "c", _read(a).index, [f"z{i}" for i in range(40)], np.arange(40) % 2, seed=3, quality=0.5)
    assert f"OOF ids of {c} differ from {a}" in run(a, c)
    (b / "submission.csv").unlink()
    assert f"missing test predictions {b / 'submission.csv'}" in run(a, b)
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--blend", "max", "--out", str(out)])
    msg = " ".join(res.stderr.split())
    assert res.exit_code != 0 and not out.exists() and all(w in msg for w in ("--blend", "max", "mean", "rank"))
    with pytest.raises(ConfigError, match="--blend: 'max' is not one of 'mean', 'rank'"):  # library callers too
        ensemble_runs([a, b], out, how="max")
    assert not out.exists()


@pytest.mark.parametrize("bad", ["nan", "7", "-0.1", "high"])
def test_a_prediction_that_is_not_a_probability_is_refused(two_runs, tmp_path, bad):
    a, b = two_runs
    sub = pd.read_csv(b / "submission.csv", dtype={"id": str, "label": str})
    sub.loc[3, "label"] = bad
    sub.to_csv(b / "submission.csv", index=False)
    out = tmp_path / "blend.csv"
    for how in ("mean", "rank"):
        res = runner.invoke(app, ["ensemble", str(a), str(b), "--blend", how, "--out", str(out)])
        assert res.exit_code == 1 and not out.exists()
        assert f"1 label(s) are not probabilities in [0, 1] (first: id {sub.loc[3, 'id']}" in " ".join(res.stderr.split())


def test_pred_files_replace_the_runs_submissions(two_runs, tmp_path):
    a, b = two_runs
    pa, pb = tmp_path / "pa.csv", tmp_path / "pb.csv"
    (a / "submission.csv").rename(pa), (b / "submission.csv").rename(pb)
    out = tmp_path / "blend.csv"
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--pred", str(pa), "--pred", str(pb), "--out", str(out)])
    assert res.exit_code == 0, res.output
    ta, tb = _read(tmp_path, "pa.csv"), _read(tmp_path, "pb.csv")
    got = pd.read_csv(out, dtype={"id": str}).set_index("id")["label"]
    assert np.allclose(got.loc[ta.index], (ta + tb.loc[ta.index]) / 2, atol=1e-7)
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--pred", str(pa), "--out", str(out)])
    assert res.exit_code != 0 and "1 --pred file(s) for 2 run(s)" in res.stderr
