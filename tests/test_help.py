"""``hcd --help`` as a user reads it: the train help matches its snapshot at 80 and 120 columns, no command's
help shows Python type labels or lines wider than the terminal, every help ends with an example,
``hcd --version`` works, a bare group prints its help once, and each renamed flag still works with a note.

The snapshots are plain text; after an intended change of the train options or their help, regenerate them:

    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_help.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from hcd_kit.cli import app

SNAPSHOTS = Path(__file__).parent / "snapshots"
def _commands(cmd, path=()) -> list[list[str]]:
    """Every command and group of the app, walked from the click tree Typer builds (new ones are covered too)."""
    out = [list(path)]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not sub.hidden:
            out += _commands(sub, (*path, name))
    return out


COMMANDS = _commands(get_command(app))
TYPE_LABELS = ["<bool>", "<str>", "<int", "<float", "<path>", "list[", "{runs}", "…"]


def help_text(args: list[str], width: int) -> str:
    """In-process (fast); rich reads COLUMNS for each help (TERMINAL_WIDTH only once per process)."""
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None,
                                                          "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    return res.output


def hcd(*args: str, width: int = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(width), "TERMINAL_WIDTH": str(width), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "hcd_kit", *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.parametrize("width", [80, 120])
def test_train_help_matches_its_snapshot(width):
    res = hcd("train", "--help", width=width)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    snapshot = SNAPSHOTS / f"train_help_{width}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text, encoding="utf-8")
    assert snapshot.is_file(), f"no snapshot {snapshot}; create it with UPDATE_SNAPSHOTS=1 python -m pytest {__file__}"
    assert text == snapshot.read_text(encoding="utf-8"), (
        f"`hcd train --help` at {width} columns differs from {snapshot}; if the change is intended, regenerate "
        "the snapshots with UPDATE_SNAPSHOTS=1 python -m pytest tests/test_help.py"
    )


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "hcd")
def test_help_is_clean_fits_and_ends_with_an_example(args, width):
    text = help_text(args, width)
    for label in TYPE_LABELS:
        assert label not in text, f"`hcd {' '.join(args)} --help` shows {label!r}"
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, f"lines wider than {width} columns: {wide}"
    assert "Example" in text.split("Options")[0], "the help text should end with an example that runs"


def test_version():
    from importlib.metadata import version

    res = hcd("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"hcd {version('hcd-kit')}"


@pytest.mark.parametrize("args", [[], ["kernel"], ["dataset"]])
def test_a_bare_group_prints_its_help_once(args):
    res = hcd(*args)
    assert res.returncode == 0 and res.stdout.count("Usage:") == 1, res.stdout


def test_defaults_and_choices_come_from_the_library():
    text = help_text(["train"], 200)
    for flag, default in [("--optimizer", "adamw"), ("--schedule", "onecycle"), ("--patience", "0"),
                          ("--precision", "auto"), ("--strategy", "auto"), ("--device", "auto"), ("--seed", "0"),
                          ("--threads", "0"), ("--epochs", "(recipe's, else 8)"),
                          ("--pretrained", "(recipe's, else pretrained)")]:  # a recipe sets these two
        rest = text.split(f"│ {flag} ", 1)[1].split("\n│ --", 1)[0]
        assert f"[default: {default}]" in rest, (flag, rest)
    res = CliRunner().invoke(app, ["train", "--strategy", "nope"])
    assert res.exit_code == 2 and "--strategy" in res.output


# old spelling -> (arguments that reach a check after the flag is read, what that check says)
RENAMED = {
    ("predict", "--folds"): (["--run-dir", "nowhere", "--folds", "x"], "--fold must be 'all'"),
    ("predict", "--ensemble"): (["--run-dir", "nowhere", "--ensemble", "rank"], "nowhere"),
    ("ensemble", "--how"): (["nowhere", "--out", "blend.csv", "--how", "rank"], "nowhere"),
    ("download", "--timeout"): (["--timeout", "0"], "--stall-timeout must be positive"),
}


@pytest.mark.parametrize("command, old", list(RENAMED), ids=lambda x: x)
def test_a_renamed_flag_still_works_with_a_note(command, old, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, says = RENAMED[(command, old)]
    res = CliRunner().invoke(app, [*command.split(), *args])
    assert f"note: {old} is deprecated; use --" in res.stderr, res.output
    assert res.stderr.count("note:") == 1 and "No such option" not in res.output
    assert says in res.stderr, res.stderr


def test_prepare_out_is_now_out_dir(subset_factory, tmp_path):
    data = subset_factory(n_train=8, n_test=0)
    res = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(tmp_path / "store"),
                                   "--split", "train", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "note: --out is deprecated; use --out-dir" in res.stderr
    assert (tmp_path / "store" / "manifest.json").is_file()


def test_kaggle_transfer_flags_keep_their_old_names(kaggle_env, tmp_path):
    r = kaggle_env.invoke("kernel", "output", "--name", "hcd-train", "--out", tmp_path / "out", "--timeout", "60")
    assert r.exit_code == 1 and "HTTP 404" in r.stderr, r.stderr  # accepted; the stand-in has no such kernel
    assert "note: --out is deprecated; use --out-dir" in r.stderr
    assert "note: --timeout is deprecated; use --transfer-timeout" in r.stderr
    wheel = tmp_path / "hcd_kit-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hcd_kit/__init__.py", "")
    r = kaggle_env.invoke("dataset", "push", "--wheel", wheel, "--out", tmp_path / "ds", "--timeout", "60", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "ds" / "dataset-metadata.json").is_file()
    assert r.stderr.count("is deprecated") == 2
