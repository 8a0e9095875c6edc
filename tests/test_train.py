"""``hcd train`` and hcd_kit.training: learning, outputs, resume, non-finite steps, errors, config.

Training runs use timm's tiny ``test_*`` models at 32 px (the 96 px patches are downscaled on the device),
one CPU thread and a few hundred images, so each run takes seconds.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.errors import ConfigError, TrainingError
from hcd_kit.layout import RunLayout
from hcd_kit.training import (
    Env,
    Hooks,
    TrainConfig,
    Trainer,
    build_trainer,
    load_checkpoint,
    resolve_config,
    train,
    train_step,
)
from hcd_kit.training.optim import build_optimizer

FAST = ["--device", "cpu", "--no-pretrained", "--img-size", "32", "--threads", "1", "--batch-size", "32"]


def make_synthetic(root: Path, n: int = 192, n_folds: int = 3, seed: int = 0) -> Path:
    """A packed store + folds.csv whose positives carry a dark purple blob in the central 32x32."""
    packed = root / "packed"
    packed.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    images = np.lib.format.open_memmap(packed / "train_images.npy", "w+", np.uint8, (n, 96, 96, 3))
    yy, xx = np.mgrid[:96, :96]
    for i in range(n):
        x = np.array([220.0, 160.0, 200.0]) + rng.normal(0, 20, (96, 96, 3))
        if labels[i]:
            cy, cx = rng.integers(38, 58, 2)
            x[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(80, 160)] = [90, 40, 120]
        images[i] = np.clip(x, 0, 255).astype(np.uint8)
    images.flush()
    del images
    ids = [f"{seed:02d}{i:038x}" for i in range(n)]
    pd.DataFrame({"id": ids, "label": labels}).to_csv(packed / "train_ids.csv", index=False)
    (packed / "manifest.json").write_text(json.dumps({"splits": {"train": {"count": n}}}))
    pd.DataFrame({"id": ids, "fold": np.arange(n) % n_folds}).to_csv(root / "folds.csv", index=False)
    return root


def fast_config(**kw) -> TrainConfig:
    base = dict(
        model="test_efficientnet_ln",
        pretrained=False,
        device="cpu",
        img_size=32,
        threads=1,
        batch_size=32,
        epochs=2,
        lr=3e-3,
        precision="fp32",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"))


def invoke(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_learns_a_synthetic_signal(synth, tmp_path):
    results = train(fast_config(epochs=3, model="test_resnet", precision="auto"), synth, tmp_path / "run", folds=[0])
    hist = pd.read_csv(RunLayout.of(tmp_path / "run").history(0))
    assert list(hist.columns) == ["epoch", "lr", "train_loss", "val_loss", "val_auc", "images_per_s", "skipped_steps"]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert results[0].best_auc > 0.9 and results[0].best_auc == pytest.approx(hist["val_auc"].max())
    assert (hist["skipped_steps"] == 0).all() and (hist["images_per_s"] > 0).all()
    best = torch.load(RunLayout.of(tmp_path / "run").best(0), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values())


def test_cli_fold_all_on_real_patches_covers_every_id_once(subset_factory, tmp_path):
    from hcd_kit.data import create_folds, prepare

    data = subset_factory(n_train=96, n_test=4)
    prepare(data, workers=1)
    create_folds(data, n_folds=3)
    run = tmp_path / "run"
    res = invoke("--data-dir", data, "--fold", "all", "--model", "test_resnet", "--epochs", 1, "--run-dir", run, *FAST)
    assert res.exit_code == 0, res.output
    oof = pd.concat(pd.read_csv(p, dtype={"id": str}) for p in sorted(run.glob("fold*/oof.csv")))
    assert list(oof.columns) == ["id", "fold", "prob", "label"]
    labels = pd.read_csv(data / "train_labels.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(labels["id"])  # every training id exactly once
    merged = oof.merge(labels, on="id", suffixes=("", "_true"))
    assert (merged["label"] == merged["label_true"]).all() and oof["prob"].between(0, 1).all()
    folds = pd.read_csv(data / "folds.csv", dtype={"id": str}).set_index("id")["fold"]
    assert (oof.set_index("id")["fold"] == folds.loc[oof["id"]].to_numpy()).all()
    cfg = (run / "config.toml").read_text()
    assert 'model = "test_resnet"' in cfg and "img_size = 32" in cfg
    assert "CV AUC" in res.output and "fold 2: best val AUC" in (run / "train.log").read_text()


def test_resume_after_interruption_matches_uninterrupted_run(synth, tmp_path):
    cfg = fast_config(epochs=3, ema=True, drop_rate=0.3, schedule="cosine", imbalance="balanced")
    train(cfg, synth, tmp_path / "full", folds=[1])

    def stop_after_first(fold, epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, synth, tmp_path / "cut", folds=[1], hooks=Hooks(epoch_end=stop_after_first))
    assert len(pd.read_csv(tmp_path / "cut/fold1/history.csv")) == 1
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, synth, tmp_path / "cut", folds=[1])  # never overwrite a started fold silently
    train(cfg, synth, tmp_path / "cut", folds=[1], resume=True)

    a = torch.load(tmp_path / "full/fold1/best.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/fold1/best.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ha, hb = pd.read_csv(tmp_path / "full/fold1/history.csv"), pd.read_csv(tmp_path / "cut/fold1/history.csv")
    cols = ["epoch", "train_loss", "val_loss", "val_auc"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], atol=1e-6)

    again = train(cfg, synth, tmp_path / "cut", folds=[1], resume=True)  # finished folds are skipped
    assert again[1].status == "already finished" and again[1].epochs_run == 3


def test_an_interrupt_says_what_was_kept_of_the_fold(synth, tmp_path):
    steps = []

    def stop_in_the_second_folds_first_step(step, loss):
        steps.append(step)
        if step == 0 and len(steps) > 1:  # fold 0 ran its epoch; fold 1 has not finished one
            raise KeyboardInterrupt
        return loss

    run = RunLayout.of(tmp_path / "early")
    with pytest.raises(KeyboardInterrupt):
        train(
            fast_config(epochs=1), synth, run.root, folds=[0, 1], hooks=Hooks(loss=stop_in_the_second_folds_first_step)
        )
    log = " ".join(run.log.read_text().split())
    assert run.best(0).is_file() and not run.last(0).exists()  # fold 0 finished: no optimiser state kept
    assert not run.last(1).exists()
    assert (
        "fold 1: interrupted before its first epoch finished, so nothing was kept for it; add --resume to "
        "restart it (finished folds are kept)"
    ) in log
    assert "keeps the last finished epoch" not in log

    def stop_after_the_first_epoch(fold, epoch):
        raise KeyboardInterrupt

    run = RunLayout.of(tmp_path / "late")
    with pytest.raises(KeyboardInterrupt):
        train(fast_config(epochs=2), synth, run.root, folds=[1], hooks=Hooks(epoch_end=stop_after_the_first_epoch))
    log = " ".join(run.log.read_text().split())
    assert f"fold 1: interrupted; {run.last(1)} keeps the last finished epoch: add --resume to continue" in log
    assert "nothing was kept" not in log


def test_nonfinite_losses_are_skipped_and_counted(synth, tmp_path):
    poisoned = {1, 3}
    hooks = Hooks(loss=lambda step, loss: loss * math.nan if step in poisoned else loss)
    res = train(fast_config(epochs=1, precision="auto"), synth, tmp_path / "run", folds=[2], hooks=hooks)
    hist = pd.read_csv(tmp_path / "run/fold2/history.csv")
    assert hist["skipped_steps"].tolist() == [2] and res[2].skipped_steps == 2
    assert np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["val_auc"]).all()
    best = torch.load(tmp_path / "run/fold2/best.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in best.values() if v.is_floating_point())


def test_persistent_nonfinite_losses_stop_with_a_clear_error(synth, tmp_path):
    hooks = Hooks(loss=lambda step, loss: loss + math.inf)
    with pytest.raises(TrainingError, match="3 consecutive steps with non-finite loss"):
        train(fast_config(epochs=1, max_bad_steps=3), synth, tmp_path / "run", folds=[0], hooks=hooks)


@pytest.mark.parametrize("fused", [False, True], ids=["decided-on-host", "decided-on-device"])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_skipped_step_leaves_weights_and_optimiser_untouched(name, fused):
    """A non-finite loss: nothing is applied (weights, optimiser moments and step count stay), the step comes back
    as NaN (counted as skipped); the next good step applies. ``fused`` is what CUDA uses: the skip is decided by
    the fused kernel on the device, with no host read."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer(model, name, lr=0.1, fused=fused)
    assert bool(opt.defaults.get("fused")) == fused
    t = Trainer(
        model=model,
        net=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        ema=None,
        loss_fn=torch.nn.BCEWithLogitsLoss(),
    )
    env = Env(torch.device("cpu"), None)
    x, y = torch.ones(2, 4), torch.tensor([0.0, 1.0])
    assert torch.isfinite(train_step(t, x, y, env, grad_clip=1.0))  # one good step: the optimiser has state
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    for poison in (math.inf, math.nan):
        assert torch.isnan(
            train_step(t, x, y, env, grad_clip=1.0, adjust_loss=lambda loss, poison=poison: loss * poison)
        )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    after = opt.state_dict()["state"]
    assert all(
        torch.equal(torch.as_tensor(v), torch.as_tensor(after[k][n])) for k in state for n, v in state[k].items()
    )
    assert torch.isfinite(train_step(t, x, y, env, grad_clip=1.0))
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_float16_nonfinite_loss_is_skipped_by_the_scaler_and_counted():
    """Under float16 the GradScaler skips a step whose gradients overflow (not counted: normal dynamics) and a step
    whose loss is not finite (counted); both leave the weights as they were and lower the scale."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer(model, "adamw", lr=0.1, fused=True)
    t = Trainer(
        model=model,
        net=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        scaler=torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True),
        ema=None,
        loss_fn=torch.nn.BCEWithLogitsLoss(),
    )
    env = Env(torch.device("cpu"), None)
    x, y = torch.ones(2, 4), torch.tensor([0.0, 1.0])
    before = [p.detach().clone() for p in model.parameters()]
    assert torch.isnan(train_step(t, x, y, env, grad_clip=1.0, adjust_loss=lambda loss: loss * math.nan))
    assert t.scaler.get_scale() == 512.0
    overflow = train_step(t, x, y, env, grad_clip=1.0, adjust_loss=lambda loss: loss * 1e38)  # finite loss, inf grads
    assert torch.isfinite(overflow) and t.scaler.get_scale() == 256.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(train_step(t, x, y, env, grad_clip=1.0))
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
        (["--fold", "7"], "--fold 7 is out of range: folds.csv has folds 0..2"),
        (["--fold", "x"], "--fold must be 'all'"),
        (["--weights", "missing.pth"], "weights file not found"),
    ],
)
def test_bad_options_fail_in_one_line(synth, tmp_path, args, message):
    res = invoke("--data-dir", synth, "--run-dir", tmp_path / "run", *FAST, *args)
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run" / "fold0").exists()


def test_missing_store_and_missing_folds_fail_in_one_line(synth, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("--data-dir", empty, "--run-dir", tmp_path / "run", *FAST)
    assert res.exit_code == 1 and "hcd prepare --data-dir" in res.output
    nofolds = tmp_path / "nofolds"
    (nofolds / "packed").mkdir(parents=True)
    for f in (synth / "packed").iterdir():
        (nofolds / "packed" / f.name).symlink_to(f)
    res = invoke("--data-dir", nofolds, "--run-dir", tmp_path / "run", *FAST)
    assert res.exit_code == 1 and "hcd folds --data-dir" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_toml_config_unknown_key_and_flag_override(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text("epochs = 4\nlr = 0.02\n[augment]\nstain = 0.1\n")
    cfg, run = resolve_config(toml, {"epochs": 9, "lr": None}, None, resume=False)
    assert (cfg.epochs, cfg.lr, cfg.augment.stain) == (9, 0.02, 0.1)  # flag beats file, file beats default
    assert run == Path("runs") / cfg.model
    toml.write_text("epochz = 4\n")
    res = invoke("--data-dir", tmp_path, "--config", toml)
    assert res.exit_code == 2 and "unknown config key 'epochz'" in res.output


def test_local_weights_file_is_loaded(tmp_path):
    import timm

    from hcd_kit.model import create_model

    source = timm.create_model("test_resnet", num_classes=1)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = create_model("test_resnet", weights=tmp_path / "w.pth")
    got, want = model.state_dict(), source.state_dict()
    body = [k for k in want if not k.startswith("fc.")]  # timm re-initialises the classifier head
    assert body and all(torch.equal(got[k], want[k]) for k in body)


def test_run_keeps_its_split_and_refuses_another(synth, tmp_path):
    run = tmp_path / "run"
    train(fast_config(epochs=1), synth, run, folds=[0])
    assert (run / "folds.csv").read_bytes() == (synth / "folds.csv").read_bytes()
    # cv knows the run should have 3 folds although only fold 0 was trained
    res = CliRunner().invoke(app, ["cv", "--run-dir", str(run), "--no-plots"])
    assert res.exit_code == 0 and "fold(s) 1, 2 have no oof.csv" in res.output
    other = make_synthetic(tmp_path / "other", n_folds=2)
    res = invoke(
        "--data-dir", other, "--run-dir", run, "--fold", "1", "--resume", *FAST, "--model", "test_efficientnet_ln"
    )
    assert res.exit_code != 0 and "trained on another split" in res.output


def test_resume_alone_continues_the_folds_the_run_was_started_for(synth, tmp_path):
    run = tmp_path / "run"
    train(fast_config(epochs=1), synth, run, folds=[0])
    assert json.loads((run / "plan.json").read_text()) == {"folds": [0]}
    res = invoke("--data-dir", synth, "--run-dir", run, "--resume")  # no --fold: fold 0 only, already done
    assert res.exit_code == 0, res.output
    assert "fold 0: already finished" in res.output and not (run / "fold1").exists()
    res = invoke("--data-dir", synth, "--run-dir", run, "--resume", "--fold", "all", *FAST)  # explicit: every fold
    assert res.exit_code == 0, res.output
    assert all((run / f"fold{k}" / "oof.csv").is_file() for k in (1, 2))
    assert json.loads((run / "plan.json").read_text()) == {"folds": [0, 1, 2]}


def _interrupted_after_epoch_1(synth, run: Path, **kw) -> None:
    """Fold 0 of a 2-epoch run, stopped (as Ctrl-C stops it) once epoch 1's last.pt and state.json are written."""

    def stop(fold, epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fast_config(epochs=2, **kw), synth, run, folds=[0], hooks=Hooks(epoch_end=stop))


def test_damaged_last_checkpoint_is_one_line(synth, tmp_path):
    run = tmp_path / "run"
    _interrupted_after_epoch_1(synth, run)
    last = run / "fold0" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    res = invoke("--data-dir", synth, "--run-dir", run, "--resume", "--fold", "0")
    assert res.exit_code == 1
    assert f"cannot resume from {last}" in res.output and "delete it to restart the fold" in res.output
    assert "Traceback" not in res.output


def test_progress_is_read_from_state_json_without_loading_the_checkpoint(synth, tmp_path, monkeypatch):
    """``state.json`` beside ``last.pt`` says how far each fold got: --resume skips a finished fold and resumes an
    interrupted one without ``torch.load`` of a finished fold's checkpoint (gigabytes for a large model)."""
    run = tmp_path / "run"
    train(fast_config(epochs=1), synth, run, folds=[1])
    state = json.loads((run / "fold1" / "state.json").read_text())
    assert state["finished"] is True and state["epoch"] == 1 and len(state["history"]) == 1
    assert not list((run / "fold1").glob(".tmp-*"))  # written atomically: no temporary file left
    loads = []
    real_load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda path, *a, **k: (loads.append(Path(path).name), real_load(path, *a, **k))[1]
    )
    res = train(fast_config(epochs=1), synth, run, folds=[1], resume=True)
    assert res[1].status == "already finished" and res[1].best_auc == pytest.approx(state["best_auc"])
    assert "last.pt" not in loads and not (run / "fold1" / "last.pt").exists()
    # killed between state.json (finished) and the removal of last.pt: both there, and the fold is still skipped
    (run / "fold1" / "last.pt").write_bytes(b"damaged")
    assert train(fast_config(epochs=1), synth, run, folds=[1], resume=True)[1].status == "already finished"


def test_checkpoint_of_a_disabled_scaler_resumes_under_an_enabled_one(synth, tmp_path):
    # A fold started on the CPU (bf16: no GradScaler) and resumed on a CUDA GPU (fp16: GradScaler on) must
    # go on; here the enabled scaler is the CPU's own float16 one.
    run = tmp_path / "run"
    _interrupted_after_epoch_1(synth, run, precision="bf16")  # a finished fold keeps no last.pt to resume
    t = build_trainer(fast_config(), 4, np.array([0, 1]), Env(torch.device("cpu"), torch.float16))
    assert t.scaler.is_enabled()
    state = load_checkpoint(run / "fold0" / "last.pt", t)
    assert state.epoch == 1 and t.scaler.get_scale() > 0


@pytest.mark.parametrize(
    "toml, flags, message",
    [
        ('epochs = "2"\n', ["--epochs", "1"], "config key 'epochs'"),  # a flag must not hide a wrong value
        ("drop_rate = 1.5\n", [], "--drop-rate must be in [0, 1), got 1.5"),
        ("weight_decay = -1.0\n", [], "--weight-decay must be >= 0, got -1.0"),
        ("[augment]\ncolor = 2.0\n", [], "augment.color must be in [0, 1.0], got 2.0"),
        ("", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
        ("", ["--lr", "0"], "--lr must be positive, got 0.0"),
    ],
)
def test_bad_config_values_are_one_line(synth, tmp_path, toml, flags, message):
    cfg = tmp_path / "train.toml"
    cfg.write_text(toml)
    res = invoke("--data-dir", synth, "--run-dir", tmp_path / "run", "--config", cfg, *flags, *FAST)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_torchrun_without_ddp_is_refused(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = invoke("--data-dir", synth, "--run-dir", tmp_path / "run", *FAST)
    assert res.exit_code == 2 and "add --strategy ddp" in res.output


def test_a_finished_fold_keeps_best_pt_and_state_json_but_no_last_pt(synth, tmp_path):
    """A finished fold never resumes, so its last.pt (the optimiser state: gigabytes for a ViT-L) goes once its
    state.json says finished; a fold stopped early by --patience is finished too. --resume skips both folds by their
    state.json, and `hcd cv` reports them."""
    run = RunLayout.of(tmp_path / "run")
    frozen = Hooks(loss=lambda step, loss: loss * 0)  # no step moves the weights: the val AUC never improves
    res = train(fast_config(epochs=3, patience=1, weight_decay=0.0), synth, run.root, folds=[0, 1], hooks=frozen)
    assert [r.epochs_run for r in res.values()] == [2, 2]  # stopped early, after epoch 2 of 3
    for k in (0, 1):
        assert sorted(p.name for p in run.fold_dir(k).iterdir()) == ["best.pt", "history.csv", "oof.csv", "state.json"]
        assert json.loads(run.state(k).read_text())["finished"] is True
    r = invoke("--run-dir", run.root, "--data-dir", synth, "--resume")
    assert r.exit_code == 0, r.output
    assert "fold 0: already finished" in r.output and "fold 1: already finished" in r.output
    assert "resuming" not in r.output and not run.last(0).exists()
    r = CliRunner().invoke(app, ["cv", "--run-dir", str(run.root), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "stopped before" not in r.output and "fold" in r.output


def test_cv_says_which_folds_are_unfinished(synth, tmp_path):
    def stop(fold, epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fast_config(epochs=2), synth, tmp_path / "run", folds=[0], hooks=Hooks(epoch_end=stop))
    res = CliRunner().invoke(app, ["cv", "--run-dir", str(tmp_path / "run"), "--no-plots"])
    assert res.exit_code == 0 and "fold(s) 0 stopped before their last epoch" in " ".join(res.output.split())
    train(fast_config(epochs=2), synth, tmp_path / "run", folds=[0], resume=True)
    res = CliRunner().invoke(app, ["cv", "--run-dir", str(tmp_path / "run"), "--no-plots"])
    assert res.exit_code == 0 and "stopped before" not in res.output


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(ema_decay=1.0), "--ema-decay must be in (0, 1), got 1.0"),
        (dict(optimizer="adam"), "--optimizer: 'adam' is not one of 'adamw', 'sgd'"),
        (dict(schedule="step"), "--schedule: 'step' is not one of 'onecycle', 'cosine'"),
        (dict(precision="fp8"), "--precision: 'fp8' is not one of"),
    ],
)
def test_train_config_names_the_flag_of_a_bad_value(kw, message):
    with pytest.raises(ConfigError) as err:
        fast_config(**kw)
    assert message in str(err.value)


def test_every_user_setting_has_its_help_text_once():
    import dataclasses

    # augment is a table with its own keys; recipe records which recipe the run started from (set by --recipe)
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("augment", "recipe")]
    assert all(f.metadata.get("help") for f in fields), [f.name for f in fields if not f.metadata.get("help")]
