"""Command-line words: the one module that splits a free-text flag (``--train-args "--epochs 8 --model r34"``)
into words as a POSIX shell would, and joins words back into one line.

A free-text flag is split once, where it enters (``hcd_kit.training.train_args``, ``KernelSpec``); everything
after it works on the words, and a kernel script receives them as a list, never as text to split again.

    >>> split("--epochs 3 --weights 'my file.pth'", "--train-args")
    ['--epochs', '3', '--weights', 'my file.pth']
    >>> join(["--weights", "my file.pth"])
    "--weights 'my file.pth'"
    >>> values(["--model=uni", "--epochs", "2", "--model", "r18"], "--model")
    ['uni', 'r18']
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hcd_kit.errors import ConfigError


def split(text: str | Sequence[str] | None, flag: str) -> list[str]:
    """The words of ``text`` (already words: a copy); unbalanced quotes are a one-line ConfigError naming ``flag``."""
    if text is None:
        return []
    if not isinstance(text, str):
        return [str(w) for w in text]
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: {exc}") from None


def join(words: Sequence[str]) -> str:
    """One line a shell splits back into ``words`` (quoted only where needed)."""
    return shlex.join(words)


def name(word: str) -> str:
    """The flag a word names: ``--weights=x`` -> ``--weights``; any other word as it is."""
    return word.split("=", 1)[0] if word.startswith("--") else word


def values(words: Sequence[str], flag: str) -> list[str]:
    """Every value of ``flag`` in ``words``, given as ``flag VALUE`` or ``flag=VALUE``, in order."""
    out = []
    for i, word in enumerate(words):
        if word.startswith(flag + "="):
            out.append(word[len(flag) + 1 :])
        elif word == flag and i + 1 < len(words):
            out.append(words[i + 1])
    return out


def given(words: Sequence[str], *flags: str) -> list[str]:
    """The flags among ``flags`` that ``words`` name (``--x`` or ``--x=VALUE``), in the order they appear."""
    return [name(w) for w in words if name(w) in flags]


def each_value(words: Sequence[str]) -> list[str]:
    """Every word, with a ``--flag=VALUE`` word standing for its value: the words a path or reference can be."""
    return [w.partition("=")[2] if w.startswith("--") and "=" in w else w for w in words]
