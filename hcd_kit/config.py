"""Typed configuration: dataclasses with defaults in code, loadable from TOML, overridden by flags.

A config class is a plain ``@dataclass`` (one level of nested dataclasses allowed, as TOML tables).
``load_config(Cls, toml_path, overrides)`` builds one: defaults, then the file, then the flags given on the
command line (``None`` means "flag not given"). Unknown keys and values of the wrong type are errors that
name the key, so a typo in a config file never silently trains the wrong thing. ``dump_toml`` writes the
resolved config beside a run so it can be reproduced exactly.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from hcd_kit.errors import ConfigError
from hcd_kit.fsutil import atomic_write_text

T = TypeVar("T")


def flag(key: str) -> str:
    """How the user names config key ``key``: its flag (``--batch-size``), or ``augment.color`` for a table key."""
    return key if "." in key else "--" + key.replace("_", "-")


def check_choice(label: str, value: Any, choices: Any) -> None:
    """Raise a ConfigError naming ``label`` unless ``value`` is one of the ``Literal`` type ``choices``."""
    allowed = typing.get_args(choices)
    if value not in allowed:
        raise ConfigError(f"{label}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"config key '{key}': invalid value {value!r}")
    if origin is typing.Literal:
        check_choice(f"config key '{key}'", value, tp)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return type(value)(_check_type(key, v, item_tp) for v in value) if origin is list else tuple(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}': expected {getattr(tp, '__name__', tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrongly typed values."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(prefix + k for k in fields)})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{prefix}{name}' must be a table")
            kwargs[name] = from_dict(tp, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, tp)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively overlay ``overrides`` on ``base``; ``None`` values (flags not given) are skipped.

    Keys may be dotted (``"optim.lr"``) to reach into a nested table.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        if rest:
            sub = out.setdefault(head, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"config key '{head}' is not a table")
            out[head] = merge(sub, {rest: value})
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str | os.PathLike[str], fix: str = "correct it") -> dict[str, Any]:
    """The TOML file at ``path``; a one-line ConfigError for a missing file, or one that is not UTF-8 TOML
    (garbage, a file cut short mid-line), ending in ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}; {fix}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 text; {fix}") from None


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Defaults from ``cls``, then ``base`` (a recipe's table), then the TOML file at ``path`` (if any), then
    ``overrides`` (flags)."""
    data = to_dict(cls())
    if base:
        data = merge(data, base)
    if path is not None:
        data = merge(data, read_toml(path))
        if overrides:
            from_dict(cls, data)  # check the file on its own: a flag must not hide a wrong value in it
    if overrides:
        data = merge(data, overrides)
    return from_dict(cls, data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        s = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write a flat-or-one-level-nested mapping as TOML; ``None`` values are left out."""
    lines: list[str] = []
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append("")
        lines.append(f"[{key}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def dump_toml(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write dataclass ``obj`` (or a mapping) to ``path`` as TOML, atomically."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    atomic_write_text(path, dumps_toml(data))
