"""``hcd evaluate``: score a finished run on a labelled folder it never saw (another hospital's patches, a
held-back slice of the training data, a colleague's annotations).

``evaluate_run`` opens the folder's labelled patches (``train/`` + ``train_labels.csv``, packed first when
needed), refuses ids the run trained on (``--allow-overlap`` scores them anyway and reports how many), and
predicts every patch with the run's fold ensemble exactly as ``hcd predict`` predicts the test set: the same
fold networks, TTA views and batched forward pass (``predict.load_folds`` / ``predict_folds``), views then folds
averaged as probabilities. The record (``hcd_kit.runs.evaluation``) holds the AUC with a bootstrap 95 %
interval, each fold's AUC, accuracy / sensitivity / specificity at the Youden threshold of the run's own
out-of-fold predictions, and a calibration summary; it goes to ``RUN/evaluations/<name>.json``, which
``hcd report`` lists::

    res = evaluate_run("runs/r18", "hospital-b", tta=8)   # -> runs/r18/evaluations/hospital-b.json
    res.record["auc"], res.record["auc_ci"], res.record["fold_auc"]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hcd_kit.choices import Precision, TtaViews
from hcd_kit.errors import ConfigError
from hcd_kit.inference.predict import load_folds, predict_folds
from hcd_kit.inference.tta import fold_ensemble, sigmoid_mean
from hcd_kit.locks import holding
from hcd_kit.runs.evaluation import (
    EvaluationResult,
    check_evaluate_options,
    check_overlap,
    evaluation_name,
    evaluation_record,
    new_evaluation_path,
    oof_threshold,
    open_labelled,
    overlap_notes,
    run_kind,
    write_evaluation,
)
from hcd_kit.runs.model import read_run_model, select_folds


@holding(lambda a: a["run_dir"], "hcd evaluate", "wait for it to finish (or stop it), then evaluate")
def evaluate_run(
    run_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    tta: TtaViews = 8,
    name: str | None = None,
    allow_overlap: bool = False,
    force: bool = False,
    device: str = "auto",
    batch_size: int = 256,
    folds: Sequence[int] | None = None,
    precision: Precision = "auto",
    n_boot: int = 1000,
) -> EvaluationResult:
    """Predict every labelled patch of ``data_dir`` with ``run_dir``'s fold ensemble, score it and write
    ``RUN/evaluations/<name>.json`` (see the module doc). ``name`` defaults to the data folder's name;
    an existing evaluation of that name is replaced only with ``force``. A probe run is evaluated by
    ``hcd_kit.features.evaluate_probe``."""
    check_evaluate_options(tta, batch_size, n_boot)
    if run_kind(run_dir) == "probe":
        raise ConfigError(f"{run_dir} is a probe run; evaluate it with hcd_kit.features.evaluate_probe")
    spec = read_run_model(run_dir)
    fold_ids = select_folds(run_dir, folds)
    name = evaluation_name(name, data_dir)
    path = new_evaluation_path(run_dir, name, force)
    store = open_labelled(data_dir)
    unseen, overlap = check_overlap(Path(run_dir).resolve(), data_dir, store.ids, allow_overlap)
    threshold, source = oof_threshold(run_dir, fold_ids, tta)
    models, dev, dtype = load_folds(run_dir, spec, fold_ids, device, precision)
    rows = np.arange(len(store))
    views, seconds = predict_folds(
        models,
        {k: [(store.images, rows)] for k in fold_ids},
        img_size=spec.img_size,
        device=dev,
        tta=tta,
        batch_size=batch_size,
        dtype=dtype,
    )
    fold_probs = {k: sigmoid_mean(v[0]) for k, v in views.items()}
    probs = fold_ensemble(np.stack(list(fold_probs.values())), how="mean")
    record = evaluation_record(
        store.labels,
        probs,
        fold_probs,
        unseen,
        threshold=threshold,
        n_boot=n_boot,
        name=name,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        run_dir=str(Path(run_dir).resolve()),
        data_dir=str(Path(data_dir).resolve()),
        kind="train",
        model=spec.model,
        img_size=spec.img_size,
        folds=fold_ids,
        tta=tta,
        ensemble="mean",
        threshold_source=source,
        overlap=overlap,
    )
    write_evaluation(path, record)
    speed = len(fold_ids) * len(store) / seconds[0] if seconds and seconds[0] > 0 else float("nan")
    return EvaluationResult(path, record, speed, overlap_notes(record))
