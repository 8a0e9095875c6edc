"""Kaggle machine shapes: which ``--machine-shape`` values exist today, why the others are refused, and how many
CUDA devices the kernel must find at its start (``kernel_install.py``'s GPU check).

Read from the client (kaggle 2.2, ``_RETIRED_ACCELERATORS``: the server silently runs a retired shape on another
machine) and the maintainers' PR #1198 (``NvidiaTeslaT4`` is T4 x2; a single T4 is not offered;
``NvidiaTeslaT4Highmem`` is an internal pool).

    check_machine_shape("NvidiaTeslaP100")   # ConfigError: retired, Kaggle runs it on a T4 x2 instead ...
    min_gpus("NvidiaTeslaT4")                # 2
"""

from __future__ import annotations

from hcd_kit.choices import MACHINE_SHAPES
from hcd_kit.errors import ConfigError

_P100 = (
    "retired: Kaggle silently runs it on another GPU (NvidiaTeslaT4), and the image's torch (cu128) cannot use a "
    "P100 anyway (cudaErrorNoKernelImageForDevice)"
)
_TPU = "hcd trains with PyTorch on CUDA GPUs, so a TPU session would train on its CPU"
REFUSED = {
    "NvidiaTeslaP100": _P100,
    "TpuV38": f"retired (Kaggle runs it on a TpuV5E8 instead), and {_TPU}",
    "Tpu1VmV38": f"retired (Kaggle runs it on a TpuV5E8 instead), and {_TPU}",
    "TpuV232": "retired: Kaggle runs it on a CPU, with no accelerator at all",
    "TpuV2256": "retired: Kaggle runs it on a CPU, with no accelerator at all",
    "NvidiaTeslaT4Highmem": "an internal Kaggle pool, not offered to users",
    "TpuV5E8": _TPU,
    "TpuV6E8": _TPU,
}
# CUDA devices a shape has; a session that finds fewer stops at its start (unless --allow-other-gpus)
_GPUS = {"NvidiaTeslaT4": 2}


def check_machine_shape(shape: str) -> None:
    """Refuse, in one line with the reason, a shape Kaggle has retired, keeps internal, or hcd cannot use."""
    if shape in MACHINE_SHAPES:
        return
    use = f"use one of {', '.join(MACHINE_SHAPES)} (NvidiaTeslaT4 = T4 x2, the default)"
    known = {s.lower(): s for s in (*MACHINE_SHAPES, *REFUSED)}
    if shape in REFUSED:
        raise ConfigError(f"--machine-shape {shape}: {REFUSED[shape]}; {use}")
    if shape.lower() in known:
        raise ConfigError(f"--machine-shape {shape!r}: Kaggle spells it {known[shape.lower()]} (case matters)")
    raise ConfigError(f"--machine-shape {shape!r} is not a Kaggle machine shape; {use}")


def min_gpus(shape: str) -> int:
    """The CUDA devices a session of ``shape`` must have (2 for T4 x2, else at least 1)."""
    return _GPUS.get(shape, 1)
