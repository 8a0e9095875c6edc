"""Devices and mixed precision, in one place: no other module calls ``.cuda()`` or builds an autocast.

``resolve_device("auto")`` picks CUDA when present, else the CPU. ``amp_dtype`` decides the autocast dtype
(float16 on CUDA unless the user asks for bfloat16 and the GPU has it; bfloat16 on the CPU; none for
"fp32"), ``autocast`` returns the matching context (a no-op when AMP is off) and ``grad_scaler`` a scaler
that is only enabled for float16, the one dtype whose small gradients underflow.
"""

from __future__ import annotations

import contextlib

import torch

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


def amp_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` and the user's ``precision`` choice; None means full float32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError("this GPU has no bfloat16 support (T4 is one); use --precision fp16 or auto")
            return torch.bfloat16
        return torch.float16
    if precision == "fp16":
        raise ConfigError("float16 autocast is for CUDA; on the CPU use --precision bf16 (or auto)")
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for ``device`` in ``dtype``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for float16 (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
