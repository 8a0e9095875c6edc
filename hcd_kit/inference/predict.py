"""Predicting the test set with a trained run: every fold's best weights, TTA batched on the device, one CSV.

``predict_run`` rebuilds the model from ``RUN/config.toml`` (``model``, ``img_size``), packs the test set
if it is not packed yet, runs each fold's ``best.pt`` over it with ``n`` dihedral views per patch stacked
into the same batch (``hcd_kit.inference.tta``), averages the views, then the folds (mean probability or mean rank), and
writes ``id,label`` in exactly the order of ``sample_submission.csv`` plus a ``<out>.json`` sidecar (runs,
folds, tta, ensemble, cv_auc) that ``hcd submit`` keeps in its ledger. When the packed train store is there
too, it re-predicts each fold's validation ids with 1 and with ``n`` views, so the user sees what TTA buys,
and keeps the ``n``-view ones as ``RUN/oof_tta{n}.csv`` for ``hcd ensemble``::

    res = predict_run("data", "runs/r18", tta=8)      # -> runs/r18/submission.csv (+ .json)
    res.oof.auc_1, res.oof.auc_n                       # OOF AUC without / with TTA (None if no train data)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hcd_kit.choices import BlendMode, TtaViews
from hcd_kit.config import check_choice
from hcd_kit.console import err_console, progress
from hcd_kit.data import BatchLoader, PackedStore, open_test_store
from hcd_kit.device import Precision, amp_dtype, autocast, model_input, place_model, resolve_device, set_threads
from hcd_kit.errors import ConfigError, DiskFullError
from hcd_kit.fsutil import check_free_space
from hcd_kit.inference.oof import OofAuc, oof_auc, oof_plan, write_tta_oof
from hcd_kit.inference.runs import load_fold_model
from hcd_kit.inference.tta import fold_ensemble, sigmoid_mean, tta_stack, tta_views
from hcd_kit.layout import RunLayout
from hcd_kit.locks import holding
from hcd_kit.metrics import finite_or_none
from hcd_kit.preprocess import to_input
from hcd_kit.runs.model import RunModel, read_run_model, select_folds
from hcd_kit.runs.oof import recorded_cv_auc
from hcd_kit.runs.record import run_data_dir
from hcd_kit.runs.submission import sample_ids, write_sidecar, write_submission


@dataclass
class PredictResult:
    out: Path
    sidecar: Path
    folds: list[int]
    tta: int
    ensemble: str
    n_images: int
    images_per_s: float  # test patches per second per fold model, all views included
    cv_auc: float | None
    oof: OofAuc | None
    note: str | None  # why the OOF comparison was skipped, if it was
    oof_file: Path | None = None  # RUN/oof_tta{tta}.csv: the OOF rows predicted with the same TTA


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move an eval-mode model to ``device`` in the memory format it runs fastest in there (``device.place_model``:
    channels-last on CUDA and for a CNN on the CPU, whose oneDNN convolutions run ~30 % faster in it)."""
    return place_model(model.eval(), device)


@torch.inference_mode()
def predict_views(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    *,
    img_size: int,
    device: torch.device,
    tta: TtaViews = 8,
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    on_batch=None,
) -> np.ndarray:
    """Per-view logits (len(indices), tta) of ``images[indices]``; column 0 is the untransformed view.

    ``batch_size`` counts views: each forward pass holds ``batch_size // tta`` patches in all ``tta`` of
    their views, so one pass is the same size whatever the TTA and x8 costs 8x one view, not more (bigger
    passes fall out of the CPU's caches: 2048-view passes ran 20 % slower per view than 256-view ones).
    ``on_batch(n)`` is called after each batch with its number of patches (progress bars).
    """
    order = np.sort(np.asarray(indices, dtype=np.int64))
    per_pass = max(1, batch_size // tta)
    loader = BatchLoader(images, None, order, batch_size=per_pass, shuffle=False, pin_memory=device.type == "cuda")
    chunks = []
    for batch in loader:
        # Stacking views makes a contiguous NCHW copy; NHWC again is what convolutions run fastest on, on
        # CUDA and on the CPU alike (without it TTA x8 cost 14.6x one view on the CPU instead of ~8x).
        x = model_input(tta_stack(to_input(batch.images, img_size, device), tta), model)
        with autocast(device, dtype):
            logits = model(x)
        chunks.append(tta_views(logits, tta).float().cpu().numpy())
        if on_batch is not None:
            on_batch(len(batch.index))
    views = np.concatenate(chunks) if chunks else np.zeros((0, tta), np.float32)
    return views[np.searchsorted(order, indices)]  # back to the caller's order


def _check_options(tta: int, blend: str, batch_size: int) -> None:
    check_choice("--tta", tta, TtaViews)
    check_choice("--blend", blend, BlendMode)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")


def load_folds(
    run_dir: str | os.PathLike[str], spec: RunModel, folds: Sequence[int], device: str, precision: Precision
) -> tuple[dict[int, nn.Module], torch.device, torch.dtype | None]:
    """Each of ``folds``' rebuilt network (on the CPU until its turn comes: ``predict_folds``), and the device
    and autocast dtype to predict with. Every fold's weights are checked before any image is touched, so a
    wrong file fails in seconds. Shared by ``hcd predict`` and ``hcd evaluate``."""
    dev = resolve_device(device)
    dtype = amp_dtype(dev, precision)
    set_threads()  # the CPUs this process may use (its affinity mask)
    models = {k: load_fold_model(run_dir, k, spec, torch.device("cpu")) for k in folds}
    return models, dev, dtype


def predict_folds(
    models: dict[int, nn.Module],
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]],
    *,
    img_size: int,
    device: torch.device,
    tta: int,
    batch_size: int,
    dtype: torch.dtype | None,
) -> tuple[dict[int, list[np.ndarray]], list[float]]:
    """Each fold's per-view logits (``predict_views``) of each of its ``parts`` (``images``, ``rows``), in order,
    and the seconds all folds spent on each part's position in the list.

    One progress bar per fold, all shown from the start (a fold's clock starts when its turn comes).
    ``models`` is emptied as it goes, so only one fold's weights sit on the device at a time.
    """
    views: dict[int, list[np.ndarray]] = {}
    seconds = [0.0] * max((len(p) for p in parts.values()), default=0)
    kw = dict(img_size=img_size, device=device, tta=tta, batch_size=batch_size, dtype=dtype)
    with progress("img") as bar:
        tasks = {
            k: bar.add_task(f"fold {k}", total=sum(len(rows) for _, rows in parts[k]), start=False) for k in models
        }
        for k in list(models):
            model = to_device(models.pop(k), device)
            bar.start_task(tasks[k])
            advance = lambda n, task=tasks[k]: bar.advance(task, n)  # noqa: E731
            views[k] = []
            for i, (images, rows) in enumerate(parts[k]):
                t0 = time.perf_counter()
                views[k].append(predict_views(model, images, rows, on_batch=advance, **kw))
                seconds[i] += time.perf_counter() - t0
            del model
    return views, seconds


def _predict_folds(
    models: dict[int, nn.Module],
    spec: RunModel,
    store: PackedStore,
    test_rows: np.ndarray,
    train: PackedStore | None,
    val_rows: dict[int, np.ndarray],
    *,
    dev: torch.device,
    tta: int,
    batch_size: int,
    dtype: torch.dtype | None,
):
    """Each fold's test probabilities, its validation rows' per-view logits, and the seconds spent on test."""
    parts = {
        k: [(store.images, test_rows)] + ([(train.images, val_rows[k])] if train is not None else []) for k in models
    }  # per fold: the test patches, then its OOF ones
    views, seconds = predict_folds(
        models, parts, img_size=spec.img_size, device=dev, tta=tta, batch_size=batch_size, dtype=dtype
    )
    fold_probs = [sigmoid_mean(v[0]) for v in views.values()]
    oof_views = {k: v[1] for k, v in views.items() if train is not None}
    return fold_probs, oof_views, seconds[0]


@holding(lambda a: a["run_dir"], "hcd predict", "wait for it to finish (or stop it), then predict")
def predict_run(
    data_dir: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    tta: TtaViews = 8,
    out: str | os.PathLike[str] | None = None,
    blend: BlendMode = "mean",
    device: str = "auto",
    batch_size: int = 256,
    folds: Sequence[int] | None = None,
    precision: Precision = "auto",
    oof: bool = True,
) -> PredictResult:
    """Predict ``DIR``'s test set with every selected fold of ``RUN`` and write the submission (see module doc).

    ``data_dir`` None: the data folder the run trained on (``RUN/data.json``), else ``./data``."""
    _check_options(tta, blend, batch_size)
    data_dir = run_data_dir(run_dir, data_dir, warn=lambda line: err_console.print(f"note: {line}", soft_wrap=True))
    spec = read_run_model(run_dir)
    fold_ids = select_folds(run_dir, folds)
    ids = sample_ids(data_dir)
    out_path = Path(out) if out is not None else RunLayout.of(run_dir).root / "submission.csv"
    check_free_space(out_path.parent, 64 * len(ids) * 3, "the submission, its sidecar and the TTA OOF file")
    models, dev, dtype = load_folds(run_dir, spec, fold_ids, device, precision)
    store = open_test_store(data_dir)
    test_rows = store.index_of(ids)
    train, val_rows, note = oof_plan(run_dir, data_dir, fold_ids) if oof else (None, {}, "OOF check turned off")

    fold_probs, oof_views, test_s = _predict_folds(
        models, spec, store, test_rows, train, val_rows, dev=dev, tta=tta, batch_size=batch_size, dtype=dtype
    )
    probs = fold_ensemble(np.stack(fold_probs), how=blend)
    oof_scores = oof_auc(train, val_rows, oof_views, tta) if train is not None else None
    oof_file = None
    if train is not None:  # the n-view OOF, so that `hcd ensemble` weighs this run like its n-view test predictions
        try:
            oof_file = write_tta_oof(run_dir, train, val_rows, oof_views, tta)
        except (OSError, DiskFullError) as exc:  # e.g. a read-only run folder: the submission matters more
            note = f"{getattr(exc, 'strerror', None) or exc}; `hcd ensemble` will weigh this run by its 1-view OOF"
    # cv_auc means one thing in every ledger row: the single-view OOF AUC that `hcd cv` reports, whether or
    # not this --data-dir had the packed train store; what TTA adds is kept apart as oof_auc_tta.
    cv_auc = recorded_cv_auc(run_dir, fold_ids)
    if cv_auc is None and oof_scores is not None:
        cv_auc = finite_or_none(oof_scores.auc_1)
    write_submission(ids, probs, out_path)
    side = write_sidecar(
        out_path,
        {
            "runs": [str(Path(run_dir).resolve())],
            "folds": fold_ids,
            "tta": tta,
            "ensemble": blend,
            "cv_auc": cv_auc,
            "model": spec.model,
            "img_size": spec.img_size,
            "oof_auc_1view": None if oof_scores is None else finite_or_none(oof_scores.auc_1),
            "oof_auc_tta": None if oof_scores is None else finite_or_none(oof_scores.auc_n),
            "oof_tta_file": None if oof_file is None else str(oof_file.resolve()),  # OOF made like these predictions
        },
    )
    n_done = len(fold_ids) * len(ids)
    return PredictResult(
        out=out_path,
        sidecar=side,
        folds=fold_ids,
        tta=tta,
        ensemble=blend,
        n_images=len(ids),
        images_per_s=n_done / test_s if test_s > 0 else float("nan"),
        cv_auc=cv_auc,
        oof=oof_scores,
        note=note,
        oof_file=oof_file,
    )
