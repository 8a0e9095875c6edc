"""Devices, precision, memory format and threads, in one place: no other module calls ``.cuda()``, builds an
autocast, asks what the CPU can do or sets torch's thread count.

``resolve_device("auto")`` picks CUDA when present, else the CPU. ``choose_precision`` decides the autocast
dtype and says why: float16 + GradScaler on CUDA (bfloat16 when asked and the GPU has it); on the CPU bfloat16
only where the CPU runs it natively (oneDNN reports bf16: AVX512-BF16 or AMX), else float32, because oneDNN
emulates bf16 on an AVX2-only CPU 10-20x slower than float32 (resnet10t, batch 64: 3.9 vs 77 img/s on a 2-core
AVX2 EPYC). ``cpu_caps`` is the one function that asks torch what the CPU can do. ``autocast`` returns the
matching context (a no-op when AMP is off) and ``grad_scaler`` a scaler enabled only for float16.

``channels_last`` says whether a model runs in NHWC memory: always on CUDA (tensor-core kernels), and on the
CPU for convolutional networks, where oneDNN's NHWC kernels were measured faster on both CPU classes (2 cores,
batch 64, 96 px, fwd + bwd + AdamW: resnet10t fp32 +8 % on AVX2 and +31 % on AVX512, bf16 +27 %; resnet18 fp32
+25 % / +13 %, bf16 even; TTA prediction ~30 %). A transformer has one convolution (its patch embedding),
so its format changes nothing and it is left alone. ``place_model`` and ``model_input`` apply the choice to a
model and to its input. ``cpu_threads`` counts the CPUs this process may run on (its affinity mask, not the
machine's cores: a container limited to 2 of 16 CPUs must not run 16 threads) and ``set_threads`` shares
them among the processes of a job.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
from torch import nn

from hcd_kit.choices import Precision
from hcd_kit.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:1' checked against what exists."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' asked for but no CUDA GPU is visible; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{spec}' does not exist: {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{spec}' (use auto, cpu, cuda or cuda:N)")
    return device


# ------------------------------------------------------------------------------------------ the CPU


@dataclass(frozen=True)
class CpuCaps:
    """What this CPU runs natively, as torch sees it (``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` included)."""

    isa: str  # torch's kernel level: "AVX512", "AVX2", "DEFAULT", ... ("unknown" on an old torch)
    bf16: bool  # oneDNN runs bfloat16 natively (AVX512-BF16 or AMX; emulated, and slow, otherwise)

    @property
    def label(self) -> str:
        return f"{self.isa}, {'native' if self.bf16 else 'no native'} bf16"


@functools.cache
def cpu_caps() -> CpuCaps:
    """The CPU's capability: the one place hcd asks torch (tests replace this function)."""
    try:
        isa = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # torch < 2.1
        isa = "unknown"
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: bf16 would be emulated by ATen
        bf16 = False
    return CpuCaps(isa, bf16)


def cpu_threads() -> int:
    """CPUs this process may run on (its affinity mask; the machine's count where the OS has no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads: ``threads`` when given, else this process's share of ``cpu_threads``
    among ``processes`` processes working at once. Returns the number set."""
    n = threads if threads > 0 else max(1, cpu_threads() // max(1, processes))
    torch.set_num_threads(n)
    return n


# ------------------------------------------------------------------------------------------ precision


@dataclass(frozen=True)
class PrecisionChoice:
    """The autocast dtype (None: float32) and, for the log and the run's records, its name and why."""

    dtype: torch.dtype | None
    name: str  # fp32, bf16, fp16
    reason: str

    @property
    def label(self) -> str:
        """``fp32 (auto: AVX2, no native bf16 on this CPU)``: the first training log line says this."""
        return f"{self.name} ({self.reason})"


@functools.cache
def _emulated_bf16_warning(isa: str) -> None:
    from hcd_kit.console import err_console

    err_console.print(
        f"warning: this CPU ({isa}) has no native bfloat16: --precision bf16 runs emulated, "
        "10-20x slower than fp32 (--precision auto picks fp32 here)",
        soft_wrap=True,
        markup=False,
    )


def choose_precision(device: torch.device, precision: Precision = "auto") -> PrecisionChoice:
    """The autocast dtype for ``device`` and the user's ``precision``, with the reason (see module docstring).

    An explicit ``bf16`` on a CPU without native bf16 still runs, after a one-line warning (once per process).
    """
    if device.type == "cuda":
        if precision == "fp32":
            return PrecisionChoice(None, "fp32", "--precision fp32")
        if precision == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError("this GPU has no bfloat16 support (T4 is one); use --precision fp16 or auto")
            return PrecisionChoice(torch.bfloat16, "bf16", "--precision bf16")
        how = "--precision fp16" if precision == "fp16" else "auto on CUDA"
        return PrecisionChoice(torch.float16, "fp16", f"{how}, GradScaler")
    caps = cpu_caps()
    if precision == "fp16":
        raise ConfigError("float16 autocast is for CUDA; on the CPU use --precision bf16 (or auto)")
    if precision == "fp32":
        return PrecisionChoice(None, "fp32", f"--precision fp32; CPU {caps.label}")
    if precision == "bf16":
        if not caps.bf16:
            _emulated_bf16_warning(caps.isa)
            return PrecisionChoice(torch.bfloat16, "bf16", f"--precision bf16, emulated: CPU {caps.label}")
        return PrecisionChoice(torch.bfloat16, "bf16", f"--precision bf16; CPU {caps.label}")
    if caps.bf16:
        return PrecisionChoice(torch.bfloat16, "bf16", f"auto: CPU {caps.label}")
    return PrecisionChoice(None, "fp32", f"auto: CPU {caps.label}, where bf16 would be emulated 10-20x slower")


def amp_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` and the user's ``precision`` choice; None means full float32."""
    return choose_precision(device, precision).dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``device`` in ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for float16 (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


# ------------------------------------------------------------------------------------------ memory format


def _convolutional(model: nn.Module) -> bool:
    """Most of the weights are in 2-d convolutions (a CNN), not one patch embedding (a transformer)."""
    conv = total = 0
    for m in model.modules():
        n = sum(p.numel() for p in m.parameters(recurse=False))
        total += n
        conv += n if isinstance(m, nn.Conv2d) else 0
    return total > 0 and conv >= total / 2


def channels_last(device: torch.device, model: nn.Module) -> bool:
    """Whether ``model`` runs in channels-last memory on ``device`` (see module docstring for the measurements)."""
    return device.type == "cuda" or _convolutional(model)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, in the memory format it runs fastest in there."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last(device, model) else model


def _stem(model: nn.Module) -> torch.Tensor | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1:
            return m.weight
    return None


def model_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` (N, C, H, W) in the memory format of ``model``'s first convolution (placed by ``place_model``)."""
    w = _stem(model)
    if w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
