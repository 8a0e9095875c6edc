"""The package's shape: which layer may import which, and modules small enough to read in one sitting.

The pipeline reads bottom-up: a ground floor (hcd_kit/*.py), backbones, data, the run files (runs), inference,
training, features, report and kaggle, then the CLI. These tests read every module's imports (top-level and
inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hcd_kit"
MODULES = sorted(PKG.rglob("*.py"))
# every file held to the size cap: the modules (the kernel template's .py parts among them) and any other
# template file (report.html.j2, kernel-metadata.json, ...)
SIZED = MODULES + sorted(
    p for p in PKG.rglob("*") if p.is_file() and p.suffix != ".py" and "templates" in p.relative_to(PKG).parts
)
MAX_LINES = 350
# importer sub-package -> sub-packages it must never import
FORBIDDEN = {
    "runs": {"training", "inference", "features", "kaggle", "report", "cli"},  # run files: below all of them
    "inference": {"training", "features", "kaggle", "report", "cli"},
    "data": {"kaggle", "training", "inference", "cli"},
    "training": {"cli", "kaggle"},
    "kaggle": {"cli", "training", "features", "report"},
    "backbones": {"data", "training", "inference", "features", "kaggle", "cli"},  # what --model names
    "features": {"training", "kaggle", "report", "cli"},
    "report": {"training", "features", "cli"},  # hcd report: run files, patches (data), kaggle.ledger only
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


@pytest.mark.parametrize("path", SIZED, ids=lambda p: str(p.relative_to(PKG)))
def test_modules_are_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines; split it by concern (at most {MAX_LINES})"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_homes(tree: ast.AST) -> dict[str, str]:
    """A package ``__init__``'s ``public_api(__name__, {"sub": "Name Other", ...})`` table: name -> submodule."""
    homes = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "public_api"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Dict)
        ):
            for key, names in zip(node.args[1].keys, node.args[1].values):
                homes |= {n: ast.literal_eval(key) for n in ast.literal_eval(names).split()}
    return homes


def import_graph() -> dict[str, set[str]]:
    """hcd_kit's modules -> the hcd_kit modules each imports (see ``test_no_import_cycles`` for the rule)."""
    trees = {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in MODULES}
    homes = {name: _lazy_homes(tree) for name, tree in trees.items()}

    def target(module: str, name: str) -> str:
        if f"{module}.{name}" in trees:
            return f"{module}.{name}"
        home = homes.get(module, {}).get(name)
        return f"{module}.{home}" if home else module

    graph: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for n in ast.walk(stmt)
        }
        out = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "hcd_kit":
                out |= {target(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "hcd_kit"}
        graph[mod] = {m for m in out if m in trees and m != mod}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, its first repeated at its end) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to it, for a cycle to name
        start, members = min(group), set(group)
        came_from: dict[str, str] = {}
        queue = [start]
        while start not in came_from:
            v = queue.pop(0)
            for w in sorted(graph[v] & members):
                if w not in came_from:
                    came_from[w] = v
                    queue.append(w)
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append(path[::-1])
    return cycles


def test_no_import_cycles():
    """No hcd_kit module imports itself through others: a module can be read, tested and moved without the
    ones above it.

    The graph has an edge for every ``import hcd_kit.x`` and ``from hcd_kit.x import name``, at the top of a
    module or inside a function (a lazy import is still a dependency), but not inside ``if TYPE_CHECKING:``
    (it never runs). ``from hcd_kit.pkg import name`` points at the module ``hcd_kit.pkg.name`` when that is a
    module; else at the submodule the package's lazy public-API table (``public_api`` in its ``__init__.py``,
    ``hcd_kit.lazy``) names for ``name``, which is the module that import really loads; else at the package's
    ``__init__`` itself."""
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# What other layers may use of inference: its compute (TTA views and the batched forward pass), never files.
INFERENCE_COMPUTE = {"hcd_kit.inference.tta", "hcd_kit.inference.predict", "hcd_kit.inference.runs"}
INFERENCE_COMPUTE_NAMES = {
    "predict_views",
    "to_device",
    "fold_ensemble",
    "sigmoid_mean",
    "tta_stack",
    "tta_transforms",
    "tta_views",
    "load_fold_model",
}


def _inference_imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "hcd_kit.inference":
            out += [f"hcd_kit.inference.{a.name}" for a in node.names if a.name not in INFERENCE_COMPUTE_NAMES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hcd_kit.inference."):
            out += [node.module] if node.module not in INFERENCE_COMPUTE else []
    return out


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if _layer(p) in ("training", "features", "kaggle", "report")],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_run_files_are_read_through_the_runs_package(path):
    """Training, features, kaggle and the report read and write run files through ``hcd_kit.runs``; of
    inference they may use the compute only (TTA, the batched forward pass, a fold's rebuilt network)."""
    bad = _inference_imports(path)
    assert not bad, f"{path.relative_to(PKG)} imports {bad} from inference; run files come from hcd_kit.runs"


def test_no_environment_switches_in_the_library():
    hits = [p for p in MODULES if "HCD_FOLD_WORKER" in p.read_text(encoding="utf-8")]
    assert not hits


def test_help_does_not_load_torch():
    """`hcd --help` builds every command's options (train's from TrainConfig) without importing torch."""
    code = (
        "import sys; from hcd_kit.cli import app; from typer.main import get_command; get_command(app); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _calls_timm_create_model(tree: ast.AST) -> bool:
    """True if ``tree`` calls ``timm.create_model(...)`` or imports ``create_model`` from timm (docstrings aside)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "timm"
            and any(a.name == "create_model" for a in node.names)
        ):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "create_model"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "timm"
        ):
            return True
    return False


def test_only_model_py_calls_timm_create_model():
    """``hcd_kit/model.py`` is the one place that builds a timm model (see docs/architecture.md)."""
    callers = [
        str(p.relative_to(PKG))
        for p in MODULES
        if _calls_timm_create_model(ast.parse(p.read_text(encoding="utf-8"))) and p != PKG / "model.py"
    ]
    assert not callers, f"{', '.join(callers)} call(s) timm.create_model; build models with hcd_kit.model instead"


def test_the_timm_create_model_check_sees_both_spellings():
    assert _calls_timm_create_model(ast.parse("import timm\ntimm.create_model('resnet18')"))
    assert _calls_timm_create_model(ast.parse("from timm import create_model"))
    assert not _calls_timm_create_model(ast.parse('"""timm.create_model("local-dir:X") loads it"""'))
    assert not _calls_timm_create_model(ast.parse("from hcd_kit.model import create_model\ncreate_model('x')"))
