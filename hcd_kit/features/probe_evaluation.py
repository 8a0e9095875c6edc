"""``hcd evaluate`` for a probe run: its per-fold probes applied to a labelled folder it never saw.

``hcd probe`` keeps no fitted model, only what it predicted, so ``evaluate_probe`` rebuilds each fold's probe
from what the run records (``RUN/config.toml``: the feature store, head, C and seed; ``RUN/folds.csv``) with
``hcd probe``'s own fit, and checks that the refit gives the fold's ``oof.csv`` again (a feature store
embedded again since, or other library versions, would give other probes: refused in one line). The folder's
patches are embedded with the store's backbone settings (``embed``: model, input size, views, pooling)
into ``RUN/evaluations/.features-<name>/``, removed afterwards; each probe scores every view, the views and
then the folds are averaged as in the probe's submission, and the record is the one ``hcd_kit.inference``
writes for a trained run (``hcd_kit.runs.evaluation``)::

    res = evaluate_probe("runs/uni-probe", "hospital-b")   # -> runs/uni-probe/evaluations/hospital-b.json
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hcd_kit.choices import Precision
from hcd_kit.config import read_toml
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.features.embedding import embed
from hcd_kit.features.probes import _fit_fold, _views_prob
from hcd_kit.features.store import FeatureSplit, open_features
from hcd_kit.layout import RunLayout
from hcd_kit.locks import holding
from hcd_kit.runs.evaluation import (
    EvaluationResult,
    check_evaluate_options,
    check_overlap,
    evaluation_name,
    evaluation_record,
    evaluations_dir,
    new_evaluation_path,
    oof_threshold,
    open_labelled,
    overlap_notes,
    write_evaluation,
)
from hcd_kit.runs.oof import read_oof

REFIT_TOLERANCE = 1e-6  # largest |refit - recorded| OOF probability accepted as the same probe


def _probe_folds(run: RunLayout, folds: Sequence[int] | None) -> list[int]:
    have = [k for k in run.folds_present() if run.oof(k).is_file()]
    if not have:
        raise DataError(f"no fold*/oof.csv in {run.root}; run `hcd probe` again to finish it")
    want = have if folds is None else sorted(set(folds))
    missing = [k for k in want if k not in have]
    if not want or missing:
        raise DataError(f"no probe for fold(s) {missing or want} in {run.root} (has {have}); choose among those")
    return want


def _check_rebuildable(manifest: dict, features: Path) -> None:
    """The backbone must give the same features again: pretrained (timm, hub or local-dir) weights only."""
    if manifest.get("weights"):
        raise ConfigError(
            f"{features} was embedded with a --weights file ({manifest['weights'].get('file')}), which the store "
            "does not locate; embed the folder with `hcd embed` and the same file, then probe it instead"
        )
    if not manifest.get("pretrained"):
        raise ConfigError(
            f"{features} was embedded with random weights (--no-pretrained), which cannot be rebuilt to embed "
            "another folder"
        )


def _refit(cfg: dict, run: RunLayout, train: FeatureSplit, folds: list[int], notes: list[str]) -> dict:
    """Each fold's probe fitted again as `hcd probe` fitted it, checked against the fold's ``oof.csv``."""
    from hcd_kit.data import read_folds

    fold_of = read_folds(run.folds, ids=train.ids)["fold"].to_numpy()
    x0 = np.asarray(train.features[:, 0], dtype=np.float32)
    c = cfg.get("c", "auto") if cfg.get("head", "logreg") == "logreg" else "auto"
    models = {}
    for k in folds:
        tr, va = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        model, _ = _fit_fold(cfg.get("head", "logreg"), c, int(cfg.get("seed", 0)), x0[tr], train.labels[tr], k, notes)
        recorded = read_oof(run.oof(k)).set_index("id")["prob"]
        refit = _views_prob(model, train.features, va)[:, 0]
        gap = np.abs(refit - recorded.reindex(train.ids[va]).to_numpy(float))
        if not np.all(gap <= REFIT_TOLERANCE):  # NaN (an id the oof.csv lacks) fails too
            raise DataError(
                f"the probe of fold {k} fitted again does not give {run.oof(k)} again (the feature store or the "
                f"library changed since); run `hcd probe --run-dir {run.root}` again, then evaluate"
            )
        models[k] = model
    return models


@holding(lambda a: a["run_dir"], "hcd evaluate", "wait for it to finish (or stop it), then evaluate")
def evaluate_probe(
    run_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    tta: int | None = None,
    name: str | None = None,
    allow_overlap: bool = False,
    force: bool = False,
    device: str = "auto",
    batch_size: int = 256,
    folds: Sequence[int] | None = None,
    precision: Precision = "auto",
    n_boot: int = 1000,
) -> EvaluationResult:
    """Score probe run ``run_dir`` on ``data_dir``'s labelled patches; ``evaluate_run``'s options and record
    (see the module doc). The views are the feature store's, as in the probe's own predictions: ``tta`` None,
    or that number."""
    run = RunLayout.of(run_dir)
    cfg = read_toml(run.config, fix="restore it")
    if cfg.get("kind") != "probe" or not cfg.get("features"):
        raise ConfigError(f'{run.config} is not a probe run\'s config (kind = "probe", features = ...)')
    features = Path(cfg["features"])
    store = open_features(features)
    manifest, views = store.manifest, store.views
    check_evaluate_options(views, batch_size, n_boot)
    if tta is not None and tta != views:
        raise ConfigError(
            f"{run.root} is a probe on {views}-view features ({features}): it predicts with those views; "
            f"leave --tta out (or pass --tta {views})"
        )
    _check_rebuildable(manifest, features)
    fold_ids = _probe_folds(run, folds)
    name = evaluation_name(name, data_dir)
    path = new_evaluation_path(run_dir, name, force)
    labelled = open_labelled(data_dir)
    unseen, overlap = check_overlap(run.root.resolve(), data_dir, labelled.ids, allow_overlap)
    threshold, source = oof_threshold(run_dir, fold_ids, views)
    notes: list[str] = []
    models = _refit(cfg, run, store.split("train"), fold_ids, notes)

    if precision == "auto" and manifest.get("precision") == "float32":
        precision = "fp32"  # a store embedded in full precision is matched in full precision
    scratch = evaluations_dir(run_dir) / f".features-{name}"
    t0 = time.perf_counter()
    try:
        embed(
            data_dir,
            manifest.get("spec") or manifest["model"],
            scratch,
            tta=views,
            img_size=int(manifest["img_size"]),
            batch_size=batch_size,
            device=device,
            precision=precision,
            splits=("train",),
            force=True,  # a scratch store left by an interrupted evaluation is made afresh
        )
        seconds = time.perf_counter() - t0
        target = open_features(scratch).split("train")
        if list(target.ids) != list(labelled.ids):
            raise DataError(f"the features of {data_dir} do not follow its packed train store; evaluate again")
        rows = np.arange(len(target))
        fold_probs = {k: _views_prob(m, target.features, rows).mean(axis=1) for k, m in models.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    probs = np.mean(np.stack(list(fold_probs.values())), axis=0)
    record = evaluation_record(
        labelled.labels,
        probs,
        fold_probs,
        unseen,
        threshold=threshold,
        n_boot=n_boot,
        name=name,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        run_dir=str(run.root.resolve()),
        data_dir=str(Path(data_dir).resolve()),
        kind="probe",
        model=manifest["model"],
        img_size=int(manifest["img_size"]),
        features=str(features),
        head=cfg.get("head", "logreg"),
        folds=fold_ids,
        tta=views,
        ensemble="mean",
        threshold_source=source,
        overlap=overlap,
    )
    write_evaluation(path, record)
    speed = len(labelled) / seconds if seconds > 0 else float("nan")
    return EvaluationResult(path, record, speed, overlap_notes(record) + notes)
