"""What a training kernel leaves in its saved output, estimated before it is pushed, held to Kaggle's limit.

Kaggle saves at most 20 GB from ``/kaggle/working`` (../shared/docs/kaggle-api.md, "Session limits"). A training
kernel saves ``run/``: per fold ``best.pt`` (the weights), and ``last.pt`` (weights, the optimiser's moments, the
EMA copy) only for a fold still training, because a finished fold drops it (``training.checkpoint``). So the output
is at most every fold's ``best.pt``, plus one ``last.pt`` per fold trained at once when the session is stopped at
its time limit mid-fold, plus the submission, OOF files and logs (small). ``output_estimate`` sizes that from
``KernelSpec.fold_bytes`` (the CLI has the training layer size one fold's files from the model, on the meta
device), ``output_line`` words it for the plan, and ``check_output`` (from ``check_spec``) refuses, in one line, a
kernel whose estimate is over ``OUTPUT_MARGIN`` of the limit, saying what would fit.

    output_line(spec)   # "output: about 9.7 GB of Kaggle's 20 GB (5 x best.pt 1.2 GB, 1 last.pt in flight 3.6 GB)"
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hcd_kit.errors import ConfigError
from hcd_kit.kaggle.shapes import min_gpus
from hcd_kit.layout import CheckpointSize

if TYPE_CHECKING:
    from hcd_kit.kaggle.spec import KernelSpec

OUTPUT_LIMIT_BYTES = 20 * 10**9  # Kaggle saves at most 20 GB from /kaggle/working (the kernel prints this too)
OUTPUT_MARGIN = 0.9  # refuse an estimate over 90 % of the limit: it is an estimate, and Kaggle counts what it counts
SMALL_BYTES = 50 * 10**6  # submission.csv (+ .json), oof*.csv, history.csv, state.json, logs, gpus.json


@dataclass(frozen=True)
class OutputEstimate:
    """A training kernel's saved output at its largest: ``folds`` x ``best.pt`` + ``in_flight`` x ``last.pt`` + the
    small files."""

    folds: int  # folds the kernel trains: each keeps its best.pt
    in_flight: int  # folds trained at once: each holds a last.pt until it finishes
    fold: CheckpointSize

    @property
    def total(self) -> int:
        return self.folds * self.fold.best + self.in_flight * self.fold.last + SMALL_BYTES

    @property
    def fits(self) -> bool:
        return self.total <= OUTPUT_MARGIN * OUTPUT_LIMIT_BYTES

    @property
    def parts(self) -> str:
        each = " each" if self.in_flight > 1 else ""
        return (
            f"{self.folds} x best.pt {size(self.fold.best)}, "
            f"{self.in_flight} last.pt in flight {size(self.fold.last)}{each}"
        )

    def line(self) -> str:
        return f"output: about {size(self.total)} of Kaggle's {_limit(OUTPUT_LIMIT_BYTES)} ({self.parts})"


def size(n: float) -> str:
    """Bytes in decimal units, as Kaggle states its limit: ``1.2 GB``, ``59 MB``."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _limit(n: float) -> str:
    return f"{n / 1e9:g} GB"


def kernel_folds(spec: KernelSpec) -> int:
    """How many folds ``spec`` trains (``all``: every fold of its split)."""
    return spec.n_folds if spec.fold == "all" else len(spec.fold.split(","))


def folds_in_flight(spec: KernelSpec) -> int:
    """Folds trained at once: one, or with ``--strategy fold-parallel`` one per GPU (or ``--fold-workers``)."""
    if (spec.train_overrides or {}).get("strategy") != "fold-parallel":
        return 1
    return min(kernel_folds(spec), _workers(spec))


def _workers(spec: KernelSpec) -> int:
    """Fold-parallel workers on ``spec``'s machine: ``--fold-workers``, else one per GPU."""
    return max(1, (spec.train_overrides or {}).get("fold_workers") or min_gpus(spec.machine_shape))


def output_estimate(spec: KernelSpec) -> OutputEstimate | None:
    """The saved output of training kernel ``spec`` at its largest; None for a kernel that trains nothing (predict,
    probe: a submission and logs) or whose model could not be sized (``spec.fold_bytes`` None)."""
    if spec.mode != "train" or spec.fold_bytes is None:
        return None
    return OutputEstimate(kernel_folds(spec), folds_in_flight(spec), spec.fold_bytes)


def output_line(spec: KernelSpec) -> str:
    """The plan's line about the kernel's saved output ("" for a kernel that trains nothing)."""
    if spec.mode != "train":
        return ""
    est = output_estimate(spec)
    if est is None:
        return f"output: size unknown (the model could not be sized offline); Kaggle keeps {_limit(OUTPUT_LIMIT_BYTES)}"
    return est.line()


def check_output(spec: KernelSpec) -> None:
    """Refuse, in one line, a training kernel whose saved output may not fit Kaggle's limit, saying what would."""
    est = output_estimate(spec)
    if est is None or est.fits:
        return
    raise ConfigError(
        f"the kernel's saved output would be about {size(est.total)} ({est.parts}), over the "
        f"{_limit(OUTPUT_MARGIN * OUTPUT_LIMIT_BYTES)} hcd allows of Kaggle's {_limit(OUTPUT_LIMIT_BYTES)}; "
        f"{_what_fits(est, spec)}"
    )


def _what_fits(est: OutputEstimate, spec: KernelSpec) -> str:
    fits = []
    # a kernel over every fold may train them one after another; a fan-out's kernel trains its folds at once, one per
    # GPU (fold-parallel), so fewer folds per kernel is its way
    if spec.fold == "all" and est.in_flight > 1 and replace(est, in_flight=1).fits:
        fits.append("one fold at a time (no --strategy fold-parallel)")
    per = [k for k in range(est.folds - 1, 0, -1) if replace(est, folds=k, in_flight=min(k, _workers(spec))).fits]
    if per:
        fits.append(f"fewer folds per kernel (--fold each --folds-per-kernel {per[0]})")
    if est.fold.ema and replace(est, fold=replace(est.fold, ema=0)).fits:
        fits.append("no EMA copy in last.pt (drop --ema from --train-args)")
    lora = (spec.train_overrides or {}).get("lora")
    if est.fold.optimizer and not lora and replace(est, fold=CheckpointSize(est.fold.weights, 0, est.fold.ema)).fits:
        fits.append('LoRA, whose optimiser state is tiny (--train-args "--lora 8")')
    if not fits:
        return "even one fold per kernel does not fit: choose a smaller --model, or --lora with fewer folds per kernel"
    return "what fits: " + ", or ".join(fits)
