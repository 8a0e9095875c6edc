"""The ``hcd`` entry point as a user runs it: every command listed with its help, and a wrong flag, an
unknown command or a file-system refusal reported as one line on stderr with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    "demo",
    "download",
    "prepare",
    "folds",
    "recipes",
    "train",
    "cv",
    "predict",
    "ensemble",
    "pseudo",
    "submit",
    "submissions",
    "kernel",
    "dataset",
]


def hcd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hcd_kit", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_help_lists_every_command():
    res = hcd("--help")
    assert res.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in res.stdout, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["folds", "--n-folds", "abc"], "Invalid value for '--n-folds'"),
        (["folds", "--seed", "-1"], "Invalid value for '--seed'"),
        (["prepare", "--frobnicate"], "No such option: --frobnicate"),
        (["trian"], "No such command 'trian'"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    res = hcd(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "--help" in lines[0] and "Traceback" not in res.stderr + res.stdout


def test_file_system_refusal_is_one_line_naming_the_file(subset_factory, tmp_path):
    data = subset_factory(n_train=20, n_test=0)
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = hcd("folds", "--data-dir", data, "--n-folds", "2", "--out", blocker / "folds.csv")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {blocker / 'folds.csv'}" in lines[0], res.stderr


def test_a_group_without_a_subcommand_shows_its_help():
    res = hcd("kernel")
    assert res.returncode == 0 and "push" in res.stdout and "status" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["train", "--img-size", "16"], "--img-size must be >= 32, got 16"),  # predict and embed refuse < 32 too
        (["train", "--fold", "0,x"], "--fold must be 'all', a fold number or a list like 0,2; got '0,x'"),
        (["predict", "--run-dir", "r", "--tta", "3"], "Invalid value for '--tta'"),
        (["ensemble", "r1", "--out", "b.csv", "--blend", "max"], "Invalid value for '--blend'"),
    ],
)
def test_an_error_about_a_flag_value_names_the_flag(args, message, tmp_path):
    res = hcd(*args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
