"""``hcd train`` flags given as text elsewhere (``hcd kernel push --train-args "--epochs 8 --model r34"``), read
once: split into words, each flag checked against ``hcd train``'s own (``TrainConfig``'s fields and the command's
options), its value converted and the settings validated by ``TrainConfig``, so a kernel that would fail at its
``hcd train`` step is refused in one line before it is pushed.

    >>> args = parse_train_args("--epochs 3 --no-pretrained --model=resnet34")
    >>> args.words, args.overrides
    (['--epochs', '3', '--no-pretrained', '--model=resnet34'], {'epochs': 3, 'pretrained': False, 'model': 'resnet34'})
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hcd_kit import argv
from hcd_kit.config import check_choice, flag
from hcd_kit.errors import ConfigError
from hcd_kit.training.config import TrainConfig

# `hcd train`'s options that are not TrainConfig settings (cli/train.py): those taking a value, then switches
COMMAND_OPTIONS = ("data_dir", "fold", "run_dir", "recipe", "config")
COMMAND_SWITCHES = ("resume", "plan")


@dataclass
class TrainArgs:
    """``hcd train`` flags read once: the words the command receives, the ``TrainConfig`` settings they override
    (validated) and the command's own options they set (``recipe``, ``config``, ``fold``, ...)."""

    words: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


def _settings() -> dict[str, Any]:
    """Each ``TrainConfig`` field that is a flag of ``hcd train`` (it has help text) -> its type."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if "help" in f.metadata:
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))  # weights: str | None -> str
            out[f.name] = tp
    return out


def train_flags() -> list[str]:
    """Every flag ``hcd train`` takes (a switch ``--x`` also as ``--no-x``), as this parser reads them."""
    out = []
    for key, tp in _settings().items():
        out += [flag(key), "--no-" + key.replace("_", "-")] if tp is bool else [flag(key)]
    return out + [flag(k) for k in (*COMMAND_OPTIONS, *COMMAND_SWITCHES)]


def _convert(name: str, value: str, tp: Any, where: str) -> Any:
    if typing.get_origin(tp) is typing.Literal:
        check_choice(f"{where}: {name}", value, tp)
        return value
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            kind = "an integer" if tp is int else "a number"
            raise ConfigError(f"{where}: {name} takes {kind}, got {value!r}") from None
    return value


def parse_train_args(text: str | Sequence[str], where: str = "--train-args", one_run: bool = False) -> TrainArgs:
    """Read ``hcd train`` flags (text, split as a shell would, or words); a ConfigError naming ``where`` for an
    unknown flag, a missing or wrong value, or settings ``TrainConfig`` refuses. ``one_run`` (a kernel trains one
    run) also refuses a blend recipe, whose members are trained one run each."""
    words = argv.split(text, where)
    settings = _settings()
    switches = {flag(k): (k, True) for k, tp in settings.items() if tp is bool}
    switches |= {"--no-" + k.replace("_", "-"): (k, False) for k, tp in settings.items() if tp is bool}
    switches |= {flag(k): (k, True) for k in COMMAND_SWITCHES}
    valued = {flag(k): k for k, tp in settings.items() if tp is not bool} | {flag(k): k for k in COMMAND_OPTIONS}
    out = TrainArgs(words=list(words))
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in switches and not eq:
            key, value = switches[name]
        elif name in valued:
            if not eq:
                if i + 1 >= len(words):
                    raise ConfigError(f"{where}: {name} needs a value")
                i, value = i + 1, words[i + 1]
            key = valued[name]
            value = _convert(name, value, settings.get(key, str), where)
        else:
            raise ConfigError(f"{where}: {word!r} is not a flag of `hcd train` (see hcd train --help)")
        (out.overrides if key in settings else out.options)[key] = value
        i += 1
    try:
        TrainConfig(**out.overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if "recipe" in out.options:
        _check_recipe(out.options["recipe"], where, one_run)
    return out


def _check_recipe(name: str, where: str, one_run: bool) -> None:
    from hcd_kit.training.recipes import load_recipe

    recipe = load_recipe(name)  # an unknown recipe is refused here, naming the choices
    if one_run and recipe.is_blend:
        members = " and ".join(f'{where} "--recipe {m.recipe}"' for m in recipe.members)
        raise ConfigError(
            f"{where}: recipe '{name}' trains {len(recipe.members)} runs, a kernel one; push one "
            f"kernel per member ({members}), then `hcd ensemble` their runs --weights auto"
        )
