"""``hcd --help`` as a user reads it: the train help shows every option with its metavar or choices, its default
and its help at 80 and 120 columns; no command's help shows Python type labels or lines wider than the terminal;
every help ends with an example; ``hcd --version`` works; a bare group prints its help once; and each renamed
flag still works with a note.

The help is checked for content, not compared with a snapshot: rich and Typer are installed from a ``>=`` range,
and a new release may draw the panels, wrap lines or place columns differently. An option's row is read from the
line where its name starts to the next option's, with borders and line breaks squashed away, so the checks hold
however the row is wrapped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.training import TrainConfig


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
    res = CliRunner().invoke(
        app, [*args, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None, "NO_COLOR": "1"}
    )
    assert res.exit_code == 0, res.output
    return res.output


def hcd(*args: str, width: int = 100) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(width), "TERMINAL_WIDTH": str(width), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hcd_kit", *args], capture_output=True, text=True, timeout=120, env=env
    )


def squash(text: str) -> str:
    """``text`` without whitespace and box-drawing characters: the same however rich wraps or frames it."""
    return re.sub(r"[\s\u2500-\u257f]+", "", text)


def option_rows(text: str) -> dict[str, str]:
    """Each option's row of a help's options panel, squashed, by the option's first name. A row starts at a
    line whose first character (borders aside) is a dash at the panel's left edge; wrapped help text that
    happens to begin with a flag is indented to the help column, so it does not start a row."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if re.search(r"\bOptions\b", line))
    body = [re.sub(r"[\u2500-\u257f]", " ", line) for line in lines[start + 1 :]]
    indent = [len(line) - len(line.lstrip()) if line.strip() else None for line in body]
    edge = min(n for n, line in zip(indent, body) if n is not None and line.lstrip().startswith("-"))
    heads = [i for i, line in enumerate(body) if indent[i] == edge and line.lstrip().startswith("-")]
    return {body[i].split()[0]: squash("\n".join(body[i:j])) for i, j in zip(heads, heads[1:] + [len(body)])}


def shown_default(param) -> str | None:
    """What ``[default: ...]`` should say for a click parameter, or None where no default is shown."""
    if isinstance(param.show_default, str):
        return f"({param.show_default})"  # a described default ("recipe's, else 8"), in parentheses
    if not param.show_default or param.default is None:
        return None
    if param.is_flag:  # a --x/--no-x switch shows the side it is on; a lone switch (--resume) nothing
        return (param.opts if param.default else param.secondary_opts)[0].lstrip("-") if param.secondary_opts else None
    return str(param.default)


TRAIN = get_command(app).commands["train"]
CHOICES = {
    name: typing.get_args(tp)
    for name, tp in typing.get_type_hints(TrainConfig).items()
    if typing.get_origin(tp) is typing.Literal
}  # the settings' own choices, from the library


@pytest.mark.parametrize("width", [80, 120])
def test_train_help_shows_every_option_with_its_metavar_default_and_help(width):
    res = hcd("train", "--help", width=width)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "Usage:" in text and "hcd train" in text
    intro = squash(text.split("Options")[0])
    first, _, rest = TRAIN.help.partition("\n")
    assert squash(first) in intro  # the docstring's first line, then every example it gives
    examples = [
        line.strip().split("  (")[0] for line in rest.splitlines() if line.strip().startswith(("hcd ", "torchrun "))
    ]
    assert len(examples) >= 5 and all(squash(e) in intro for e in examples), examples
    rows = option_rows(text)
    shown = [p for p in TRAIN.params if not p.hidden]
    assert sorted(rows) == sorted(p.opts[0] for p in shown), f"options shown at {width} columns: {sorted(rows)}"
    for p in shown:
        row, name = rows[p.opts[0]], p.opts[0]
        assert all(squash(o) in row for o in p.opts + p.secondary_opts), (name, row)
        if p.metavar:
            assert squash(p.metavar) in row, (name, p.metavar, row)
        for choice in CHOICES.get(p.name, ()):  # a Literal setting names every value it takes
            assert choice in row, (name, choice, row)
        words = re.findall(r"[A-Za-z0-9][\w.:/+-]*[\w/]|[A-Za-z0-9]", p.help or "")
        missing = [w for w in words if squash(w) not in row]
        assert not missing, f"{name}: help words missing at {width} columns: {missing}\n{row}"
        default = shown_default(p)
        if default is None:
            assert "[default:" not in row, (name, row)
        else:
            assert squash(f"[default: {default}]") in row, (name, default, row)


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "hcd")
def test_help_is_clean_fits_and_ends_with_an_example(args, width):
    text = help_text(args, width)
    for label in TYPE_LABELS:
        assert label not in text, f"`hcd {' '.join(args)} --help` shows {label!r}"
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, f"lines wider than {width} columns: {wide}"
    assert "Example" in text.split("Options")[0], "the help text should end with an example that runs"


def test_commands_are_listed_in_the_order_the_pipeline_runs():
    names = [ln.split()[1] for ln in help_text([], 120).splitlines() if re.match(r"^│ [a-z]+ ", ln)]
    pipeline = "demo download prepare folds train cv predict ensemble evaluate submit kernel".split()
    assert [n for n in names if n in pipeline] == pipeline


def test_version():
    from importlib.metadata import version

    res = hcd("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"hcd {version('hcd-kit')}"


@pytest.mark.parametrize("args", [[], ["kernel"], ["dataset"]])
def test_a_bare_group_prints_its_help_once(args):
    res = hcd(*args)
    assert res.returncode == 0 and res.stdout.count("Usage:") == 1, res.stdout


def test_defaults_and_choices_come_from_the_library():
    rows = option_rows(help_text(["train"], 200))
    for flag, default in [
        ("--optimizer", "adamw"),
        ("--schedule", "onecycle"),
        ("--patience", "0"),
        ("--precision", "auto"),
        ("--strategy", "auto"),
        ("--device", "auto"),
        ("--seed", "0"),
        ("--threads", "0"),
        ("--epochs", "(recipe's, else 8)"),
        ("--pretrained", "(recipe's, else pretrained)"),
    ]:  # a recipe sets these two
        assert squash(f"[default: {default}]") in rows[flag], (flag, rows[flag])
    assert squash("<adamw|sgd>") in rows["--optimizer"]  # a short Literal shows its choices as the metavar
    for choice in ("none", "pos-weight", "balanced"):  # a long one names them in its help
        assert choice in rows["--imbalance"]
    res = CliRunner().invoke(app, ["train", "--strategy", "nope"])
    assert res.exit_code == 2 and "--strategy" in res.output


# the spellings that 0.2.0 removed (CHANGELOG.md): (command, old flag, a value for it)
REMOVED = [
    ("predict", "--folds", "0"),
    ("predict", "--ensemble", "rank"),
    ("ensemble", "--how", "rank"),
    ("download", "--timeout", "60"),
    ("prepare", "--out", "store"),
    ("kernel output", "--out", "out"),
    ("kernel output", "--timeout", "60"),
    ("dataset push", "--out", "ds"),
    ("dataset push", "--timeout", "60"),
]


@pytest.mark.parametrize("command, old, value", REMOVED, ids=lambda x: x)
def test_a_removed_flag_spelling_is_an_unknown_option(command, old, value, tmp_path, monkeypatch, capsys):
    from hcd_kit.cli._app import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*command.split(), old, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert f"No such option: {old}" in err and "deprecated" not in err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_hcd_predict_folds_is_an_unknown_option():
    res = hcd("predict", "--folds", "0")
    assert res.returncode == 2 and "No such option: --folds" in res.stderr, res.stderr
