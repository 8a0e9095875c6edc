"""Blending runs: several runs' test predictions and out-of-fold predictions, mean or rank, optionally weighted.

A run contributes its test predictions (``RUN/submission.csv`` from ``hcd predict``, or any ``id,label``
file) and its OOF predictions (``id,fold,prob,label``), made like the test predictions where possible: when
the test file's sidecar says TTA xN and ``hcd predict`` left ``RUN/oof_tta{N}.csv``, that file; else the
1-view ``RUN/fold*/oof.csv`` (``res.oof_views`` says which, and a note says when runs mix the two). Both are
aligned by id, so file order never matters; the blend is ``fold_ensemble`` over runs, and the same blend of
the OOF predictions says whether it beats the best single run before anything is submitted::

    res = ensemble_runs(["runs/r18", "runs/effb0"], "subs/blend.csv", weights=[0.6, 0.4], blend="rank")
    res.run_auc, res.blend_auc

``weights="auto"`` chooses the weights and the mode (only ``blend`` when it is given) on the OOF predictions
with ``hcd_kit.inference.blend.search_blend``, whose nested held-out figures (``res.search``) say what
the choice gains over equal weights on rows it was not fitted on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hcd_kit.choices import BLEND_MODES, BlendMode
from hcd_kit.config import check_choice
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.inference.blend import BlendChoice, search_blend
from hcd_kit.inference.tta import fold_ensemble
from hcd_kit.layout import RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc
from hcd_kit.runs.oof import read_run_oof, read_tta_oof
from hcd_kit.runs.submission import read_predictions, read_sidecar, sample_ids, write_sidecar, write_submission


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
    notes: list[str] = field(default_factory=list)  # one line each: no OOF at all, runs mixing TTA and 1-view OOF
    oof_views: list[int | None] = field(default_factory=list)  # views behind each run's OOF (1: fold*/oof.csv)
    search: BlendChoice | None = None  # what weights="auto" chose and its nested figures


def parse_weights(text: str | None, n_runs: int) -> list[float] | Literal["auto"] | None:
    """``"0.6,0.4"`` -> [0.6, 0.4] checked against ``n_runs``; ``"auto"`` as is; None (equal weights) when not given."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        w = [float(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--weights must be auto or numbers separated by commas, e.g. 0.6,0.4; got {text!r}"
        ) from None
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


def _indexed(oof: pd.DataFrame | None, where: str) -> pd.DataFrame | None:
    """OOF rows indexed by id (prob, label); None stays None."""
    if oof is None:
        return None
    if oof["id"].duplicated().any():  # a blend aligns runs by id: one id must mean one prediction
        raise DataError(f"{where}: id {oof.loc[oof['id'].duplicated(), 'id'].iloc[0]} is there twice (two folds?)")
    return oof.set_index("id")[["prob", "label"]]


def _run_oof(run: Path, side: dict) -> tuple[pd.DataFrame | None, int | None, str | None]:
    """A run's OOF predictions made like its test predictions (see module doc), the views they used (None
    without OOF), and a note when a TTA OOF file is there but cannot be used."""
    plain = _indexed(read_run_oof(run), f"{run}/fold*/oof.csv")
    tta = side.get("tta")
    fallback = (plain, None if plain is None else 1, None)
    # A sidecar that says its prediction wrote no TTA OOF (no packed train store) means an oof_tta file is older.
    if not isinstance(tta, int) or isinstance(tta, bool) or ("oof_tta_file" in side and not side["oof_tta_file"]):
        return fallback
    path = RunLayout.of(run).oof_tta(tta)
    tta_oof = _indexed(read_tta_oof(run, tta), str(path))
    if tta_oof is None:
        return fallback
    if plain is not None and (len(tta_oof) != len(plain) or not tta_oof.index.isin(plain.index).all()):
        return (
            *fallback[:2],
            f"{path} covers {len(tta_oof)} of the run's {len(plain)} OOF ids (predicted with "
            "fewer folds?); using its 1-view fold*/oof.csv",
        )
    return tta_oof, tta, None


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


def _oof_matrix(oofs: list[pd.DataFrame | None], runs: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """(R, N) OOF probabilities aligned by id and the (N,) labels; None when no run has OOF predictions."""
    if all(o is None for o in oofs):
        return None
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
    return np.stack([o.loc[ids, "prob"].to_numpy(np.float64) for o in oofs]), y


def _mix_note(runs: list[Path], views: list[int | None]) -> str | None:
    """One line when some runs' OOF used TTA and others one view: their blend weighs unlike things."""
    if len({v > 1 for v in views if v is not None}) < 2:
        return None
    what = ", ".join(f"{r}: {f'TTA x{v}' if v > 1 else '1 view'}" for r, v in zip(runs, views) if v is not None)
    return (
        f"OOF predictions mix TTA and 1 view ({what}); `hcd predict --tta N` with the packed train store "
        "writes RUN/oof_tta{N}.csv for the others"
    )


def ensemble_runs(
    runs: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    weights: list[float] | Literal["auto"] | None = None,
    blend: BlendMode | None = None,
    pred: list[str | os.PathLike[str]] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_parts: int = 5,
) -> EnsembleResult:
    """Blend ``runs`` (see module doc), write ``out`` and ``<out>.json``, and return the AUCs.

    ``blend`` None means "mean", or with ``weights="auto"`` the better of mean and rank on OOF; ``seed`` and
    ``n_parts`` set the nested split of the auto search.
    """
    run_paths = [Path(r) for r in runs]
    if not run_paths:
        raise ConfigError("give at least one run folder to blend")
    if blend is not None:
        check_choice("--blend", blend, BlendMode)
    auto = isinstance(weights, str)
    if auto and weights != "auto":
        raise ConfigError(f"--weights must be auto or one number per run, got {weights!r}")
    w = None if auto else check_weights([1.0] * len(run_paths) if weights is None else list(weights), len(run_paths))
    if pred and len(pred) != len(run_paths):
        raise ConfigError(f"{len(pred)} --pred file(s) for {len(run_paths)} run(s); give one per run, in order")
    pred_paths = [Path(p) for p in pred] if pred else [RunLayout.of(r).root / "submission.csv" for r in run_paths]
    frames = [read_predictions(p, r) for p, r in zip(pred_paths, run_paths)]
    order = sample_ids(data_dir) if data_dir is not None else frames[0]["id"].to_numpy(str)
    test = _align_test(frames, [str(p) for p in pred_paths], order)
    sides = [read_sidecar(p) for p in pred_paths]

    picked = [_run_oof(r, s) for r, s in zip(run_paths, sides)]
    views = [v for _, v, _ in picked]
    notes = [n for _, _, n in picked if n] + [n for n in [_mix_note(run_paths, views)] if n]
    oof = _oof_matrix([o for o, _, _ in picked], run_paths)
    search = None
    if oof is None:
        if auto:
            raise DataError(
                "--weights auto chooses the weights on OOF predictions, and no run has fold*/oof.csv; "
                "give fixed --weights such as 0.6,0.4"
            )
        notes.insert(0, "no fold*/oof.csv in any run; OOF AUC not reported")
    elif auto:
        search = search_blend(
            oof[0], oof[1], modes=BLEND_MODES if blend is None else (blend,), n_parts=n_parts, seed=seed
        )
        w, blend = search.weights, search.mode
    how = blend or "mean"
    run_auc = [None] * len(run_paths) if oof is None else [roc_auc(oof[1], p) for p in oof[0]]
    blend_auc = None if oof is None else roc_auc(oof[1], fold_ensemble(oof[0], how, w))

    out = write_submission(order, fold_ensemble(test, how, w), out)
    side = write_sidecar(
        out,
        {
            "runs": [str(r.resolve()) for r in run_paths],
            "weights": w,
            "ensemble": how,
            "folds": [s.get("folds") for s in sides],
            "tta": _common([s.get("tta") for s in sides]),
            "cv_auc": finite_or_none(blend_auc),
            "run_cv_auc": [finite_or_none(a) for a in run_auc],
            "oof_views": views,
            "weights_auto": None if search is None else _search_record(search, seed),
        },
    )
    return EnsembleResult(
        out=out,
        sidecar=side,
        runs=run_paths,
        weights=w,
        how=how,
        n_test=len(order),
        run_auc=run_auc,
        blend_auc=blend_auc,
        n_oof=0 if oof is None else len(oof[1]),
        notes=notes,
        oof_views=views,
        search=search,
    )


def _search_record(c: BlendChoice, seed: int) -> dict:
    """What the sidecar keeps of an auto search: the nested figures and how they were made."""
    return {
        "mode": c.mode,
        "weights": c.weights,
        "baseline": f"equal-weight {c.baseline_mode}",
        "nested_auc": finite_or_none(c.nested_auc),
        "nested_equal_auc": finite_or_none(c.nested_equal_auc),
        "nested_gain": finite_or_none(c.nested_gain),
        "fit_auc": finite_or_none(c.fit_auc),
        "parts": c.n_parts,
        "seed": seed,
    }


def _common(values: list):
    """The shared value of a sidecar field across runs, or None when runs disagree or lack it."""
    return values[0] if values and all(v == values[0] for v in values) and values[0] is not None else None
