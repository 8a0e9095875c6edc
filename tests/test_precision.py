"""What hcd_kit.device decides for the machine at hand: precision by CPU capability, memory format by model,
threads from the affinity mask. The capability is mocked at the one function that asks torch (``cpu_caps``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import timm
import torch

from hcd_kit import device as dev
from hcd_kit.device import CpuCaps, channels_last, choose_precision, cpu_threads, model_input, place_model, set_threads
from hcd_kit.errors import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from test_train import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def caps(monkeypatch):
    """Pretend to be a CPU of the given class: ``caps(bf16=False)`` is the AVX2 class."""

    def pretend(bf16: bool, isa: str = "AVX2") -> None:
        monkeypatch.setattr(dev, "cpu_caps", lambda: CpuCaps(isa, bf16))
        dev._emulated_bf16_warning.cache_clear()

    return pretend


def test_auto_is_fp32_on_a_cpu_without_native_bf16_and_says_why(caps):
    caps(bf16=False, isa="AVX2")
    choice = choose_precision(CPU, "auto")
    assert choice.dtype is None and choice.name == "fp32"
    assert "AVX2" in choice.label and "no native bf16" in choice.label and "emulated" in choice.label


def test_auto_is_bf16_where_the_cpu_runs_it_natively(caps):
    caps(bf16=True, isa="AVX512")
    choice = choose_precision(CPU, "auto")
    assert choice.dtype is torch.bfloat16 and choice.label.startswith("bf16 (auto: CPU AVX512, native bf16")


def test_explicit_bf16_on_an_emulating_cpu_runs_after_one_warning(caps, capsys):
    caps(bf16=False)
    assert choose_precision(CPU, "bf16").dtype is torch.bfloat16
    assert choose_precision(CPU, "bf16").dtype is torch.bfloat16  # asked twice (train, then validate): warned once
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "no native bfloat16" in err and "emulated" in err and "fp32" in err


def test_explicit_bf16_on_a_native_cpu_and_fp32_anywhere_say_nothing(caps, capsys):
    caps(bf16=True, isa="AVX512")
    assert choose_precision(CPU, "bf16").dtype is torch.bfloat16
    caps(bf16=False)
    assert choose_precision(CPU, "fp32").dtype is None
    assert capsys.readouterr().err == ""


def test_fp16_on_the_cpu_is_refused_in_one_line(caps):
    caps(bf16=True)
    with pytest.raises(ConfigError, match="float16 autocast is for CUDA"):
        choose_precision(CPU, "fp16")


def test_the_real_capability_follows_the_onednn_isa_cap():
    """``ONEDNN_MAX_CPU_ISA=AVX2`` (the AVX2 class on any machine) turns native bf16 off, so auto is fp32."""
    code = (
        "import torch; from hcd_kit.device import cpu_caps, choose_precision; c = cpu_caps(); "
        "print(c.bf16, choose_precision(torch.device('cpu')).name)"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "fp32"]


def test_the_training_log_and_environment_record_name_the_choice(caps, synth, tmp_path):
    from hcd_kit.training import TrainConfig, train

    caps(bf16=False, isa="AVX2")
    cfg = TrainConfig(
        model="resnet10t", pretrained=False, device="cpu", img_size=32, threads=1, batch_size=32, epochs=1
    )
    train(cfg, synth, tmp_path / "run", folds=[0])
    first = (tmp_path / "run" / "train.log").read_text().splitlines()[0]
    assert "precision fp32 (auto: CPU AVX2, no native bf16" in first
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env["precision"] == "fp32" and env["cpu_isa"] == "AVX2" and env["cpu_bf16_native"] is False


@pytest.mark.parametrize(
    "name, expected", [("resnet10t", True), ("efficientnet_b0", True), ("vit_tiny_patch16_224", False)]
)
def test_channels_last_on_the_cpu_for_convolutional_networks_only(name, expected):
    """NHWC was measured faster for CNNs on both CPU classes (device.py's docstring has the figures); a
    transformer's one patch-embedding convolution gains nothing, so it stays as it is."""
    kw = {"img_size": 32} if name.startswith("vit") else {}
    model = timm.create_model(name, pretrained=False, num_classes=1, **kw)
    assert channels_last(CPU, model) is expected
    placed = place_model(model, CPU)
    x = model_input(torch.zeros(2, 3, 32, 32), placed)
    assert x.is_contiguous(memory_format=torch.channels_last) is expected
    assert placed(x).shape == (2, 1)


def test_threads_come_from_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads() == 2
    before = torch.get_num_threads()
    try:
        assert set_threads() == 2 and torch.get_num_threads() == 2
        assert set_threads(processes=2) == 1  # two DDP ranks or fold workers share the two CPUs
        assert set_threads(threads=3) == 3  # --threads wins
    finally:
        torch.set_num_threads(before)


def test_each_test_worker_runs_on_its_own_cpus(request):
    """The suite's xdist workers (pyproject addopts) are pinned to disjoint shares of the CPUs, so hcd's threads,
    sized from the affinity mask, never oversubscribe the cores: on 2 cores, two workers of one thread each."""
    from conftest import PINNED

    worker = getattr(request.config, "workerinput", None)
    if worker is None or not PINNED:
        pytest.skip("not under pytest-xdist (-n 0), more workers than CPUs, or no affinity masks on this OS")
    index, count = int(worker["workerid"].removeprefix("gw")), int(worker["workercount"])
    mine = sorted(os.sched_getaffinity(0))
    assert mine == PINNED["share"] == PINNED["before"][index::count]
    assert cpu_threads() == len(mine) == len(PINNED["before"]) // count + (index < len(PINNED["before"]) % count)
    # a subprocess inherits the pin: an `hcd` command started by a test sizes its threads from the same CPUs
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"], capture_output=True, text=True
    )
    assert out.stdout.strip() == str(mine)
