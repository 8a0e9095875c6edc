"""What a recipe costs: expected hours for five folds and the TTA x8 prediction, on T4 x2 and on a CPU.

The arithmetic is one pure function, ``run_seconds``: per fold, every epoch trains on (k-1)/k of the labelled
patches and validates on 1/k; then ``hcd predict`` runs TTA x8 over the test set once per fold model and over
every out-of-fold patch once. The throughput it needs comes, in this order, from a GPU report of
``benchmarks/gpu.py`` (figures measured for each recipe's backbone at its input size), or from the published
figures in ``assets/throughput.toml`` (timm's RTX 3090 benchmark, scaled to one T4 and by pixel count), or for
the CPU from hcd's own measurement of resnet10t scaled by the same published ratios. Each estimate says which.

    r = rates("resnet34", 96, "t4x2")
    hours = run_seconds(r, epochs=6, n_train=220_025, n_test=57_458) / 3600
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hcd_kit.errors import ConfigError

THROUGHPUT = Path(__file__).resolve().parents[1] / "assets" / "throughput.toml"
COMPETITION_SIZE = (220_025, 57_458)  # labelled, test patches
MINI_SIZE = (3_284, 546)  # hcd-mini


@dataclass(frozen=True)
class Rates:
    train_ips: float  # training images/s, validation included at predict_ips
    predict_ips: float  # one view, images/s
    source: str


def _table() -> dict:
    return tomllib.loads(THROUGHPUT.read_text(encoding="utf-8"))


def run_seconds(
    r: Rates, epochs: int, n_train: int, n_test: int, folds: int = 5, tta: int = 8, trained_folds: int | None = None
) -> float:
    """Seconds for ``trained_folds`` (default all) folds of ``epochs`` epochs plus TTA prediction of the test
    set by every fold model and of every out-of-fold patch."""
    k = folds if trained_folds is None else trained_folds
    per_epoch = n_train * (folds - 1) / folds / r.train_ips + n_train / folds / r.predict_ips
    predict = tta * (n_test * k + n_train * k / folds) / r.predict_ips
    return k * epochs * per_epoch + predict


def published(model: str, img_size: int) -> tuple[float, str] | None:
    """One T4's training images/s for ``model`` at ``img_size`` from the published table, or None."""
    t = _table()["published"]
    m = t["models"].get(model)
    if m is None:
        return None
    return m["ips"] * t["t4_factor"] * (m["size"] / img_size) ** 2, t["source"]


def rates(model: str, img_size: int, hardware: str, figures: dict | None = None) -> Rates | None:
    """Throughput of ``model`` at ``img_size`` on ``hardware`` ("t4x2" or "cpu"); None when nothing is known."""
    t = _table()
    if hardware == "t4x2":
        measured = _measured(figures, model, img_size) if figures else None
        if measured is not None:
            return measured
        pub = published(model, img_size)
        if pub is None:
            return None
        ips, source = pub
        dp, pf = t["published"]["dp_factor"], t["published"]["predict_factor"]
        return Rates(
            ips * dp,
            ips * dp * pf,
            f"published: {source}, x{t['published']['t4_factor']} for a T4, x{dp} for DataParallel on two",
        )
    cpu = t["cpu"]["models"]
    if model in cpu:
        m = cpu[model]
        scale = (m["size"] / img_size) ** 2
        return Rates(m["train_ips"] * scale, m["predict_ips"] * scale, f"measured: {t['cpu']['source']}")
    ref, pub = cpu.get("resnet10t"), published(model, img_size)
    ref_pub = published("resnet10t", ref["size"]) if ref else None
    if pub is None or ref_pub is None:
        return None
    ratio = pub[0] / ref_pub[0]
    return Rates(
        ref["train_ips"] * ratio,
        ref["predict_ips"] * ratio,
        "scaled: hcd's CPU figure for resnet10t x the published GPU ratio",
    )


def _measured(figures: dict, model: str, img_size: int) -> Rates | None:
    """Rates from a ``benchmarks/gpu.py`` report: its recipe steps for ``model`` at ``img_size``."""
    gpus = figures.get("environment", {}).get("gpus") or ["an unnamed GPU"]
    train = predict = None
    for step in figures.get("steps", []):
        fig = step.get("figures") or {}
        if step.get("exit") != 0 or fig.get("img_size") != img_size:
            continue
        if step["step"].startswith("recipe-train:") and model in fig.get("models", {}):
            train = fig["models"][model]["loader_ips"]
        elif step["step"].startswith("recipe-tta:") and fig.get("model") == model:
            predict = next((r["images_per_s"] for r in fig["rows"] if r["tta"] == 1), None)
    if not train or not predict:
        return None
    return Rates(train, predict, f"measured: benchmarks/gpu.py on {gpus[0]} (one GPU)")


def read_figures(path: str | os.PathLike[str]) -> dict:
    """A ``benchmarks/gpu.py --out`` report; ConfigError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--figures {path}: not a readable GPU report ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "steps" not in data:
        raise ConfigError(f"--figures {path}: not a benchmarks/gpu.py report (no 'steps')")
    return data
