"""Public APIs that load on first use: a sub-package names its API in one table, and nothing heavy (torch,
timm, the kaggle client) is imported until a name is used, so ``hcd --help`` and ``hcd submit`` start fast.

    __all__, __getattr__, __dir__ = public_api(__name__, {"loop": "Hooks train", "config": "TrainConfig"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def public_api(
    package: str, modules: dict[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, a module ``__getattr__`` (PEP 562) and ``__dir__`` for ``package``; ``modules`` maps each
    submodule to the public names it defines, separated by spaces."""
    homes = {name: module for module, names in modules.items() for name in names.split()}
    names = sorted(homes)

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
