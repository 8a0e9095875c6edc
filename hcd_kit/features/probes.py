"""``hcd probe``: a logistic regression (or a small MLP) per fold on frozen features, written as a run folder.

Fold ``k``'s probe is fitted on view 0 of the features of every train patch outside fold ``k`` of
``DIR/folds.csv`` (the split ``hcd train`` uses, so OOF ids line up with CNN runs) and scores fold ``k``'s
patches and the test patches in every view of the store. ``head="logreg"`` standardises the features and
fits ``LogisticRegression``; ``c="auto"`` picks C from ``C_GRID`` by 3-fold ROC AUC on at most
``INNER_ROWS`` rows of the training part, then refits on all of it. ``head="mlp"`` is one hidden layer of
256 with early stopping. The run folder is what ``hcd train`` + ``hcd predict`` leave (``RunLayout``), so
``hcd cv``, ``hcd ensemble`` and ``hcd submit`` take it like any other run::

    RUN/config.toml         kind = "probe", model, img_size, features (absolute), head, c, seed, tta
    RUN/plan.json           {"folds": [...]}            RUN/folds.csv   DIR/folds.csv as it was
    RUN/fold{k}/oof.csv     id,fold,prob,label of fold k's validation ids, view 0
    RUN/oof_tta{V}.csv      the same ids, probabilities averaged over the store's V views (when V > 1)
    RUN/submission.csv      test probabilities (views averaged, then folds) in sample_submission order,
                            and its .json sidecar with the keys `hcd predict` writes
    RUN/probe.json          per-fold AUC and C, timings, the feature store's manifest

    res = probe("features/uni", "data", "runs/uni-probe")   # res.oof_auc_1, res.oof_auc_n, res.folds
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hcd_kit.choices import ProbeHead
from hcd_kit.config import check_choice, dumps_toml, read_toml
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.features.store import FeatureSplit, open_features
from hcd_kit.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from hcd_kit.layout import OOF_COLUMNS, DataLayout, RunLayout
from hcd_kit.metrics import finite_or_none, roc_auc
from hcd_kit.runs.oof import write_oof
from hcd_kit.runs.submission import sample_ids, write_sidecar, write_submission

C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 6))  # inverse L2 strengths tried by c="auto"
INNER_ROWS = 20_000  # rows of a fold's training part the C search uses (the refit uses all of them)
INNER_FOLDS = 3
MAX_ITER = 2000


@dataclass
class ProbeFold:
    fold: int
    n_train: int
    n_val: int
    auc_1: float  # fold's validation AUC from view 0
    auc_n: float  # ... from all views, probabilities averaged
    c: float | None  # the logistic regression's C (None for the MLP)
    seconds: float


@dataclass
class ProbeResult:
    run_dir: Path
    features: Path
    head: str
    views: int
    folds: list[ProbeFold]
    oof_auc_1: float  # pooled over the probed folds, view 0
    oof_auc_n: float  # pooled, views averaged (= oof_auc_1 when the store has one view)
    submission: Path
    sidecar: Path
    oof_tta_file: Path | None
    written: list[Path]
    seconds: float
    notes: list[str] = field(default_factory=list)


def parse_c(text: str | float) -> Literal["auto"] | float:
    """``--c``: "auto" or a positive number."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        c = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--c must be auto or a positive number such as 0.1; got {text!r}") from None
    if not np.isfinite(c) or c <= 0:
        raise ConfigError(f"--c must be auto or a positive number such as 0.1; got {text!r}")
    return c


def _classifier(head: str, c: float | None, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if head == "mlp":
        return make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), early_stopping=True, random_state=seed)
        )
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))


def choose_c(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The C of ``C_GRID`` with the best mean ROC AUC over 3 stratified parts of at most ``INNER_ROWS`` rows."""
    from sklearn.model_selection import StratifiedKFold

    if len(y) > INNER_ROWS:
        take = np.sort(np.random.default_rng(seed).choice(len(y), INNER_ROWS, replace=False))
        x, y = x[take], y[take]
    parts = list(StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(x, y))
    scores = []
    for c in C_GRID:
        aucs = [
            roc_auc(y[va], _classifier("logreg", c, seed).fit(x[tr], y[tr]).predict_proba(x[va])[:, 1])
            for tr, va in parts
        ]
        scores.append(np.nanmean(aucs))
    return C_GRID[int(np.nanargmax(scores))]


def _views_prob(model, feats: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), V) probabilities of ``feats[rows]`` (N, V, D), one column per view."""
    return np.stack(
        [model.predict_proba(np.asarray(feats[rows, v], dtype=np.float32))[:, 1] for v in range(feats.shape[1])], axis=1
    )


def _check_run_dir(run: RunLayout, data: DataLayout) -> None:
    """Refuse a folder holding a trained (non-probe) run, or one made on another split."""
    trained = run.config.is_file() and read_toml(run.config).get("kind") != "probe"
    if trained or any(run.best(k).is_file() for k in run.folds_present()):
        raise ConfigError(f"{run.root} holds a run of `hcd train`; choose another --run-dir for the probe")
    if run.folds.is_file() and run.folds.read_bytes() != data.folds_csv.read_bytes():
        raise ConfigError(
            f"{run.folds} differs from {data.folds_csv}: this run was made on another split; "
            "use a new --run-dir (or restore the original folds.csv)"
        )


def _fold_of(train: FeatureSplit, data: DataLayout, features: Path) -> np.ndarray:
    """Each train row's fold from ``DIR/folds.csv``; one-line errors for missing labels, folds or ids."""
    from hcd_kit.data import read_folds

    if train.labels is None:
        raise DataError(
            f"{features}/train_ids.csv has no labels; embed a packed train store with labels "
            "(`hcd prepare` reads train_labels.csv)"
        )
    if not data.folds_csv.is_file():
        raise DataError(f"no folds file {data.folds_csv}; run `hcd folds --data-dir {data.root}` first")
    return read_folds(data.folds_csv, ids=train.ids)["fold"].to_numpy()


def _fit_fold(head: str, c, seed: int, x: np.ndarray, y: np.ndarray, fold: int, notes: list[str]):
    """Fit one fold's probe; returns (model, C used)."""
    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y)) < 2 or (c == "auto" and np.bincount(y).min() < INNER_FOLDS):
        raise DataError(
            f"fold {fold}'s training part has too few patches of one class ({np.bincount(y).tolist()}) "
            "to fit a probe; use more data or fewer folds"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        chosen = (choose_c(x, y, seed) if c == "auto" else float(c)) if head == "logreg" else None
        model = _classifier(head, chosen, seed).fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"fold {fold}: a fit stopped at its iteration limit before converging")
    return model, chosen


def probe(
    features: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    head: ProbeHead = "logreg",
    c: Literal["auto"] | float = "auto",
    folds: Sequence[int] | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Fit and score a probe per fold of ``DIR/folds.csv`` on ``FEATURES`` and write ``RUN`` (module doc)."""
    t_start = time.perf_counter()
    check_choice("--head", head, ProbeHead)
    c = parse_c(c)
    if head == "mlp" and c != "auto":
        raise ConfigError("--c is the logistic regression's regularisation; --head mlp takes none")
    data, run, feat_root = DataLayout.of(data_dir), RunLayout.of(run_dir), Path(features).resolve()
    store = open_features(feat_root)
    train, test = store.split("train"), store.split("test")
    fold_of = _fold_of(train, data, feat_root)
    every = sorted(set(fold_of.tolist()))
    chosen = every if folds is None else sorted(set(folds))
    bad = [k for k in chosen if k not in every]
    if bad or not chosen:
        raise ConfigError(
            f"--fold {bad[0] if bad else ''} is out of range: {data.folds_csv} has folds {every[0]}..{every[-1]}"
        )
    ids = sample_ids(data_dir)
    test_rows = pd.Index(test.ids).get_indexer(pd.Index(ids))
    if (test_rows < 0).any():
        raise DataError(
            f"{int((test_rows < 0).sum())} id(s) of {data.sample_submission} have no test features in "
            f"{feat_root}, e.g. {ids[test_rows < 0][0]}; embed this --data-dir's test set"
        )
    _check_run_dir(run, data)

    manifest, views = store.manifest, store.views
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run.config,
        dumps_toml(
            {
                "kind": "probe",
                "model": manifest["model"],
                "img_size": manifest["img_size"],
                "features": str(feat_root),
                "head": head,
                "c": c if head == "logreg" else None,
                "seed": seed,
                "tta": views,
            }
        ),
    )
    atomic_write_text(run.plan, json.dumps({"folds": chosen}) + "\n")
    atomic_write_bytes(run.folds, data.folds_csv.read_bytes())  # byte for byte, as `hcd train` keeps it
    for k in run.folds_present():  # a previous probe's folds that this one does not redo
        if k not in chosen:
            run.oof(k).unlink(missing_ok=True)
    for old in run.root.glob("oof_tta*.csv"):
        old.unlink()

    x0 = np.asarray(train.features[:, 0], dtype=np.float32)
    y = train.labels
    notes: list[str] = []
    scores, oof_1, oof_n, test_probs, written = [], [], [], [], []
    for k in chosen:
        t0 = time.perf_counter()
        tr, va = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        model, used_c = _fit_fold(head, c, seed, x0[tr], y[tr], k, notes)
        val = _views_prob(model, train.features, va)
        test_probs.append(_views_prob(model, test.features, test_rows).mean(axis=1))
        written.append(write_oof(run.oof(k), train.ids[va], np.full(len(va), k), val[:, 0], y[va]))
        oof_1.append(pd.DataFrame({"id": train.ids[va], "fold": k, "prob": val[:, 0], "label": y[va]}))
        oof_n.append(oof_1[-1].assign(prob=val.mean(axis=1)))
        scores.append(
            ProbeFold(
                k,
                len(tr),
                len(va),
                roc_auc(y[va], val[:, 0]),
                roc_auc(y[va], val.mean(axis=1)),
                used_c,
                time.perf_counter() - t0,
            )
        )
    pooled_1, pooled_n = pd.concat(oof_1, ignore_index=True), pd.concat(oof_n, ignore_index=True)
    auc_1, auc_n = roc_auc(pooled_1["label"], pooled_1["prob"]), roc_auc(pooled_n["label"], pooled_n["prob"])
    tta_file = None
    if views > 1:
        tta_file = write_oof(run.oof_tta(views), *(pooled_n[col].to_numpy() for col in OOF_COLUMNS))
        written.append(tta_file)

    out = write_submission(ids, np.mean(test_probs, axis=0), run.root / "submission.csv")
    side = write_sidecar(
        out,
        {
            "runs": [str(run.root.resolve())],
            "folds": chosen,
            "tta": views,
            "ensemble": "mean",
            "cv_auc": finite_or_none(auc_1),
            "model": manifest["model"],
            "img_size": manifest["img_size"],
            "oof_auc_1view": finite_or_none(auc_1),
            "oof_auc_tta": finite_or_none(auc_n),
            "oof_tta_file": None if tta_file is None else str(tta_file.resolve()),
            "kind": "probe",
            "features": str(feat_root),
            "head": head,
        },
    )
    seconds = time.perf_counter() - t_start
    atomic_write_json(
        run.root / "probe.json",
        {
            "features": str(feat_root),
            "head": head,
            "c": c,
            "seed": seed,
            "views": views,
            "folds": [
                {**asdict(f), "auc_1": finite_or_none(f.auc_1), "auc_n": finite_or_none(f.auc_n)} for f in scores
            ],
            "oof_auc_1view": finite_or_none(auc_1),
            "oof_auc_tta": finite_or_none(auc_n),
            "seconds": seconds,
            "notes": notes,
            "features_manifest": manifest,
        },
    )
    written = [run.config, run.plan, run.folds, *written, out, side, run.root / "probe.json"]
    return ProbeResult(
        run_dir=run.root,
        features=feat_root,
        head=head,
        views=views,
        folds=scores,
        oof_auc_1=auc_1,
        oof_auc_n=auc_n,
        submission=out,
        sidecar=side,
        oof_tta_file=tta_file,
        written=written,
        seconds=seconds,
        notes=notes,
    )
