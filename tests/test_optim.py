"""Optimisers, per-step schedules and the weight EMA (``build_optimizer``, ``build_schedule``, ``Ema``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hcd_kit.training import Ema, Swa, build_optimizer, build_schedule


def _lrs(opt, sched, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_weight_decay_skips_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and [p.ndim for p in decayed["params"]] == [4]
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])


def test_sgd_is_nesterov():  # bad names and values are refused by TrainConfig (test_train.py)
    opt = build_optimizer(nn.Linear(2, 1), "sgd", lr=0.1, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert isinstance(build_optimizer(nn.Linear(2, 1), "adamw", lr=0.1), torch.optim.AdamW)


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_schedules_warm_up_peak_at_lr_and_anneal(name):
    opt = build_optimizer(nn.Linear(2, 1), "adamw", lr=0.01)
    lrs = _lrs(opt, build_schedule(opt, name, total_steps=100, warmup_steps=10), 100)
    assert lrs[0] < 0.005  # starts low
    assert max(lrs) == pytest.approx(0.01, rel=1e-3)  # peaks at the requested lr
    assert 8 <= lrs.index(max(lrs)) <= 12  # ... at the end of the warm-up
    assert lrs[-1] < 0.0015  # and ends near zero
    assert all(a >= b for a, b in zip(lrs[12:], lrs[13:]))  # monotone decay after the peak


def test_cosine_warms_up_linearly_and_ends_at_one_percent():
    opt = build_optimizer(nn.Linear(2, 1), "adamw", lr=1.0)
    lrs = _lrs(opt, build_schedule(opt, "cosine", total_steps=100, warmup_steps=10), 100)
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # after the last step


def test_schedule_state_resumes_exactly():
    opt = build_optimizer(nn.Linear(2, 1), "adamw", lr=0.01)
    sched = build_schedule(opt, "cosine", total_steps=50, warmup_steps=5)
    first = _lrs(opt, sched, 20)
    state, opt_state = sched.state_dict(), opt.state_dict()
    rest = _lrs(opt, sched, 30)

    opt2 = build_optimizer(nn.Linear(2, 1), "adamw", lr=0.01)
    sched2 = build_schedule(opt2, "cosine", total_steps=50, warmup_steps=5)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert _lrs(opt2, sched2, 30) == pytest.approx(rest)
    assert len(first) == 20


def test_ema_tracks_weights_and_round_trips():
    model = nn.Linear(3, 1)
    ema = Ema(model, decay=0.9)
    start = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)  # warm-up decay of the first update
    assert torch.allclose(ema.module.weight, d * start + (1 - d) * model.weight)
    assert not ema.module.weight.requires_grad

    other = Ema(nn.Linear(3, 1), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.module.weight, ema.module.weight) and other.updates == 1
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-6)  # converges to constant weights
    assert math.isclose(ema.decay, 0.9)


def test_swa_is_the_plain_mean_of_the_last_epochs_weights_and_round_trips():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    swa = Swa(model, epochs=3, total=5)  # epochs 3, 4, 5 (2, 3, 4 counted from 0) are averaged
    seen = []
    for epoch in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(epoch + 1))  # each epoch ends with new weights
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(7)
        swa.update(model, epoch)
        if epoch >= 2:
            seen.append({k: v.clone() for k, v in model.state_dict().items()})
        if epoch == 2:  # the first averaged epoch is copied exactly
            assert torch.equal(swa.module[0].weight, model[0].weight) and swa.count == 1
    assert swa.count == 3
    for key, value in swa.module.state_dict().items():
        if value.is_floating_point():
            mean = sum(s[key] for s in seen) / 3
            assert torch.allclose(value, mean, atol=1e-6), key
        else:
            assert torch.equal(value, model.state_dict()[key]), key  # the step counter is the model's
    assert not any(p.requires_grad for p in swa.module.parameters())

    other = Swa(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), epochs=1, total=9)
    other.load_state_dict(swa.state_dict())
    assert other.count == 3 and other.first == 2 and torch.equal(other.module[0].weight, swa.module[0].weight)
