"""``hcd runs``: every run in one table, its JSON/CSV exports and ``runs/index.html``.

One real run (resnet10t, 2 folds x 1 epoch on shipped patches, predicted with TTA x2, so it has train.log,
histories, oof_tta2.csv and a submission whose sidecar the ledger records) sits beside fabricated ones: a probe,
a run of a blend recipe one level further down, a run with a damaged config and a run with a broken oof.csv.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import packed_subset
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.kaggle.ledger import LedgerRecord, append_record, read_ledger
from hcd_kit.runs.table import COLUMNS, find_runs, log_seconds, runs_table, sort_rows

runner = CliRunner()


def _oof(path: Path, fold: int, seed: int, n: int = 40, signal: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2
    prob = 1 / (1 + np.exp(-(signal * (label - 0.5) + rng.normal(0, 1, n))))
    df = pd.DataFrame({"id": [f"f{fold}_{i}" for i in range(n)], "fold": fold, "prob": prob, "label": label})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def _pooled_auc(run: Path) -> float:
    """A run's OOF AUC over every fold's oof.csv rows pooled, by scikit-learn: not by hcd's own cv_report."""
    oof = pd.concat(pd.read_csv(f) for f in sorted(run.glob("fold*/oof.csv")))
    return roc_auc_score(oof["label"], oof["prob"])


def _train_seconds(log: Path) -> float:
    """What train.log says one session of 1-epoch folds trained for, read by hand: per fold, from its "fold K:
    N train / M val images" line to its "fold K epoch 1/1" line."""
    stamps: dict[str, list[datetime]] = {}
    for line in log.read_text().splitlines():
        if m := re.match(r"(\S+ \S+) fold (\d+)(: \d+ train / | epoch \d+/\d+: )", line):
            stamps.setdefault(m.group(2), []).append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    assert stamps and all(len(t) == 2 for t in stamps.values()), stamps  # one start and one epoch per fold
    return sum((t[1] - t[0]).total_seconds() for t in stamps.values())


def _fake_run(root: Path, config: str, folds=(0, 1), seed: int = 0, signal: float = 1.0) -> Path:
    root.mkdir(parents=True)
    (root / "config.toml").write_text(config)
    (root / "plan.json").write_text(json.dumps({"folds": list(folds)}))
    for k in folds:
        _oof(root / f"fold{k}" / "oof.csv", k, seed + k, signal=signal)
    return root


@pytest.fixture(scope="module")
def project(sample_root, tmp_path_factory) -> Path:
    """runs/ with a real trained + predicted run, fabricated ones, and a ledger naming two of them."""
    from hcd_kit.inference import predict_run
    from hcd_kit.training import TrainConfig, train

    root = tmp_path_factory.mktemp("project")
    data = packed_subset(sample_root, root / "data", n_train=64, n_test=8)
    runs = root / "runs"
    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=48,
        threads=1,
        batch_size=16,
        epochs=1,
        lr=3e-3,
        precision="fp32",
        recipe="cpu",
    )
    train(cfg, data, runs / "real")
    predict_run(data, runs / "real", tta=2, device="cpu", precision="fp32")

    probe = _fake_run(runs / "probe", 'kind = "probe"\nmodel = "uni"\nimg_size = 224\n', seed=10, signal=3.0)
    _oof(probe / "oof_tta8.csv", 0, 99, signal=4.0)
    (probe / "oof_tta2.csv").write_text((probe / "oof_tta8.csv").read_text())  # the largest N is shown
    (probe / "probe.json").write_text(json.dumps({"seconds": 12.5}))
    (probe / "report.html").write_text("<html>report</html>")
    member = _fake_run(
        runs / "blend" / "convnext",
        'model = "convnext_nano"\nimg_size = 96\nepochs = 8\nrecipe = "t4x2-fast"\n',
        folds=(0, 1, 2),
        seed=20,
        signal=0.3,
    )
    shutil.rmtree(member / "fold2")  # 2 of 3 planned folds done
    broken = runs / "broken"
    (broken / "fold0").mkdir(parents=True)
    (broken / "config.toml").write_text("model = [unclosed")
    bad_oof = _fake_run(runs / "bad-oof", 'model = "resnet18"\n', folds=(0,))
    (bad_oof / "fold0" / "oof.csv").write_text("id,fold,prob,label\na,0,zzz,1\n")

    ledger = root / "submissions" / "ledger.jsonl"
    for score, private in ((0.81, 0.80), (0.79, 0.78)):
        rec = LedgerRecord.for_file(runs / "real" / "submission.csv", "tta2", "histopathologic-cancer-detection")
        rec.public_score, rec.private_score = score, private
        append_record(ledger, rec)
    both = LedgerRecord(
        time="t",
        file="blend.csv",
        sha256="x",
        message="blend",
        competition="c",
        runs=[str((runs / "real").resolve()), str(probe.resolve())],
        public_score=0.9,
        private_score=None,
    )
    append_record(ledger, both)
    return root


def _invoke(project: Path, monkeypatch, *args: str):
    monkeypatch.chdir(project)
    res = runner.invoke(app, ["runs", *args], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res


def test_the_table_shows_each_run_with_values_from_their_sources(project, monkeypatch):
    res = _invoke(project, monkeypatch)
    lines = {
        cells[0]: cells
        for line in res.stdout.splitlines()
        if "│" in line
        for cells in [[c.strip() for c in line.split("│")]]
    }
    assert lines.pop("run")[:3] == ["run", "kind", "model"], res.stdout  # the header
    assert set(lines) == {"real", "probe", "blend/convnext", "broken", "bad-oof"}, res.stdout
    real = lines["real"]
    run = project / "runs" / "real"
    assert real[:8] == ["real", "train", "resnet10t", "cpu", "48", "1", "2/2", f"{_pooled_auc(run):.4f}"]
    tta = pd.read_csv(run / "oof_tta2.csv")
    assert real[8] == f"{roc_auc_score(tta['label'], tta['prob']):.4f} x2"
    assert re.fullmatch(r"\d+s", real[9]) and real[10:] == ["0.9000", "0.8000", "3"]
    probe = lines["probe"]
    probe_auc = _pooled_auc(project / "runs" / "probe")
    assert probe[1:8] == ["probe", "uni", "", "224", "", "2/2", f"{probe_auc:.4f}"]
    assert probe[8].endswith(" x8") and probe[9] == "12s" and probe[10:] == ["0.9000", "", "1"]
    assert lines["blend/convnext"][3:7] == ["t4x2-fast", "96", "8", "2/3"]
    assert lines["broken"][1] == "?" and lines["broken"][7] == ""
    notes = res.stdout[res.stdout.index("note ") :]
    assert "broken: config.toml unreadable" in notes and "bad-oof:" in notes and "non-numeric" in notes
    order = [name for name in lines]  # default: CV AUC, best first, runs without one last
    aucs = [float(lines[n][7]) for n in order if lines[n][7]]
    assert aucs == sorted(aucs, reverse=True) and set(order[-2:]) == {"broken", "bad-oof"}
    assert (project / "runs" / "index.html").is_file()


def test_json_round_trips_the_rows_of_runs_table(project, monkeypatch):
    res = _invoke(project, monkeypatch, "--json", "--no-page")
    rows = json.loads(res.stdout)
    runs = project / "runs"
    expected = runs_table(find_runs(["runs"]), ["runs"], read_ledger(project / "submissions" / "ledger.jsonl"))
    assert rows == expected and [list(r) for r in rows] == [list(COLUMNS)] * 5
    real = next(r for r in rows if r["run"] == "real")
    assert real["cv_auc"] == pytest.approx(_pooled_auc(runs / "real"), abs=1e-12)
    assert real["train_s_from"] == "train.log" and real["train_s"] == _train_seconds(runs / "real" / "train.log")
    assert real["public_best"] == 0.9 and real["private_best"] == 0.8 and real["submissions"] == 3
    assert real["report"] is None and next(r for r in rows if r["run"] == "probe")["report"].endswith("report.html")


@pytest.mark.parametrize(
    "column, first",
    [
        ("model", "blend/convnext"),
        ("run", "bad-oof"),
        ("cv-auc-tta", "probe"),
        ("train_s", "real"),
        ("public_best", "real"),
    ],
)
def test_sort_by_any_column_with_missing_values_last(project, monkeypatch, column, first):
    rows = json.loads(_invoke(project, monkeypatch, "--json", "--no-page", "--sort", column).stdout)
    key = column.replace("-", "_")
    assert rows[0]["run"] == first or rows[0][key] == rows[[r["run"] for r in rows].index(first)][key]
    values = [r[key] for r in rows]
    n = sum(v is not None for v in values)
    assert all(v is None for v in values[n:])


def test_sort_rows_directions_and_a_bad_column():
    rows = [
        dict.fromkeys(COLUMNS) | {"run": n, "cv_auc": a, "model": m}
        for n, a, m in (("a", 0.7, "z"), ("b", None, "y"), ("c", 0.9, None))
    ]
    assert [r["run"] for r in sort_rows(rows, "cv_auc")] == ["c", "a", "b"]
    assert [r["run"] for r in sort_rows(rows, "model")] == ["b", "a", "c"]
    res = runner.invoke(app, ["runs", "--sort", "colour"])
    assert res.exit_code == 2 and "--sort 'colour' is not a column" in res.stderr


def test_csv_parses_with_one_row_per_run(project, monkeypatch):
    res = _invoke(project, monkeypatch, "--csv", "--no-page")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["run"] for r in rows] == [
        r["run"] for r in json.loads(_invoke(project, monkeypatch, "--json", "--no-page").stdout)
    ]
    assert list(rows[0]) == list(COLUMNS)
    real = next(r for r in rows if r["run"] == "real")
    assert float(real["cv_auc"]) == pytest.approx(_pooled_auc(project / "runs" / "real"), abs=1e-12)
    assert real["tta"] == "2"


def test_index_html_links_every_run_and_needs_no_network(project, monkeypatch):
    _invoke(project, monkeypatch)
    page = (project / "runs" / "index.html").read_text()
    for name in ("real", "probe", "blend/convnext", "broken", "bad-oof"):
        assert f"<td>{name}</td>" in page
    assert '<a href="probe/report.html">report</a>' in page
    for run in ("real", "blend/convnext", "broken", "bad-oof"):
        assert f"not made yet: hcd report --run-dir runs/{run}" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert not list((project / "runs").glob(".tmp-*"))


def test_a_run_folder_given_alone_and_an_empty_folder(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    rows = json.loads(runner.invoke(app, ["runs", "runs/real", "--json", "--no-page"]).stdout)
    assert [r["run"] for r in rows] == ["real"]
    assert runner.invoke(app, ["runs", "runs/real"]).exit_code == 0
    assert not (project / "runs" / "real" / "index.html").exists()  # a run folder keeps only what runs write
    assert (
        '<a href="real/report.html">' in (project / "runs" / "index.html").read_text()
        or "hcd report --run-dir runs/real" in (project / "runs" / "index.html").read_text()
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["runs", str(empty)])
    assert res.exit_code == 1 and "no run folders in" in res.stderr
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["runs"])
    assert res.exit_code == 1 and "no runs/ folder here" in res.stderr


def test_log_seconds_sums_fold_sessions_and_ignores_other_lines(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "2024-01-01 10:00:00 train resnet18 @ 96px on cpu\n"
        "2024-01-01 10:00:10 fold 0: 100 train / 50 val images, 3 steps/epoch of 32; trainable all\n"
        "2024-01-01 10:01:10 fold 0 epoch 1/2: train_loss 0.7\n"
        "2024-01-01 10:05:00 fold 0: interrupted\n"  # the session ends at its last epoch line, not here
        "2024-01-01 11:00:00 fold 0: resuming after epoch 1\n"
        "2024-01-01 11:00:05 fold 0: 100 train / 50 val images, 3 steps/epoch of 32; trainable all\n"
        "2024-01-01 11:00:35 fold 0 epoch 2/2: train_loss 0.6\n"
        "2024-01-01 11:00:40 fold 1: 100 train / 50 val images, 3 steps/epoch of 32; trainable all\n"
        "2024-01-01 11:00:41 fold 1 epoch 1/2: train_loss 0.6\n"
    )
    assert log_seconds(log) == 60 + 30 + 1
    log.write_text("2024-01-01 10:00:00 fold 0: 100 train / 50 val images\n")  # no epoch finished
    assert log_seconds(log) is None
