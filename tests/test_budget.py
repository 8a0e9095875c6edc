"""``hcd train --time-budget`` and ``--plan``: durations, the plan's arithmetic, the deadline, and real tiny runs.

No test asks this machine to be fast enough for a fixed budget. The pure tests give the planner speeds by hand
and drive ``RunClock`` with a fake clock (``budget._now``); the deadline run does both through ``train``; the
real CLI runs measure resnet10t (from scratch, 32 px, one thread) on shipped patches first and size their
budget from that measurement, then check that what the run did agrees with the plan it recorded.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pandas as pd
import pytest
from conftest import packed_subset
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError
from hcd_kit.layout import RunLayout
from hcd_kit.training import budget
from hcd_kit.training.budget import MARGIN, RunClock, Speeds, Work, fit_epochs, format_duration, parse_duration
from hcd_kit.training.runs import finished

FAST = [
    "--device",
    "cpu",
    "--no-pretrained",
    "--model",
    "resnet10t",
    "--img-size",
    "32",
    "--threads",
    "1",
    "--batch-size",
    "32",
]


def hcd_train(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


@pytest.fixture(scope="module")
def data(sample_root, tmp_path_factory):
    """96 real labelled patches (+ 8 test) packed, in 3 folds: 64 training images (2 steps of 32) per fold."""
    root = packed_subset(sample_root, tmp_path_factory.mktemp("budget") / "data", n_train=96, n_test=8, n_folds=3)
    return root


# ------------------------------------------------------------------------------------------ pure


@pytest.mark.parametrize(
    "text, seconds",
    [("30m", 1800), ("11h", 39600), ("1h30m", 5400), ("90s", 90), ("5400", 5400), ("1.5h", 5400), ("2h5m30s", 7530)],
)
def test_durations_read_like_people_write_them(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=30)  # the printed form reads back


@pytest.mark.parametrize("text", ["", "abc", "10x", "1h30", "-5m", "0", "h"])
def test_bad_durations_are_one_line_naming_the_flag(text):
    with pytest.raises(ConfigError) as err:
        parse_duration(text)
    assert str(err.value).startswith("--time-budget") and "\n" not in str(err.value)


SPEEDS = Speeds(train=1000, val=4000, predict=8000, setup_s=2, checkpoint_s=1)
FULL = Work(train=[176_000] * 5, val=[44_000] * 5, test=57_458, oof=220_025)  # the competition, 5 folds


def test_plan_trains_the_epochs_that_fit_the_budget():
    # an epoch of one fold: 176 s training + 11 s validation + 1 s checkpoint = 188 s, x 5 folds = 940 s;
    # prediction: 8 views x (5 x 57,458 test + 220,025 OOF) / 8,000 views/s + 5 x 2 s set-up = 517.3 s
    plan = fit_epochs(SPEEDS, FULL, configured=8, budget_s=3600)
    assert plan.epoch_s == [188.0] * 5 and plan.predict_s == pytest.approx(517.315)
    # 3600 s less 7 % = 3348 s; minus prediction and 5 set-ups leaves 2820.7 s = 3 epochs of 940 s
    assert (plan.epochs, plan.configured) == (3, 8)
    assert plan.total_s == pytest.approx(10 + 3 * 940 + 517.315) and plan.total_s <= 3600 * (1 - budget.MARGIN)
    assert fit_epochs(SPEEDS, FULL, configured=8, budget_s=11 * 3600).epochs == 8  # never more than configured
    assert fit_epochs(SPEEDS, FULL, configured=8, budget_s=None).epochs == 8  # no budget: as configured
    # two folds side by side (fold-parallel): three waves of 188 s an epoch, not five: (3348 - 517.3 - 6) / 564 -> 5
    assert fit_epochs(SPEEDS, Work(FULL.train, FULL.val, FULL.test, FULL.oof, lanes=2), 8, 3600).epochs == 5
    text = "\n".join(plan.lines(now=0))
    assert "epochs 3 of 8 configured" in text and "train 1,000 img/s" in text and "predict 8,000 views/s" in text
    assert "per fold x 5 folds" in text and "expected finish" in text


def test_a_budget_too_small_for_one_epoch_names_the_smallest_that_fits():
    with pytest.raises(ConfigError) as err:
        fit_epochs(SPEEDS, FULL, configured=8, budget_s=1200, budget_text="20m")
    # one epoch of every fold + prediction: 10 + 940 + 517.3 = 1467.3 s (24 m); / (1 - 7 %) = 1577.8 s -> 27 m
    assert str(err.value) == (
        "--time-budget 20m is too small: one epoch of 5 folds + TTA x8 prediction needs about 24m; give at least 27m"
    )
    assert fit_epochs(SPEEDS, FULL, 8, parse_duration("27m")).epochs == 1
    with pytest.raises(ConfigError):
        fit_epochs(SPEEDS, FULL, 8, parse_duration("26m"))


def test_clock_stops_a_fold_before_an_epoch_past_its_share_and_gives_the_rest_to_the_next(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(budget, "_now", lambda: now[0])
    clock = RunClock(order=[0, 1], epochs=5, deadline=1100.0, start=1000.0)
    clock.start_fold(0, 0)  # 5 of the 10 epochs left: half of the 100 s, until t = 1050
    now[0] = 1020.0
    assert not clock.epoch_done(0, 1)  # 20 s epochs: the next ends at 1040
    assert re.fullmatch(r" run ETA \d\d:\d\d", clock.eta())
    now[0] = 1040.0
    assert clock.epoch_done(0, 2)  # the next would end at 1060 > 1050: stop
    clock.start_fold(1, 0)  # fold 1 gets all that is left: until 1100
    for k, t in enumerate((1060.0, 1080.0), 1):
        now[0] = t
        assert not clock.epoch_done(1, k)
    now[0] = 1100.0
    assert clock.epoch_done(1, 3) and clock.fold_end == 1100.0


# ------------------------------------------------------------------------------------------ real runs


def test_plan_prints_the_plan_and_writes_nothing(data, tmp_path):
    run = tmp_path / "run"
    # 100 hours: 3 epochs of 96 tiny patches fit on any machine, so the line says "as configured"
    res = hcd_train("--data-dir", data, "--run-dir", run, "--epochs", 3, "--plan", "--time-budget", "100h", *FAST)
    assert res.exit_code == 0, res.output
    out = res.output
    assert re.search(r"measured train [\d,]+ img/s, validation [\d,]+ img/s, predict [\d,]+ views/s", out)
    assert "epochs 3 (as configured); time budget 100h" in out and "per fold x 3 folds" in out
    assert re.search(r"expected finish \d\d:\d\d", out) and "8 test x 3 folds + 96 OOF images" in out
    assert not run.exists()
    res = hcd_train("--data-dir", data, "--run-dir", run, "--fold", "0", "--plan", *FAST)  # no budget: as configured
    assert res.exit_code == 0 and "no time budget" in res.output and not run.exists()


def _measured_plan(data, monkeypatch) -> budget.Plan:
    """``hcd train --plan`` for one epoch of fold 0, as the budget run below will be configured: the Plan it
    made from this machine's speeds (measuring included), caught on its way out of ``plan_run``."""
    import hcd_kit.training
    from hcd_kit.training.speed import plan_run

    plans = []

    def keep(*args, **kwargs):
        plans.append(plan_run(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(hcd_kit.training, "plan_run", keep)  # the CLI imports it from there when it runs
    res = hcd_train("--data-dir", data, "--fold", "0", "--epochs", 1, "--plan", *FAST)
    assert res.exit_code == 0 and len(plans) == 1, res.output
    return plans[0]


def test_a_small_budget_trains_fewer_epochs_and_the_run_records_them(data, tmp_path, monkeypatch):
    # the budget: three times what one epoch of fold 0 needs here, measuring and prediction included, so the
    # run's own measurement can be noisy either way and still choose at least one and far fewer than 1000 epochs
    one_epoch = _measured_plan(data, monkeypatch)
    budget_s = 3 * one_epoch.total_s / (1 - MARGIN)
    text = f"{budget_s:.1f}s"
    run = tmp_path / "run"
    res = hcd_train("--data-dir", data, "--run-dir", run, "--fold", "0", "--epochs", 1000, "--time-budget", text, *FAST)
    assert res.exit_code == 0, res.output
    config = read_toml(run / "config.toml")
    record = json.loads((run / "budget.json").read_text())
    chosen = config["epochs"]  # the run trains (and schedules its LR for) the epochs the plan chose
    assert 1 <= chosen < 1000 and record["epochs"] == chosen and record["configured_epochs"] == 1000
    assert f"epochs {chosen} of 1000 configured" in res.output and config["time_budget"] == text
    assert record["train_s"] + record["predict_s"] <= budget_s * (1 - MARGIN)  # what it chose fits, by its numbers
    hist = pd.read_csv(RunLayout.of(run).history(0))
    assert 1 <= len(hist) <= chosen and (run / "fold0" / "best.pt").is_file()
    assert finished(RunLayout.of(run), 0) is not None  # done, either way: --resume would skip the fold
    stopped = f"stopped early for the time budget after epoch {len(hist)}/{chosen}"
    assert (stopped in res.output) == (len(hist) < chosen), res.output  # fewer epochs than planned only so
    assert re.search(rf"epoch 1/{chosen}: .* run ETA \d\d:\d\d", res.output)


def test_a_budget_too_small_for_one_epoch_is_refused_in_one_line(data, tmp_path):
    # 10 ms: measuring alone (a model built, a dozen steps) takes longer on any machine
    res = hcd_train("--data-dir", data, "--run-dir", tmp_path / "run", "--time-budget", "0.01s", *FAST)
    assert res.exit_code == 2 and "--time-budget 0.01s is too small: one epoch of 3 folds" in res.output
    assert "give at least" in res.stderr and len(res.stderr.strip().splitlines()) == 1  # the error: one line
    assert not (tmp_path / "run").exists()
    res = hcd_train("--data-dir", data, "--run-dir", tmp_path / "run", "--time-budget", "soon", *FAST)
    assert res.exit_code == 2 and "--time-budget 'soon': use a duration like" in res.output


def test_slow_epochs_stop_the_fold_early_as_a_finished_fold(data, tmp_path, monkeypatch):
    """The plan, from given speeds, says 6 of 8 epochs fit 11 minutes; the fold's clock then finds its epochs
    far slower (a fake clock: every training step takes 120 s) and stops the fold after epoch 2 of 6."""
    import hcd_kit.training.speed as speed
    from hcd_kit.training import Hooks, TrainConfig, train

    # 64 training + 32 validation images at 1 img/s: 96 s an epoch; TTA x8 of 8 test + 32 OOF patches: 0.32 s.
    # 11 min less 7 % = 613.8 s; less the prediction, 613.48 s: 6 epochs of 96 s (7 would need 672 s).
    monkeypatch.setattr(speed, "measure_speeds", lambda *a, **kw: Speeds(train=1.0, val=1.0, predict=1000.0))
    start = budget._now()  # the fake clock starts with the real one: the deadline is set from the real clock
    skew = [0.0]
    monkeypatch.setattr(budget, "_now", lambda: start + skew[0])

    def slow_step(step, loss):
        skew[0] += 120.0  # 2 steps an epoch: 240 s an epoch, where the plan expected 96 s
        return loss

    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=32,
        threads=1,
        batch_size=32,
        epochs=8,
        time_budget="11m",
    )
    run = RunLayout.of(tmp_path / "run")
    results = train(cfg, data, run.root, folds=[0], hooks=Hooks(loss=slow_step))
    log = run.log.read_text()
    assert read_toml(run.config)["epochs"] == 6 and "epochs 6 of 8 configured" in log, log
    record = json.loads((run.root / "budget.json").read_text())
    assert record["epoch_s"] == pytest.approx(96.0) and record["predict_s"] == pytest.approx(0.32)
    # the fold may train until 613.48 s from the start: after epoch 1 (240 s) one more ends at 480 s, fine;
    # after epoch 2 (480 s) the next would end at 720 s: stop
    assert "fold 0: stopped early for the time budget after epoch 2/6" in log, log
    hist = pd.read_csv(run.history(0))
    assert list(hist["epoch"]) == [1, 2] and results[0].epochs_run == 2
    assert run.best(0).is_file() and len(pd.read_csv(run.oof(0))) == 32
    assert finished(run, 0) is not None  # a finished fold: --resume skips it, hcd predict uses its best.pt


def test_kernel_trains_with_an_11h_budget_unless_told_otherwise(project):
    from hcd_kit.kaggle import KernelSpec, render_kernel

    folder = render_kernel(
        KernelSpec(fold="0", train_args="--no-pretrained --time-budget 2h"), "alice", project / "kernels"
    )
    script = next(folder.glob("*.py"))
    assert 'TRAIN_ARGS = ["--no-pretrained", "--time-budget", "2h"]' in script.read_text()
    spec = importlib.util.spec_from_file_location("rendered_kernel", script)
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)  # defines the steps; main() runs only as a script
    assert kernel.default_budget(["--no-pretrained"]) == ["--time-budget", "11h"]
    assert kernel.default_budget(["--time-budget", "2h"]) == [] and kernel.default_budget(["--time-budget=2h"]) == []
    assert kernel.default_budget(["--config", "/kaggle/input/x/train.toml"]) == []
    assert parse_duration(kernel.DEFAULT_TIME_BUDGET) < 12 * 3600
