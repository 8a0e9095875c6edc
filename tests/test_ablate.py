"""benchmarks/ablate.py: the runs it appends to a results file, and the table it reads back from such files."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from conftest import packed_subset

ABLATE = Path(__file__).resolve().parents[1] / "benchmarks" / "ablate.py"


def ablate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ABLATE), *args], capture_output=True, text=True, timeout=600)


def test_a_screen_appends_its_run_and_the_summary_reads_it_back(sample_root, tmp_path):
    data = packed_subset(sample_root, tmp_path / "data", n_train=64, n_test=8, n_folds=2)
    out = tmp_path / "results.jsonl"
    where = ["--data-dir", str(data), "--work-dir", str(tmp_path / "runs")]
    run = ablate(
        *where,
        "--set",
        "epochs=1",
        "--set",
        "batch_size=16",
        "--seeds",
        "0",
        "--folds",
        "0",
        "--out",
        str(out),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)["variants"]["set"]
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["variant"] == "set" and line["seed"] == 0
    assert line["overrides"] == {"epochs": 1, "batch_size": 16}
    assert line["folds"] == [0]  # a screen says which folds it trained
    assert line["auc"] == printed["aucs"][0] and 0.0 <= line["auc"] <= 1.0

    summary = ablate("--summary", str(out), "--json")
    assert summary.returncode == 0, summary.stderr
    (row,) = json.loads(summary.stdout)
    assert row["variant"] == "set" and row["folds"] == [0] and row["seeds"] == [0]
    assert row["mean"] == line["auc"] and row["sd"] is None  # one seed has no spread


def test_the_summary_groups_by_variant_and_folds_over_several_files(tmp_path):
    full = [0, 1, 2, 3, 4]
    first = [
        {"variant": "a", "seed": 1, "folds": full, "auc": 0.92, "seconds": 100, "auc_tta8": 0.93},
        {"variant": "a", "seed": 0, "folds": [0], "auc": 0.95, "seconds": 20},
        {"variant": "b", "seed": 0, "error": "TrainingError: boom"},
    ]
    second = [{"variant": "a", "seed": 0, "folds": full, "auc": 0.90, "seconds": 300, "auc_tta8": 0.91}]
    files = []
    for name, records in (("one.jsonl", first), ("two.jsonl", second)):
        files.append(tmp_path / name)
        files[-1].write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")

    rows = json.loads(ablate("--summary", *map(str, files), "--json").stdout)
    by_key = {(r["variant"], tuple(r["folds"])): r for r in rows}
    assert set(by_key) == {("a", tuple(full)), ("a", (0,))}  # the failed run has no row; a screen is its own row
    five = by_key["a", tuple(full)]
    assert five["seeds"] == [0, 1]
    assert abs(five["mean"] - 0.91) < 1e-12
    assert abs(five["sd"] - statistics.stdev([0.90, 0.92])) < 1e-12
    assert abs(five["tta8_mean"] - 0.92) < 1e-12 and five["seconds_mean"] == 200
    assert by_key["a", (0,)]["mean"] == 0.95

    table = ablate("--summary", *map(str, files))
    assert table.returncode == 0
    lines = [x.split() for x in table.stdout.splitlines()]
    assert ["a", "0,1,2,3,4", "0,1", "0.9100", "0.0141", "0.9200", "200"] in lines


def test_unreadable_results_and_missing_data_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"variant": "a", "seed": 0\n')
    res = ablate("--summary", str(bad))
    assert res.returncode != 0 and str(bad) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = ablate("--seeds", "0")
    assert res.returncode == 2 and "--data-dir is required" in res.stderr
