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


def make_runs(tmp_path, n_oof: int, **qualities: float) -> list:
    """Runs named after ``qualities`` ({name: quality}) over the same 30 test ids and ``n_oof`` labelled OOF ids."""
    rng = np.random.default_rng(0)
    test_ids = [f"t{i:03d}" for i in range(30)]
    oof_ids = [f"o{i:03d}" for i in range(n_oof)]
    labels = rng.integers(0, 2, len(oof_ids))
    return [
        make_run(tmp_path / name, test_ids, oof_ids, labels, seed=i, quality=q)
        for i, (name, q) in enumerate(qualities.items(), 1)
    ]


@pytest.fixture
def two_runs(tmp_path):
    return tuple(make_runs(tmp_path, 40, a=0.3, b=0.2))


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
    res = runner.invoke(
        app, ["ensemble", str(a), str(b), "--blend", "rank", "--data-dir", str(data), "--out", str(out)]
    )
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
        ensemble_runs([a, b], out, blend="max")
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
        assert f"1 label(s) are not probabilities in [0, 1] (first: id {sub.loc[3, 'id']}" in " ".join(
            res.stderr.split()
        )


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


# ------------------------------------------------------------------ like-with-like OOF and --weights auto


def _tta_files(run: Path, tta: int, rng, shift: float = 0.5, folds=None) -> pd.DataFrame:
    """What `hcd predict --tta N` leaves: RUN/oof_ttaN.csv (other probabilities than fold*/oof.csv) and a
    sidecar beside the run's submission.csv that names it."""
    oof = _oof(run).reset_index()
    if folds is not None:
        oof = oof[oof["fold"].isin(folds)]
    oof = oof.assign(prob=np.clip(shift * oof["label"] + (1 - shift) * rng.random(len(oof)), 0, 1))
    oof[["id", "fold", "prob", "label"]].to_csv(run / f"oof_tta{tta}.csv", index=False)
    side = {"runs": [str(run)], "tta": tta, "oof_tta_file": str(run / f"oof_tta{tta}.csv")}
    Path(f"{run / 'submission.csv'}.json").write_text(json.dumps(side))
    return oof


def test_each_run_is_scored_on_oof_made_with_the_tta_of_its_test_predictions(two_runs, tmp_path):
    a, b = two_runs
    rng = np.random.default_rng(5)
    out = tmp_path / "blend.csv"
    ta = _tta_files(a, 8, rng)
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert f"{roc_auc_score(ta['label'], ta['prob']):.4f}" in lines[0] and "(TTA x8 OOF)" in lines[0]
    assert f"{roc_auc_score(_oof(b)['label'], _oof(b)['prob']):.4f}" in lines[1] and "(1 view OOF)" in lines[1]
    mixed = [line for line in lines if "mix TTA and 1 view" in line]
    assert len(mixed) == 1 and mixed[0].startswith("note: ")  # said once, on one line
    assert json.loads(Path(f"{out}.json").read_text())["oof_views"] == [8, 1]

    tb = _tta_files(b, 8, rng, shift=0.3)  # both like their test predictions: no note, the blend on the TTA OOF
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0 and "mix" not in res.stdout
    pa, pb = ta.set_index("id")["prob"], tb.set_index("id")["prob"]
    y = ta.set_index("id")["label"]
    blend = roc_auc_score(y, (pa + pb.loc[pa.index]) / 2)
    assert f"OOF AUC {blend:.4f}  blend" in res.stdout
    assert json.loads(Path(f"{out}.json").read_text())["cv_auc"] == pytest.approx(blend, abs=1e-12)

    # A prediction that wrote no TTA OOF (no packed train store) says so: an oof_tta8.csv there is older.
    Path(f"{a / 'submission.csv'}.json").write_text(json.dumps({"tta": 8, "oof_tta_file": None}))
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0 and json.loads(Path(f"{out}.json").read_text())["oof_views"] == [1, 8]

    _tta_files(a, 8, rng, folds=[0])  # predicted with --fold 0 only: it covers half the OOF ids
    res = runner.invoke(app, ["ensemble", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0 and "oof_tta8.csv covers 20 of the run's 40 OOF ids" in " ".join(res.stdout.split())
    assert json.loads(Path(f"{out}.json").read_text())["oof_views"] == [1, 8]


@pytest.fixture
def good_and_noise(tmp_path):
    return tuple(make_runs(tmp_path, 300, good=0.4, noise=0.0))


def test_auto_weights_drop_a_noise_run_and_report_the_nested_gain(good_and_noise, tmp_path):
    good, noise = good_and_noise
    out = tmp_path / "auto.csv"
    res = runner.invoke(app, ["ensemble", str(good), str(noise), "--weights", "auto", "--out", str(out)])
    assert res.exit_code == 0, res.output

    side = json.loads(Path(f"{out}.json").read_text())
    w, mode, auto = side["weights"], side["ensemble"], side["weights_auto"]
    assert w[1] <= 0.1 and sum(w) == pytest.approx(1) and mode in ("mean", "rank") and auto["parts"] == 5
    assert auto["nested_gain"] > 0.02
    assert auto["nested_gain"] == pytest.approx(auto["nested_auc"] - auto["nested_equal_auc"])
    gain_line = (
        f"nested OOF AUC (5 held-out parts): auto {auto['nested_auc']:.4f} vs equal-weight mean "
        f"{auto['nested_equal_auc']:.4f} ({auto['nested_gain']:+.4f})"
    )  # a gain > 0.02: "+0.0xyz"
    assert gain_line in res.stdout
    assert f"weights auto: {mode} blend, weights {w[0]:.2f},{w[1]:.2f}" in res.stdout
    tg, tn = _read(good), _read(noise)
    pg, pn = tg.to_numpy(), tn.loc[tg.index].to_numpy()
    if mode == "rank":  # each run's ranks scaled to [0, 1] (no ties in random scores)
        pg, pn = ((rankdata(p) - 1) / (len(p) - 1) for p in (pg, pn))
    expected = (w[0] * pg + w[1] * pn) / (w[0] + w[1])  # the weighted mean, by hand
    got = pd.read_csv(out, dtype={"id": str}).set_index("id")["label"].loc[tg.index]
    assert np.allclose(got, expected, atol=1e-7)  # the weights chosen on OOF are the ones applied to the test set

    res = runner.invoke(
        app, ["ensemble", str(good), str(noise), "--weights", "auto", "--blend", "rank", "--out", str(out)]
    )
    assert res.exit_code == 0 and "searched rank only" in res.stdout and "vs equal-weight rank" in res.stdout
    assert json.loads(Path(f"{out}.json").read_text())["ensemble"] == "rank"


def test_auto_weights_need_oof_predictions(good_and_noise, tmp_path):
    good, noise = good_and_noise
    for run in (good, noise):
        for f in run.glob("fold*/oof.csv"):
            f.unlink()
    out = tmp_path / "auto.csv"
    res = runner.invoke(app, ["ensemble", str(good), str(noise), "--weights", "auto", "--out", str(out)])
    assert res.exit_code == 1 and not out.exists() and len(res.stderr.strip().splitlines()) == 1
    assert "--weights auto chooses the weights on OOF predictions" in " ".join(res.stderr.split())
    res = runner.invoke(app, ["ensemble", str(good), str(noise), "--weights", "0.5,x", "--out", str(out)])
    assert res.exit_code != 0 and "--weights must be auto or numbers" in " ".join(res.stderr.split())


def test_auto_blend_of_two_real_tiny_runs_writes_a_valid_submission(subset_factory, tmp_path):
    """Two resnet10t runs trained for 1 epoch on 2 folds of real patches, predicted with TTA x2, blended by auto."""
    import re

    from hcd_kit.data import create_folds, prepare
    from hcd_kit.inference import predict_run
    from hcd_kit.runs import validate_submission
    from hcd_kit.training import TrainConfig, train

    data = subset_factory(n_train=64, n_test=16)
    prepare(data, workers=1)
    create_folds(data, n_folds=2, seed=0)
    runs = []
    for seed in (0, 1):
        cfg = TrainConfig(
            model="resnet10t",
            pretrained=False,
            device="cpu",
            img_size=48,
            threads=1,
            batch_size=32,
            epochs=1,
            lr=3e-3,
            precision="fp32",
            seed=seed,
        )
        train(cfg, data, tmp_path / f"run{seed}")
        pred = predict_run(data, tmp_path / f"run{seed}", tta=2, device="cpu", precision="fp32")
        assert pred.oof_file == tmp_path / f"run{seed}" / "oof_tta2.csv" and pred.oof_file.is_file()
        runs.append(tmp_path / f"run{seed}")
    out = tmp_path / "auto.csv"

    res = runner.invoke(
        app, ["ensemble", *map(str, runs), "--weights", "auto", "--out", str(out), "--data-dir", str(data)]
    )

    assert res.exit_code == 0, res.output
    gain = re.search(
        r"nested OOF AUC \(5 held-out parts\): auto \d\.\d{4} vs equal-weight mean \d\.\d{4} "
        r"\(([+-]\d\.\d{4})\)",
        res.stdout,
    )
    assert gain and gain.group(1) != "-0.0000", res.stdout
    assert res.stdout.count("(TTA x2 OOF)") == 2 and "mix" not in res.stdout
    sub = validate_submission(out, data / "sample_submission.csv")
    assert len(sub) == 16
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["oof_views"] == [2, 2] and side["tta"] == 2 and side["weights_auto"]["parts"] == 5
