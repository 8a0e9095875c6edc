"""The package's shape: which layer may import which, and modules small enough to read in one sitting.

The pipeline reads bottom-up: a ground floor (hcd_kit/*.py), then data, training, inference and kaggle, then the
CLI. These tests read every module's imports (top-level and inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hcd_kit"
MODULES = sorted(PKG.rglob("*.py"))
MAX_LINES = 350
# importer sub-package -> sub-packages it must never import
FORBIDDEN = {
    "inference": {"training", "cli"},
    "data": {"kaggle", "training", "inference", "cli"},
    "training": {"cli", "kaggle"},
    "kaggle": {"cli", "training"},
    "backbones": {"data", "training", "inference", "features", "kaggle", "cli"},  # what --model names
    "features": {"training", "kaggle", "cli"},
    "report": {"training", "features", "cli"},  # hcd report: runs (inference), patches (data), kaggle.ledger only  # hcd embed / hcd probe: frozen features and their probes
    "": {"cli"},  # the ground floor
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else ""


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hcd_kit."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hcd_kit.")}
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_layers_import_only_downwards(path):
    layer = _layer(path)
    if layer == "cli" or path.name in ("demo.py", "__main__.py"):  # the entry points sit on top of everything
        return
    bad = _imports(path) & FORBIDDEN.get(layer, set())
    assert not bad, f"{path.relative_to(PKG)} ({layer or 'ground floor'}) imports {sorted(bad)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_are_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines; split it by concern (at most {MAX_LINES})"


def test_no_environment_switches_in_the_library():
    hits = [p for p in MODULES if "HCD_FOLD_WORKER" in p.read_text(encoding="utf-8")]
    assert not hits


def test_help_does_not_load_torch():
    """`hcd --help` builds every command's options (train's from TrainConfig) without importing torch."""
    code = "import sys; from hcd_kit.cli import app; from typer.main import get_command; get_command(app); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _calls_timm_create_model(tree: ast.AST) -> bool:
    """True if ``tree`` calls ``timm.create_model(...)`` or imports ``create_model`` from timm (docstrings aside)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "timm" and any(
                a.name == "create_model" for a in node.names):
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "create_model"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "timm"):
            return True
    return False


def test_only_model_py_calls_timm_create_model():
    """``hcd_kit/model.py`` is the one place that builds a timm model (see docs/architecture.md)."""
    callers = [str(p.relative_to(PKG)) for p in MODULES
               if _calls_timm_create_model(ast.parse(p.read_text(encoding="utf-8"))) and p != PKG / "model.py"]
    assert not callers, f"{', '.join(callers)} call(s) timm.create_model; build models with hcd_kit.model instead"


def test_the_timm_create_model_check_sees_both_spellings():
    assert _calls_timm_create_model(ast.parse("import timm\ntimm.create_model('resnet18')"))
    assert _calls_timm_create_model(ast.parse("from timm import create_model"))
    assert not _calls_timm_create_model(ast.parse('"""timm.create_model("local-dir:X") loads it"""'))
    assert not _calls_timm_create_model(ast.parse("from hcd_kit.model import create_model\ncreate_model('x')"))
