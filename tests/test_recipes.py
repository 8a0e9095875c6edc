"""Named recipes: every shipped recipe loads and trains what it says, flags override it, `hcd recipes` lists each
with a cost and the source of that cost, and `hcd demo` trains exactly what `hcd train --recipe cpu` trains."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pandas as pd
import pytest

from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError
from hcd_kit.training import TrainConfig, list_recipes, load_recipe, recipe_config, resolve_config
from hcd_kit.training.costs import Rates, rates, run_seconds

REQUIRED = {"cpu", "t4x2-fast", "t4x2-strong", "t4x2-blend"}


def hcd(*args, cwd=None, timeout=1800) -> subprocess.CompletedProcess:  # a hang guard, not a speed check
    return subprocess.run(
        [sys.executable, "-m", "hcd_kit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


def test_every_shipped_recipe_is_a_valid_config():
    recipes = {r.name: r for r in list_recipes()}
    assert REQUIRED <= set(recipes)
    for r in recipes.values():
        assert r.description and r.based_on and r.hardware in ("cpu", "t4x2")
        for m in r.members:  # a blend names recipes that exist and are not blends themselves
            assert not load_recipe(m.recipe).is_blend
        if not r.is_blend:
            assert isinstance(r.config(), TrainConfig)
    assert len(recipes["t4x2-blend"].members) == 2
    models = {load_recipe(m.recipe).config().model for m in recipes["t4x2-blend"].members}
    assert len(models) == 2  # two architectures
    assert recipes["cpu"].config().pretrained is False and recipes["t4x2-fast"].config().img_size == 96
    assert 192 <= recipes["t4x2-strong"].config().img_size <= 224


def test_flags_override_the_recipe_and_the_run_records_it(tmp_path):
    base = recipe_config("cpu")
    cfg = recipe_config("cpu", {"epochs": 3, "augment.color": 0.0})
    assert (cfg.epochs, cfg.augment.color, cfg.model, cfg.lr) == (3, 0.0, base.model, base.lr)

    toml = tmp_path / "mine.toml"
    toml.write_text("lr = 0.005\nepochs = 7\n")
    cfg, run = resolve_config(toml, {"epochs": 2}, tmp_path / "run", resume=False, recipe="t4x2-fast")
    fast = recipe_config("t4x2-fast")
    assert (cfg.model, cfg.img_size, cfg.lr, cfg.epochs, cfg.recipe) == (fast.model, 96, 0.005, 2, "t4x2-fast")


def test_the_default_recipe_on_a_cpu_is_cpu(tmp_path):
    cfg, _ = resolve_config(None, {"device": "cpu"}, tmp_path / "run", resume=False)
    assert cfg.recipe == "cpu" and cfg.model == recipe_config("cpu").model and cfg.epochs == recipe_config("cpu").epochs


def test_unknown_recipe_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'nope' \\(choose from cpu, "):
        load_recipe("nope")
    res = hcd("train", "--recipe", "nope", "--data-dir", tmp_path, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "unknown recipe 'nope'" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 0\n")
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        load_recipe(bad)


def test_run_seconds_scales_with_epochs_folds_and_tta():
    r = Rates(train_ips=100.0, predict_ips=400.0, source="x")
    one = run_seconds(r, epochs=1, n_train=1000, n_test=100, tta=8)
    two = run_seconds(r, epochs=2, n_train=1000, n_test=100, tta=8)
    no_predict = run_seconds(r, epochs=1, n_train=1000, n_test=100, tta=0)
    per_epoch = 5 * (800 / 100 + 200 / 400)  # 5 folds, each 800 trained + 200 validated
    assert no_predict == pytest.approx(per_epoch)
    assert two - one == pytest.approx(per_epoch)
    assert one - no_predict == pytest.approx(8 * (100 * 5 + 1000) / 400)  # every fold predicts the test set
    faster = run_seconds(Rates(200.0, 800.0, "x"), epochs=1, n_train=1000, n_test=100)
    assert faster == pytest.approx(one / 2)


def test_published_rates_scale_with_pixels_and_measured_figures_win():
    small, large = rates("resnet34", 96, "t4x2"), rates("resnet34", 192, "t4x2")
    assert small.train_ips == pytest.approx(4 * large.train_ips) and small.source.startswith("published")
    assert rates("no_such_model", 96, "t4x2") is None
    report = {
        "environment": {"gpus": ["Tesla T4"]},
        "steps": [
            {
                "step": "recipe-train:t4x2-fast",
                "exit": 0,
                "figures": {"img_size": 96, "models": {"resnet34": {"loader_ips": 1234.0}}},
            },
            {
                "step": "recipe-tta:t4x2-fast",
                "exit": 0,
                "figures": {"model": "resnet34", "img_size": 96, "rows": [{"tta": 1, "images_per_s": 4321.0}]},
            },
        ],
    }
    m = rates("resnet34", 96, "t4x2", report)
    assert (m.train_ips, m.predict_ips) == (1234.0, 4321.0) and "Tesla T4" in m.source
    assert rates("resnet34", 128, "t4x2", report).source.startswith("published")  # another size: not measured
    assert rates("resnet10t", 96, "cpu").source.startswith("measured")


def test_hcd_recipes_lists_every_recipe_with_cost_and_source(tmp_path):
    res = hcd("recipes")
    assert res.returncode == 0, res.stderr
    for r in list_recipes():
        assert r.name in res.stdout
    assert "published: timm" in res.stdout and "measured" in res.stdout
    data = json.loads(hcd("recipes", "--json").stdout)
    rows = {r["name"]: r for r in data["recipes"]}
    assert set(rows) == {r.name for r in list_recipes()}
    assert all(r["t4x2_seconds"] and r["cpu_seconds"] for r in rows.values())
    # a blend costs what its members cost together
    members = [m.recipe for m in load_recipe("t4x2-blend").members]
    assert rows["t4x2-blend"]["t4x2_seconds"] == pytest.approx(sum(rows[m]["t4x2_seconds"] for m in members))
    report = tmp_path / "gpu.json"
    report.write_text(
        json.dumps(
            {
                "environment": {"gpus": ["Tesla T4"]},
                "steps": [
                    {
                        "step": "recipe-train:t4x2-fast",
                        "exit": 0,
                        "figures": {"img_size": 96, "models": {"resnet34": {"loader_ips": 50.0}}},
                    },
                    {
                        "step": "recipe-tta:t4x2-fast",
                        "exit": 0,
                        "figures": {"model": "resnet34", "img_size": 96, "rows": [{"tta": 1, "images_per_s": 150.0}]},
                    },
                ],
            }
        )
    )
    slow = json.loads(hcd("recipes", "--json", "--figures", report).stdout)
    slow_rows = {r["name"]: r for r in slow["recipes"]}
    assert slow_rows["t4x2-fast"]["t4x2_seconds"] > 10 * rows["t4x2-fast"]["t4x2_seconds"]
    assert any("Tesla T4" in s for s in slow["sources"].values())
    bad = hcd("recipes", "--figures", tmp_path / "missing.json")
    assert bad.returncode == 2 and "not a readable GPU report" in bad.stderr


@pytest.fixture(scope="module")
def budget_demo(tmp_path_factory):
    """`hcd demo` on the shipped sample with a time budget and no --epochs, run once for the two tests below. The
    budget is derived from this machine's own measured plan for one epoch, so it holds on a fast and a slow CPU."""
    from hcd_kit.data import create_folds, materialise, prepare
    from hcd_kit.training.budget import MARGIN
    from hcd_kit.training.speed import plan_run

    tmp = tmp_path_factory.mktemp("demo")
    probe = materialise(tmp / "probe")
    prepare(probe.root)
    create_folds(probe.root, n_folds=5, seed=0)
    one = plan_run(recipe_config("cpu", {"epochs": 1, "device": "cpu", "pretrained": False}), probe.root)
    budget = f"{math.ceil(1.6 * one.total_s / (1 - MARGIN))}s"  # room for one epoch and more on this machine
    res = hcd("demo", "--time-budget", budget, "--work-dir", tmp / "demo", "--device", "cpu", cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp, budget, res


def test_demo_on_the_shipped_sample_trains_what_fits_its_time_budget(budget_demo):
    """Without --epochs the shipped sample trains as many epochs as the planner, having measured this machine, fits
    in the budget; the demo says so, and what it chose is what the run recorded."""
    tmp, budget, res = budget_demo
    run = tmp / "demo" / "run"
    plan = json.loads((run / "budget.json").read_text())
    cfg = read_toml(run / "config.toml")
    configured = recipe_config("cpu").epochs
    assert cfg["time_budget"] == budget and cfg["epochs"] == plan["epochs"] and 1 <= plan["epochs"] < configured
    assert plan["configured_epochs"] == configured  # the cpu recipe's
    assert "time plan" in res.stdout
    assert f"5 folds x {plan['epochs']} epochs (chosen for --time-budget {budget})" in " ".join(res.stdout.split())
    log = (run / "train.log").read_text()
    # every fold trained its first epoch, however few fitted (a fold may also stop early "after epoch 1/N")
    assert sorted(set(re.findall(r"fold (\d) epoch 1/\d+:", log))) == ["0", "1", "2", "3", "4"]
    assert (tmp / "demo" / "submission.csv").is_file()


def test_demo_trains_exactly_the_cpu_recipe(budget_demo):
    """`hcd demo` and `hcd train --recipe cpu` (same data, folds, seed and epochs) give the same settings and the same
    out-of-fold predictions (fold 0 retrained: one fold shows it, five would only take five times as long)."""
    tmp, _, res = budget_demo
    assert "recipe cpu" in res.stdout
    demo_cfg = read_toml(tmp / "demo" / "run" / "config.toml")
    again = tmp / "again"
    args = ["--recipe", "cpu", "--epochs", demo_cfg["epochs"], "--fold", "0", "--device", "cpu"]
    res = hcd("train", *args, "--data-dir", tmp / "demo" / "data", "--run-dir", again, cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    again_cfg = read_toml(again / "config.toml")
    asked = {"device", "time_budget", "fold"}  # how each was asked for: the run's settings are the rest
    assert {k: v for k, v in demo_cfg.items() if k not in asked} == {
        k: v for k, v in again_cfg.items() if k not in asked
    }
    results = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "skipped_steps"]  # all but the measured speed
    demo_hist = pd.read_csv(tmp / "demo" / "run" / "fold0" / "history.csv")[results]
    again_hist = pd.read_csv(again / "fold0" / "history.csv")[results]
    pd.testing.assert_frame_equal(again_hist.iloc[: len(demo_hist)], demo_hist)
    if len(demo_hist) == demo_cfg["epochs"]:  # a loaded machine may stop the budgeted fold early: then its OOF differs
        a = pd.read_csv(tmp / "demo" / "run" / "fold0" / "oof.csv")
        pd.testing.assert_frame_equal(a, pd.read_csv(again / "fold0" / "oof.csv"))


def test_a_blend_recipe_trains_one_run_per_member(subset_factory, tmp_path):
    data = subset_factory(64, 8)
    for step in (("prepare", "--data-dir", data), ("folds", "--data-dir", data, "--n-folds", "2")):
        assert hcd(*step, cwd=tmp_path).returncode == 0
    root = tmp_path / "blend"
    # tiny stand-ins for the members' backbones: the flags override both members alike
    res = hcd(
        "train",
        "--recipe",
        "t4x2-blend",
        "--fold",
        "0",
        "--epochs",
        "1",
        "--model",
        "resnet10t",
        "--img-size",
        "32",
        "--batch-size",
        "16",
        "--no-pretrained",
        "--device",
        "cpu",
        "--data-dir",
        data,
        "--run-dir",
        root,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    for member in load_recipe("t4x2-blend").members:
        cfg = read_toml(root / member.name / "config.toml")
        assert cfg["recipe"] == member.recipe and cfg["model"] == "resnet10t"
        assert cfg["lr"] == recipe_config(member.recipe).lr  # what the flags did not set comes from the member
        assert (root / member.name / "fold0" / "oof.csv").is_file()
    assert "hcd ensemble" in res.stdout and "--weights auto" in res.stdout


def test_a_kernel_refuses_a_blend_recipe_and_names_its_members(project):
    res = hcd(
        "kernel",
        "push",
        "--dry-run",
        "--fold",
        "all",
        "--train-args",
        "--recipe t4x2-blend --no-pretrained",
        cwd=project,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "--recipe t4x2-strong" in res.stderr and "--recipe t4x2-effb3" in res.stderr
    assert not (project / "kernels").exists()
    ok = hcd(
        "kernel",
        "push",
        "--dry-run",
        "--fold",
        "all",
        "--train-args",
        "--recipe t4x2-strong --no-pretrained",
        cwd=project,
    )
    assert ok.returncode == 0, ok.stderr


def test_resume_keeps_the_recipe_the_run_started_with(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg, _ = resolve_config(None, {"device": "cpu", "epochs": 3}, run, resume=False, recipe="t4x2-fast")
    from hcd_kit.config import dump_toml

    dump_toml(cfg, run / "config.toml")
    again, _ = resolve_config(None, {}, run, resume=True)
    assert (again.recipe, again.model, again.epochs) == ("t4x2-fast", cfg.model, 3)
    with pytest.raises(ConfigError, match="was started with --recipe t4x2-fast; resume it without --recipe"):
        resolve_config(None, {}, run, resume=True, recipe="cpu")
