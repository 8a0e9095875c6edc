"""Blending runs: several runs' test predictions and out-of-fold predictions, mean or rank, optionally weighted.

A run contributes its test predictions (``RUN/submission.csv`` from ``hcd predict``, or any ``id,label``
file) and its OOF predictions (``RUN/fold*/oof.csv``: ``id,fold,prob,label``). Both are aligned by id, so
file order never matters; the blend is ``fold_ensemble`` over runs, and the same blend of the
OOF predictions says whether it beats the best single run before anything is submitted::

    res = ensemble_runs(["runs/r18", "runs/effb0"], "subs/blend.csv", weights=[0.6, 0.4], how="rank")
    res.run_auc, res.blend_auc
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.inference.oof import read_run_oof
from hcd_kit.inference.submission import read_predictions, read_sidecar, sample_ids, write_sidecar, write_submission
from hcd_kit.choices import BlendMode
from hcd_kit.config import check_choice
from hcd_kit.inference.tta import fold_ensemble
from hcd_kit.layout import RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc


@dataclass
class EnsembleResult:
    out: Path
    sidecar: Path
    runs: list[Path]
    weights: list[float]  # normalised
    how: str
    n_test: int
    run_auc: list[float | None]  # OOF AUC of each run (None when no run has OOF predictions)
    blend_auc: float | None
    n_oof: int
    note: str | None


def parse_weights(text: str | None, n_runs: int) -> list[float] | None:
    """``"0.6,0.4"`` -> [0.6, 0.4] checked against ``n_runs``; None (equal weights) when not given."""
    if text is None:
        return None
    try:
        w = [float(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights must be numbers separated by commas, e.g. 0.6,0.4; got {text!r}") from None
    check_weights(w, n_runs)
    return w


def check_weights(weights: list[float], n_runs: int) -> list[float]:
    """Normalised copy of ``weights``; ConfigError unless one non-negative weight per run, sum > 0."""
    if len(weights) != n_runs:
        raise ConfigError(f"--weights has {len(weights)} value(s) but {n_runs} run(s) were given; give one per run")
    if any(not np.isfinite(x) or x < 0 for x in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights must be non-negative with a positive sum, got {weights}")
    total = float(sum(weights))
    return [x / total for x in weights]


def _indexed_oof(run_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """All ``fold*/oof.csv`` of a run as one frame indexed by id (prob, label); None if there are none."""
    oof = read_run_oof(run_dir)
    if oof is None:
        return None
    if oof["id"].duplicated().any():  # a blend aligns runs by id: one id must mean one prediction
        raise DataError(f"{RunLayout.of(run_dir).root}: id {oof.loc[oof['id'].duplicated(), 'id'].iloc[0]} "
                        "is in two folds' oof.csv")
    return oof.set_index("id")[["prob", "label"]]


def _align_test(frames: list[pd.DataFrame], names: list[str], order: np.ndarray) -> np.ndarray:
    """(R, N) test predictions of each run in ``order``; DataError naming a run whose ids differ."""
    rows = []
    for df, name in zip(frames, names):
        s = df.set_index("id")["label"]
        if len(s) != len(order) or not s.index.isin(order).all():
            missing = np.setdiff1d(order, s.index.to_numpy(str))
            extra = np.setdiff1d(s.index.to_numpy(str), order)
            raise DataError(
                f"test predictions of {name} do not cover the same ids ({len(missing)} missing, {len(extra)} extra); "
                "predict every run on the same test set"
            )
        rows.append(s.loc[order].to_numpy(np.float64))
    return np.stack(rows)


def _blend_oof(oofs: list[pd.DataFrame | None], runs: list[Path], weights, how: str):
    """Per-run OOF AUC and the blend's; a note instead when no run has OOF predictions."""
    if all(o is None for o in oofs):
        return [None] * len(runs), None, 0, "no fold*/oof.csv in any run; OOF AUC not reported"
    for o, run in zip(oofs, runs):
        if o is None:
            raise DataError(f"missing OOF predictions: no fold*/oof.csv in {run}; every blended run needs them")
    ids = oofs[0].index
    for o, run in zip(oofs[1:], runs[1:]):
        if len(o) != len(ids) or not o.index.isin(ids).all():
            raise DataError(
                f"OOF ids of {run} differ from {runs[0]} ({len(o)} vs {len(ids)} ids); "
                "blend only runs trained on the same folds"
            )
    y = oofs[0]["label"].to_numpy()
    probs = np.stack([o.loc[ids, "prob"].to_numpy(np.float64) for o in oofs])
    run_auc = [roc_auc(y, p) for p in probs]
    return run_auc, roc_auc(y, fold_ensemble(probs, how, weights)), len(ids), None


def ensemble_runs(
    runs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    weights: list[float] | None = None,
    how: BlendMode = "mean",
    preds: list[str | os.PathLike[str]] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> EnsembleResult:
    """Blend ``runs`` (see module doc), write ``out`` and ``<out>.json``, and return the AUCs."""
    run_paths = [Path(r) for r in runs]
    if not run_paths:
        raise ConfigError("give at least one run folder to blend")
    check_choice("--blend", how, BlendMode)
    w = check_weights(list(weights) if weights is not None else [1.0] * len(run_paths), len(run_paths))
    if preds and len(preds) != len(run_paths):
        raise ConfigError(f"{len(preds)} --pred file(s) for {len(run_paths)} run(s); give one per run, in order")
    pred_paths = [Path(p) for p in preds] if preds else [RunLayout.of(r).root / "submission.csv" for r in run_paths]
    frames = [read_predictions(p, r) for p, r in zip(pred_paths, run_paths)]
    order = sample_ids(data_dir) if data_dir is not None else frames[0]["id"].to_numpy(str)
    blend = fold_ensemble(_align_test(frames, [str(p) for p in pred_paths], order), how, w)

    run_auc, blend_auc, n_oof, note = _blend_oof([_indexed_oof(r) for r in run_paths], run_paths, w, how)
    out = write_submission(order, blend, out)
    sides = [read_sidecar(p) for p in pred_paths]
    side = write_sidecar(out, {
        "runs": [str(r.resolve()) for r in run_paths], "weights": w, "ensemble": how,
        "folds": [s.get("folds") for s in sides], "tta": _common([s.get("tta") for s in sides]),
        "cv_auc": finite_or_none(blend_auc), "run_cv_auc": [finite_or_none(a) for a in run_auc],
    })
    return EnsembleResult(out=out, sidecar=side, runs=run_paths, weights=w, how=how, n_test=len(order),
                          run_auc=run_auc, blend_auc=blend_auc, n_oof=n_oof, note=note)


def _common(values: list):
    """The shared value of a sidecar field across runs, or None when runs disagree or lack it."""
    return values[0] if values and all(v == values[0] for v in values) and values[0] is not None else None
