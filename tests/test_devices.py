"""Devices: what ``--device`` accepts, the fold-parallel device plan and the model wrapper, on any machine, and
a real training step on a CUDA GPU where there is one.

The CUDA decisions are plain Python over ``torch.cuda.is_available`` and ``torch.cuda.device_count``, so the
CPU tests simulate a machine with (or without) GPUs by replacing those two; nothing touches a real device
there. The tests marked ``gpu`` need a real CUDA GPU and are skipped without one (``pytest -m gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import packed_subset
from torch import nn
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.device import amp_dtype, channels_last, model_input, resolve_device
from hcd_kit.errors import ConfigError
from hcd_kit.training.distributed import DistInfo, fold_devices, wrap_model


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: from now on torch sees ``n`` CUDA GPUs (0: none), as far as these decisions ask."""

    def simulate(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return simulate


# ------------------------------------------------------------------------------------------ --device


def test_device_cuda_without_a_gpu_is_refused_by_hcd_train_in_one_line(gpus, sample_root, tmp_path):
    gpus(0)
    data = packed_subset(sample_root, tmp_path / "data", n_train=16, n_test=4)
    run = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data-dir",
            str(data),
            "--run-dir",
            str(run),
            "--device",
            "cuda",
            "--no-pretrained",
            "--model",
            "resnet10t",
            "--epochs",
            "1",
        ],
    )
    # a ConfigError (a flag that cannot be honoured here): exit code 2, one line, nothing written
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        "error: device 'cuda' asked for but no CUDA GPU is visible; use --device cpu"
    ], res.stderr
    assert res.stdout == "" and not run.exists()


@pytest.mark.parametrize(
    "n_gpus, spec, says",
    [
        (0, "cuda:3", "device 'cuda:3' asked for but no CUDA GPU is visible; use --device cpu"),
        (2, "cuda:3", "device 'cuda:3' does not exist: 2 GPU(s) visible"),
        (2, "gpu", "unknown device 'gpu' (use auto, cpu, cuda or cuda:N)"),
        (2, "meta", "unsupported device 'meta' (use auto, cpu, cuda or cuda:N)"),
    ],
)
def test_resolve_device_refuses_what_is_not_there(gpus, n_gpus, spec, says):
    gpus(n_gpus)
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    assert str(err.value) == says


def test_resolve_device_takes_what_is_there(gpus):
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")


# ------------------------------------------------------------------------------------------ fold-parallel


def test_fold_devices_spread_folds_over_every_gpu(gpus):
    gpus(2)
    assert fold_devices("auto") == ["cuda:0", "cuda:1"] and fold_devices("cuda") == ["cuda:0", "cuda:1"]
    assert fold_devices("auto", n_workers=3) == ["cuda:0", "cuda:1", "cuda:0"]  # more workers than GPUs: cycled
    assert fold_devices("cuda", n_workers=1) == ["cuda:0"]
    with pytest.raises(ConfigError) as err:  # one named GPU cannot hold one fold per GPU
        fold_devices("cuda:1")
    assert str(err.value) == "--strategy fold-parallel spreads folds over all GPUs; use --device auto, not cuda:1"


def test_fold_devices_on_a_cpu_only_machine(gpus):
    gpus(0)
    assert fold_devices("auto") == ["cpu", "cpu"] and fold_devices("cpu", n_workers=3) == ["cpu"] * 3
    with pytest.raises(ConfigError, match="use --device auto, not cuda$"):
        fold_devices("cuda")


# ------------------------------------------------------------------------------------------ the wrapper


@pytest.mark.parametrize("strategy", ["auto", "single", "dp"])
def test_wrap_model_leaves_the_model_bare_unless_it_spans_gpus(gpus, strategy):
    model = nn.Linear(4, 1)
    gpus(0)
    assert wrap_model(model, strategy, torch.device("cpu"), DistInfo()) is model
    gpus(2)  # two GPUs, but the model is on the CPU, or on one named GPU: nothing to spread
    assert wrap_model(model, strategy, torch.device("cpu"), DistInfo()) is model
    assert wrap_model(model, strategy, torch.device("cuda:1"), DistInfo()) is model


# ------------------------------------------------------------------------------------------ a real GPU


@pytest.mark.gpu
def test_fold_devices_name_every_visible_gpu():
    n = torch.cuda.device_count()
    assert fold_devices("auto") == [f"cuda:{i}" for i in range(n)]
    assert resolve_device("auto").type == "cuda"


@pytest.mark.gpu
def test_a_train_step_on_cuda_runs_fp16_channels_last_from_pinned_batches():
    """What `hcd train` does on a GPU by default: float16 autocast with a GradScaler, a CNN in channels-last
    memory, batches from pinned host memory; a few steps move the weights and every loss is finite."""
    from hcd_kit.data import BatchLoader
    from hcd_kit.training import TrainConfig
    from hcd_kit.training.step import Env, build_trainer, train_batch, train_step

    device = resolve_device("cuda")
    env = Env(device, amp_dtype(device, "auto"))
    assert env.dtype == torch.float16  # auto on CUDA
    cfg = TrainConfig(model="resnet10t", pretrained=False, device="cuda", img_size=64, batch_size=8, epochs=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    labels = (np.arange(32) % 2).astype(np.float32)
    loader = BatchLoader(images, labels, batch_size=8, seed=0, drop_last=True, pin_memory=True)
    torch.manual_seed(0)
    t = build_trainer(cfg, len(loader), labels, env)
    assert t.scaler.is_enabled()  # float16 needs the scaler
    assert channels_last(device, t.model) and next(t.model.parameters()).device.type == "cuda"
    stem = next(m.weight for m in t.model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1)
    assert stem.is_contiguous(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in t.model.parameters()]
    losses = []
    for batch in loader:  # 4 steps: the scaler may skip the first on an overflow, as it is meant to
        assert batch.images.is_pinned() and batch.labels.is_pinned()
        x, y = train_batch(batch, 0, cfg, env)
        assert x.device.type == "cuda" and x.shape == (8, 3, 64, 64)
        assert model_input(x, t.model).is_contiguous(memory_format=torch.channels_last)
        losses.append(float(train_step(t, x, y, env, cfg.grad_clip)))
    torch.cuda.synchronize()
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
