"""Damaged files hcd wrote itself: every reader answers with one line, ``error: PATH is damaged (WHAT); FIX``.

Each case damages one file of a real packed store, a real trained run (resnet10t from scratch, one epoch, two
folds of the shipped patches), a feature store or the submissions ledger, in one of the ways a copy cut
short or a file put in the wrong place damages it (cut in half, random bytes, empty, text, a JSON list), then
runs the command a user would run. The answer must be a non-zero exit and ONE line on stderr naming the file
and the command that fixes it, never a traceback; where the line names a command, running it must repair.
Readers that tolerate damage by design (a re-download, a re-plan, a re-pack) are checked not to raise.

The copies are hard links to one module-scoped store and run (hcd only ever replaces files, atomically), and
``damage`` writes a new file in place of the link, so each case costs a few milliseconds of setup.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import packed_subset
from test_probe import write_store
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.data import open_store

FAST = [
    *("--model", "resnet10t", "--no-pretrained", "--epochs", "1", "--img-size", "32", "--batch-size", "16"),
    *("--device", "cpu", "--threads", "1", "--precision", "fp32"),
]
GARBAGE = np.random.default_rng(0).bytes(4096)  # not UTF-8, no file format's magic


def hcd(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def linked_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, copy_function=os.link)
    return dest


def damage(path: Path, kind: str, like: Path | None = None) -> None:
    """Put a damaged file at ``path``: ``like``'s bytes (default: its own) cut in half, random bytes, nothing,
    a line of text, one letter, or a JSON list. A new file, never a write through a hard link to the fixture's.
    (torch.load raises KeyError for "hello", IndexError for "a", EOFError for nothing, RuntimeError for a cut
    zip, UnpicklingError for random bytes.)"""
    data = (like or path).read_bytes()
    path.unlink(missing_ok=True)
    kinds = {
        "truncated": data[: len(data) // 2],
        "garbage": GARBAGE,
        "empty": b"",
        "text": b"hello\n",
        "letter": b"a\n",
    }
    path.write_bytes(kinds.get(kind, b"[1, 2]\n"))


def one_line_error(res, *says: str) -> str:
    """The one error line of a failed command, which names each of ``says``."""
    assert isinstance(res.exception, SystemExit), f"escaped: {res.exception!r}\n{res.output}"  # not a crash
    assert res.exit_code != 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for text in says:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def run_fix(line: str):
    """Run the hcd command the error line names (between backticks)."""
    command = re.search(r"`(hcd [^`]*)`", line)[1]
    return hcd(*shlex.split(command)[1:])


@pytest.fixture(scope="module")
def trained(sample_root, tmp_path_factory) -> SimpleNamespace:
    """64 labelled and 16 test patches, packed, in 2 folds; a run trained on them; a feature store of them."""
    root = tmp_path_factory.mktemp("damaged")
    data = packed_subset(sample_root, root / "data", n_train=64, n_test=16, n_folds=2)
    run = root / "run"
    res = hcd("train", "--data-dir", data, "--run-dir", run, *FAST)
    assert res.exit_code == 0, res.output
    features = write_store(root / "features", data, signal=0.8)
    return SimpleNamespace(data=data, run=run, features=features)


# --- the packed store -------------------------------------------------------------------------------------

STORE = ("train_images.npy", "train_ids.csv", "manifest.json")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("name", STORE)
def test_a_damaged_packed_store_names_the_file_and_prepare_force(trained, tmp_path, name, kind):
    data = linked_copy(trained.data, tmp_path / "data")
    damage(data / "packed" / name, kind)
    res = hcd("train", "--data-dir", data, "--run-dir", tmp_path / "run", *FAST)
    one_line_error(res, f"{data / 'packed' / name} is damaged (", f"`hcd prepare --data-dir {data} --force`")


@pytest.mark.parametrize("name", STORE)
def test_the_command_in_the_line_repairs_the_store(trained, tmp_path, name):
    data = linked_copy(trained.data, tmp_path / "data")
    damage(data / "packed" / name, "truncated")
    line = one_line_error(hcd("train", "--data-dir", data, "--run-dir", tmp_path / "run", *FAST))
    res = run_fix(line)
    assert res.exit_code == 0 and "train: packed 64 images" in res.stdout, res.output
    fixed, original = open_store(data / "packed"), open_store(trained.data / "packed")
    assert (fixed.ids == original.ids).all() and np.array_equal(fixed.images, original.images)


@pytest.mark.parametrize("name", ["train_images.npy", "train_ids.csv"])
def test_plain_prepare_repacks_a_split_whose_files_no_longer_match_the_manifest(trained, tmp_path, name):
    data = linked_copy(trained.data, tmp_path / "data")
    damage(data / "packed" / name, "truncated")
    res = hcd("prepare", "--data-dir", data, "--workers", 1)
    assert res.exit_code == 0, res.output
    assert "train: packed 64 images" in res.stdout and "test: 16 images, up to date" in res.stdout
    assert len(open_store(data / "packed")) == 64


def test_prepare_force_packs_unchanged_inputs_again(trained, tmp_path):
    data = linked_copy(trained.data, tmp_path / "data")
    res = hcd("prepare", "--data-dir", data, "--workers", 1)
    assert "train: 64 images, up to date" in res.stdout and "test: 16 images, up to date" in res.stdout
    res = hcd("prepare", "--data-dir", data, "--workers", 1, "--force")
    assert res.exit_code == 0 and "train: packed 64" in res.stdout and "test: packed 16" in res.stdout, res.output


def test_a_damaged_test_store_is_repacked_from_test_or_named_without_it(trained, tmp_path):
    data, run = linked_copy(trained.data, tmp_path / "data"), linked_copy(trained.run, tmp_path / "run")
    damage(data / "packed" / "test_images.npy", "truncated")
    res = hcd("predict", "--run-dir", run, "--data-dir", data, "--tta", 1, "--out", tmp_path / "sub.csv")
    assert res.exit_code == 0, res.output  # DIR/test is there: predict packs it again on its way
    assert len(open_store(data / "packed", "test")) == 16

    damage(data / "packed" / "test_images.npy", "garbage")
    shutil.rmtree(data / "test")  # as on a read-only Kaggle input that holds only the packed store
    res = hcd("predict", "--run-dir", run, "--data-dir", data, "--tta", 1, "--out", tmp_path / "sub.csv")
    one_line_error(res, f"{data / 'packed' / 'test_images.npy'} is damaged (not a .npy array)", "--force")


# --- the run folder ---------------------------------------------------------------------------------------


def predict(run: Path, data: Path | None, out: Path):
    return hcd("predict", "--run-dir", run, *(["--data-dir", data] if data else []), "--tta", 1, "--out", out)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "text", "letter"])
def test_a_damaged_best_pt_names_the_command_that_retrains_the_fold(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    damage(run / "fold0" / "best.pt", kind)
    res = predict(run, trained.data, tmp_path / "sub.csv")
    line = one_line_error(res, f"{run / 'fold0' / 'best.pt'} is damaged (", f"delete {run / 'fold0'} and train")
    assert f"`hcd train --data-dir {trained.data.resolve()} --run-dir {run} --fold 0 --resume`" in line
    if kind == "truncated":  # the command works: that fold is trained again, and the run predicts
        shutil.rmtree(run / "fold0")
        assert run_fix(line).exit_code == 0
        assert predict(run, trained.data, tmp_path / "sub.csv").exit_code == 0


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "text", "letter"])
def test_a_damaged_last_pt_says_delete_it_to_restart_the_fold(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    state = json.loads((run / "fold0" / "state.json").read_text())
    (run / "fold0" / "state.json").unlink()
    (run / "fold0" / "state.json").write_text(json.dumps({**state, "finished": False}))  # a fold to resume
    damage(run / "fold0" / "last.pt", kind, like=run / "fold0" / "best.pt")  # a torch zip, cut short
    res = hcd("train", "--run-dir", run, "--data-dir", trained.data, "--resume", "--fold", 0)
    one_line_error(res, f"cannot resume from {run / 'fold0' / 'last.pt'} (", "delete it to restart the fold")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "list"])
def test_a_damaged_state_json_with_no_readable_last_pt_names_the_state(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    damage(run / "fold0" / "state.json", kind)
    damage(run / "fold0" / "last.pt", "text", like=run / "fold0" / "best.pt")
    res = hcd("train", "--run-dir", run, "--data-dir", trained.data, "--resume")
    one_line_error(res, f"{run / 'fold0' / 'state.json'} is damaged (", "delete it and the fold's last.pt")
    if kind == "garbage":
        assert hcd("cv", "--run-dir", run).exit_code == 0  # hcd cv only loses the "unfinished" note


@pytest.mark.parametrize("kind", ["cut", "garbage", "empty"])
def test_a_damaged_config_toml_names_the_file_and_what_predicting_needs(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    text = (run / "config.toml").read_text()
    (run / "config.toml").unlink()
    cut = text[: text.index('"') + 3]  # cut short inside the first string: `model = "re`
    (run / "config.toml").write_bytes({"cut": cut.encode(), "garbage": GARBAGE, "empty": b""}[kind])
    res = predict(run, trained.data, tmp_path / "sub.csv")
    one_line_error(res, str(run / "config.toml"), "restore it", "train.log")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "list"])
def test_a_damaged_plan_json_says_delete_it(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    damage(run / "plan.json", kind)
    res = hcd("train", "--run-dir", run, "--data-dir", trained.data, "--resume")
    one_line_error(res, f"{run / 'plan.json'} is damaged", "delete it")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "list"])
def test_a_damaged_data_json_says_pass_data_dir(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    damage(run / "data.json", kind)
    res = predict(run, None, tmp_path / "sub.csv")
    one_line_error(res, f"{run / 'data.json'} is damaged (", "pass --data-dir DIR")
    if kind == "garbage":  # ... and that is the fix
        assert predict(run, trained.data, tmp_path / "sub.csv").exit_code == 0


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_a_damaged_oof_csv_names_the_command_that_retrains_the_fold(trained, tmp_path, kind):
    run = linked_copy(trained.run, tmp_path / "run")
    damage(run / "fold1" / "oof.csv", kind)
    res = hcd("cv", "--run-dir", run)
    one_line_error(res, f"{run / 'fold1' / 'oof.csv'} is damaged (", f"--run-dir {run} --fold 1 --resume`")


# --- the feature store and the ledger ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("name", ["manifest.json", "train_features.npy", "train_ids.csv"])
def test_a_damaged_feature_store_says_embed_force(trained, tmp_path, name, kind):
    features = linked_copy(trained.features, tmp_path / "features")
    damage(features / name, kind)
    res = hcd("probe", "--features", features, "--data-dir", trained.data, "--run-dir", tmp_path / "probe")
    one_line_error(res, "is damaged (", name, "`hcd embed --force`")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "list"])
def test_a_damaged_ledger_names_the_line(tmp_path, kind):
    from hcd_kit.kaggle.ledger import LedgerRecord

    ledger = tmp_path / "ledger.jsonl"
    records = [LedgerRecord("2024-01-01T00:00:00Z", f"/s{i}.csv", "ab" * 32, "m" * i, "c", ref=i) for i in (1, 9)]
    ledger.write_text("".join(r.to_json() + "\n" for r in records))
    damage(ledger, kind)
    res = hcd("submissions", "--no-refresh", "--ledger", ledger)
    one_line_error(res, f"{ledger} line ", "fix or remove that line")


# --- readers that tolerate damage by design ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "list"])
def test_records_that_are_only_a_shortcut_are_ignored_when_damaged(trained, tmp_path, kind):
    """A damaged download marker means "download again", a damaged slot ledger "no slots known here" (the
    service's refusal still counts), a damaged budget record "measure again", a damaged packed manifest
    "pack again", a damaged submission sidecar "no CV figure in the ledger"."""
    from hcd_kit.data.store import read_manifest
    from hcd_kit.kaggle.download import MARKER, read_marker
    from hcd_kit.kaggle.sessions import SessionLedger
    from hcd_kit.layout import RunLayout
    from hcd_kit.runs.record import read_budget_record
    from hcd_kit.runs.submission import read_sidecar

    files = {
        "marker": (tmp_path / MARKER, {"competition": "c", "files": {}, "entries": [], "archive_bytes": 1}),
        "slots": (tmp_path / "gpu-sessions.json", {"sessions": [{"ref": "u/k", "pid": 1, "host": "h"}]}),
        "budget": (RunLayout(tmp_path).budget, {"predict_s": 1.0, "epoch_s": 2.0}),
        "manifest": (
            tmp_path / "packed" / "manifest.json",
            json.loads((trained.data / "packed/manifest.json").read_text()),
        ),
        "sidecar": (tmp_path / "sub.csv.json", {"runs": ["r"], "cv_auc": 0.9}),
    }
    for path, value in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
        damage(path, kind)
    assert read_marker(tmp_path, "c") is None
    assert SessionLedger(path=files["slots"][0])._read() == []
    assert read_budget_record(RunLayout(tmp_path)) == {}
    assert read_manifest(tmp_path / "packed") == {}
    assert read_sidecar(tmp_path / "sub.csv") == {}


def test_resume_refuses_an_emptied_config_instead_of_training_the_default_model(tmp_path):
    from hcd_kit.errors import DataError
    from hcd_kit.training import resolve_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")  # emptied by a crash elsewhere, a bad copy, an editor
    with pytest.raises(DataError, match=r"config.toml is damaged \(it names no model\)"):
        resolve_config(None, {}, run, resume=True)
