"""The training call path reads top to bottom: following the run's settings from ``train`` re-enters no file of
hcd_kit more than twice, and the time plan (speed measurement, then the budget's arithmetic) is made once,
before the first fold, whose code receives the result.

How the path is measured (a real tiny run, traced with ``sys.setprofile``): every call of an hcd_kit function
under ``training.loop.train`` that receives the run's settings as an argument (``self`` included) is a step
of the path. The settings are the ``TrainConfig`` and what the time plan derives from it and passes down
(``budget.Speeds``, ``Work``, ``Plan``, ``RunClock``). Calls in between that receive none of them are
passed through (a reader following ``cfg`` does not open them). A function is read once: a later call of a
function already read (the next fold, the next epoch, the next step) adds nothing. The path is then the
files of the functions in the order they are first called; a file is *entered* each time the path moves into
it from another file, and *re-entered* when it was entered before.

Before the plan's result was made in one place (hcd 0.1.0) the path re-entered ``training/budget.py`` three
times: the plan's arithmetic, then (after ``config.py``, checking the planned config) the run's clock, then the
clock's fold start and its epoch end.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest
from conftest import packed_subset

MAX_REENTRIES = 2


def _settings_types() -> tuple[type, ...]:
    from hcd_kit.training import budget
    from hcd_kit.training.config import TrainConfig

    return (TrainConfig, budget.Speeds, budget.Work, budget.Plan, budget.RunClock)


def trace_train(cfg, data_dir: Path, run_dir: Path, folds: list[int]) -> list[tuple[str, str]]:
    """``train(cfg, ...)`` traced: the (file, function) of each settings-receiving hcd_kit call under it, each
    function once, in the order of their first calls (files relative to the package)."""
    import hcd_kit
    from hcd_kit.training import train

    pkg = str(Path(hcd_kit.__file__).parent) + "/"
    kinds = _settings_types()
    path: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    stack: list[bool] = []  # per open frame: is it train or under it

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            inside = bool(stack) and stack[-1]
            if (
                not inside
                and code.co_filename.startswith(pkg)
                and code.co_name == "train"
                and code.co_filename.endswith("training/loop.py")
            ):
                inside = True
            stack.append(inside)
            if inside and code.co_filename.startswith(pkg):
                names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
                if any(isinstance(frame.f_locals.get(n), kinds) for n in names):
                    key = (code.co_filename[len(pkg) :], code.co_qualname)
                    if key not in seen:
                        seen.add(key)
                        path.append(key)
        elif event == "return" and stack:
            stack.pop()

    old = sys.getprofile()
    sys.setprofile(profile)
    try:
        train(cfg, data_dir, run_dir, folds=folds)
    finally:
        sys.setprofile(old)
    return path


def reentries(path: list[tuple[str, str]]) -> dict[str, int]:
    """{file: times the path moves back into it after leaving it}."""
    entries: collections.Counter[str] = collections.Counter()
    last = None
    for file, _ in path:
        if file != last:
            entries[file] += 1
        last = file
    return {f: n - 1 for f, n in entries.items()}


def test_reentries_counts_moves_back_into_a_file():
    path = [("a.py", "f"), ("a.py", "g"), ("b.py", "h"), ("a.py", "i"), ("c.py", "j"), ("a.py", "k")]
    assert reentries(path) == {"a.py": 2, "b.py": 0, "c.py": 0}


@pytest.fixture(scope="module")
def data(sample_root, tmp_path_factory):
    return packed_subset(sample_root, tmp_path_factory.mktemp("callpath") / "data", n_train=96, n_test=8, n_folds=3)


def test_following_the_config_from_train_re_enters_no_file_more_than_twice(data, tmp_path):
    from hcd_kit.training import TrainConfig

    # 100 hours: the planner measures this machine and plans the 1 configured epoch
    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=32,
        threads=1,
        batch_size=32,
        epochs=1,
        time_budget="100h",
    )
    path = trace_train(cfg, data, tmp_path / "run", folds=[0, 1])
    walk = " -> ".join(f"{f}:{fn}" for f, fn in path)
    again = reentries(path)
    assert max(again.values()) <= MAX_REENTRIES, (again, walk)
    names = [fn for _, fn in path]
    # the plan is made once, before the folds: measured, fitted, and the clock set, ahead of the first fold
    first_fold = names.index("_run_fold")
    for step in ("measure_speeds", "fit_epochs", "RunClock.__post_init__"):
        assert names.index(step) < first_fold, walk
