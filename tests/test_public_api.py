"""Every sub-package names its public API twice: a ``public_api(__name__, {...})`` table (names load on first
use, ``hcd_kit.lazy``) and an ``if TYPE_CHECKING:`` block of the same imports (for type checkers and IDEs).
These tests read both with ``ast`` and hold them to the same (module, name) pairs, each of which must exist."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hcd_kit"


def _uses_public_api(path: Path) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "public_api"
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
    )


PACKAGES = sorted(p for p in PKG.rglob("__init__.py") if _uses_public_api(p))


def _package(path: Path) -> str:
    return ".".join(("hcd_kit", *path.parent.relative_to(PKG).parts))


def table_pairs(tree: ast.Module) -> set[tuple[str, str]]:
    """(submodule, name) from the ``public_api(__name__, {"module": "Name name", ...})`` call."""
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "public_api"
    ]
    assert len(calls) == 1, "one public_api(...) call per package"
    table = ast.literal_eval(calls[0].args[1])  # a literal dict of strings (implicit concatenation included)
    return {(module, name) for module, names in table.items() for name in names.split()}


def type_checking_pairs(tree: ast.Module, package: str) -> set[tuple[str, str]]:
    """(submodule, name) from the ``from PACKAGE.MODULE import ...`` lines of the ``if TYPE_CHECKING:`` block."""
    blocks = [
        n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1, "one `if TYPE_CHECKING:` block of the same names"
    pairs = set()
    for node in ast.walk(blocks[0]):
        if isinstance(node, ast.ImportFrom):
            assert node.module and node.module.startswith(package + "."), ast.unparse(node)
            for alias in node.names:
                assert alias.asname in (None, alias.name), f"{ast.unparse(node)}: a name is imported as itself"
                pairs.add((node.module[len(package) + 1 :], alias.name))
    return pairs


def test_every_sub_package_is_checked():
    assert len(PACKAGES) >= 6, [str(p) for p in PACKAGES]  # data, training, inference, features, report, kaggle, ...


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: p.parent.name)
def test_table_and_type_checking_block_name_the_same_objects(path):
    package = _package(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    table, typed = table_pairs(tree), type_checking_pairs(tree, package)
    assert table == typed, (
        f"{path.relative_to(PKG.parent)}: only in the public_api table: {sorted(table - typed)}; "
        f"only under TYPE_CHECKING: {sorted(typed - table)}"
    )


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: p.parent.name)
def test_every_public_name_exists_in_its_module(path):
    package = _package(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing = [
        f"{module}.{name}"
        for module, name in sorted(table_pairs(tree))
        if not hasattr(importlib.import_module(f"{package}.{module}"), name)
    ]
    assert not missing, f"{package} names what its modules do not define: {missing}"
    pkg = importlib.import_module(package)
    assert all(
        getattr(pkg, name) is getattr(importlib.import_module(f"{package}.{module}"), name)
        for module, name in table_pairs(tree)
    )


def test_the_check_sees_a_difference():
    source = (
        'from typing import TYPE_CHECKING\n__all__, __getattr__, __dir__ = public_api(__name__, {"a": "X y", '
        '"b": "Z"})\nif TYPE_CHECKING:\n    from hcd_kit.p.a import X\n    from hcd_kit.p.b import Z, w\n'
    )
    tree = ast.parse(source)
    assert table_pairs(tree) == {("a", "X"), ("a", "y"), ("b", "Z")}
    assert type_checking_pairs(tree, "hcd_kit.p") == {("a", "X"), ("b", "Z"), ("b", "w")}
