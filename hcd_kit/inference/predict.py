"""Predicting the test set with a trained run: every fold's best weights, TTA batched on the device, one CSV.

``predict_run`` rebuilds the model from ``RUN/config.toml`` (``model``, ``img_size``), packs the test set
if it is not packed yet, runs each fold's ``best.pt`` over it with ``n`` dihedral views per patch stacked
into the same batch (``hcd_kit.inference.tta``), averages the views, then the folds (mean probability or mean rank), and
writes ``id,label`` in exactly the order of ``sample_submission.csv`` plus a ``<out>.json`` sidecar (runs,
folds, tta, ensemble, cv_auc) that ``hcd submit`` keeps in its ledger. When the packed train store is there
too, it re-predicts each fold's validation ids with 1 and with ``n`` views, so the user sees what TTA buys::

    res = predict_run("data", "runs/r18", tta=8)      # -> runs/r18/submission.csv (+ .json)
    res.oof.auc_1, res.oof.auc_n                       # OOF AUC without / with TTA (None if no train data)
"""

from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hcd_kit.config import read_toml
from hcd_kit.console import progress
from hcd_kit.device import Precision, amp_dtype, autocast, resolve_device
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_open, atomic_write_text
from hcd_kit.data.loader import BatchLoader
from hcd_kit.metrics import roc_auc
from hcd_kit.layout import DataLayout
from hcd_kit.preprocess import to_input
from hcd_kit.layout import RunLayout
from hcd_kit.data.store import PackedStore, open_store
from hcd_kit.inference.tta import TTA_CHOICES, fold_ensemble, tta_stack, tta_views

ENSEMBLES = ("mean", "rank")


@dataclass(frozen=True)
class RunModel:
    """What ``config.toml`` says is needed to rebuild a run's network."""

    name: str
    img_size: int


@dataclass
class OofAuc:
    """Out-of-fold AUC recomputed by predict: pooled over folds, with 1 view and with ``tta`` views."""

    tta: int
    auc_1: float
    auc_n: float
    per_fold: list[tuple[int, int, float, float]] = field(default_factory=list)  # fold, n, auc_1, auc_n


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


def read_run_model(run_dir: str | os.PathLike[str]) -> RunModel:
    """``model`` (timm name) and ``img_size`` from ``RUN/config.toml``; a one-line ConfigError otherwise."""
    path = RunLayout.of(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{path} not found; --run-dir must be a run folder written by `hcd train`")
    cfg = read_toml(path)
    name, size = cfg.get("model"), cfg.get("img_size")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path} has no `model = \"<timm name>\"` line; it is not a config written by hcd train")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ConfigError(f"{path}: `img_size` must be an integer >= 32, got {size!r}")
    from hcd_kit.model import check_model_name

    check_model_name(name)
    return RunModel(name=name, img_size=size)


def select_folds(run_dir: str | os.PathLike[str], spec: str = "all") -> list[int]:
    """Folds to use: every fold with a ``best.pt`` for ``"all"``, else the listed ones (``"0,2"``)."""
    run = RunLayout.of(run_dir)
    have = [k for k in run.folds_present() if run.best(k).is_file()]
    if not have:
        raise DataError(f"no fold*/best.pt in {run.root}; train the run first (`hcd train`) or fix --run-dir")
    if spec.strip().lower() == "all":
        return have
    try:
        want = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--folds must be 'all' or fold numbers like 0,2; got {spec!r}") from None
    missing = [k for k in want if k not in have]
    if not want or missing:
        raise DataError(f"--folds {spec}: no best.pt for fold(s) {missing or want} in {run.root} (has {have})")
    return want


def load_fold_model(run_dir: str | os.PathLike[str], fold: int, spec: RunModel, device: torch.device) -> nn.Module:
    """Fold ``fold``'s best weights in a fresh ``spec.name`` network on ``device``, in eval mode."""
    from hcd_kit.model import create_model

    path = RunLayout.of(run_dir).best(fold)
    model = create_model(spec.name, pretrained=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise DataError(f"{path} is not a readable weights file ({_first_line(exc)}); re-train fold {fold}") from None
    if not isinstance(state, dict):
        raise DataError(f"{path} is not a state_dict; it must be the best.pt written by `hcd train`")
    try:
        keys = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes (e.g. another width of the same family)
        raise DataError(f"{path} does not match model '{spec.name}' named in config.toml (tensor shapes differ: "
                        f"{_first_line(exc, 120)}); predict with the run folder that wrote these weights") from None
    if keys.missing_keys or keys.unexpected_keys:
        example = (keys.missing_keys or keys.unexpected_keys)[0]
        raise DataError(
            f"{path} does not match model '{spec.name}' named in config.toml ({len(keys.missing_keys)} missing, "
            f"{len(keys.unexpected_keys)} unexpected keys, e.g. {example}); "
            "predict with the run folder that wrote these weights"
        )
    return model.to(device).eval()


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move an eval-mode model to ``device`` in channels-last memory, which both cuDNN's tensor-core kernels and
    the CPU's oneDNN convolutions run fastest on (resnet18 on 2 CPU cores: ~30 % faster than NCHW)."""
    return model.to(device).eval().to(memory_format=torch.channels_last)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines and lines[0].startswith("Error(s)") else (lines[0] if lines else "")
    return (line or type(exc).__name__)[:limit]


@torch.inference_mode()
def predict_views(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    *,
    img_size: int,
    device: torch.device,
    tta: int = 8,
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
        x = tta_stack(to_input(batch.images, img_size, device), tta).contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = model(x)
        chunks.append(tta_views(logits, tta).float().cpu().numpy())
        if on_batch is not None:
            on_batch(len(batch.index))
    views = np.concatenate(chunks) if chunks else np.zeros((0, tta), np.float32)
    return views[np.searchsorted(order, indices)]  # back to the caller's order


def sigmoid_mean(views: np.ndarray) -> np.ndarray:
    """Mean per-view probability of (N, n) logits -> (N,) (the ``tta_merge`` rule, in numpy)."""
    return (1.0 / (1.0 + np.exp(-views.astype(np.float64)))).mean(axis=1)


def sample_ids(data_dir: str | os.PathLike[str]) -> np.ndarray:
    """The ids of ``DIR/sample_submission.csv`` in file order (the order Kaggle expects)."""
    from hcd_kit.data.labels import read_sample_submission

    path = DataLayout.of(data_dir).sample_submission
    ids = read_sample_submission(path)["id"].to_numpy(str)
    if len(ids) == 0:
        raise DataError(f"{path} lists no ids; download it again with `hcd download`")
    return ids


def open_test_store(data_dir: str | os.PathLike[str]) -> PackedStore:
    """The packed test store of ``DIR``, packing ``DIR/test`` first when it is not packed yet."""
    layout = DataLayout.of(data_dir)
    try:
        return open_store(layout.packed_dir, "test")
    except DataError:
        if not layout.test_dir.is_dir():
            raise DataError(
                f"no packed test store and no {layout.test_dir} folder; get the data with `hcd download`"
            ) from None
    if not os.access(layout.root, os.W_OK):
        raise DataError(
            f"{layout.root} is read-only, so test/ cannot be packed there; link test/ and sample_submission.csv "
            "into a writable folder and pass that as --data-dir"
        )
    from hcd_kit.data.pack import prepare

    prepare(layout.root, splits=("test",))
    return open_store(layout.packed_dir, "test")


def _validation_ids(run: RunLayout, layout: DataLayout, fold: int) -> np.ndarray | None:
    """Ids fold ``fold``'s model never trained on: its ``oof.csv``, else the run's own split
    (``RUN/folds.csv``), else ``DIR/folds.csv``; None when none of them exists."""
    if run.oof(fold).is_file():
        return pd.read_csv(run.oof(fold), dtype={"id": str})["id"].to_numpy(str)
    for split in (run.folds, layout.folds_csv):
        if split.is_file():
            folds = pd.read_csv(split, dtype={"id": str})
            return folds.loc[folds["fold"] == fold, "id"].to_numpy(str)
    return None


def _oof_plan(run_dir, data_dir, folds: list[int]) -> tuple[PackedStore | None, dict[int, np.ndarray], str | None]:
    """The packed train store and each fold's validation rows, or a note saying why OOF is skipped."""
    layout, run = DataLayout.of(data_dir), RunLayout.of(run_dir)
    try:
        store = open_store(layout.packed_dir, "train")
    except DataError:
        if layout.train_labels.is_file():
            hint = f"run `hcd prepare --data-dir {layout.root}` to see OOF AUC with/without TTA"
            return None, {}, f"train data not packed; {hint}"
        return None, {}, "no training data in --data-dir, so OOF AUC with/without TTA is skipped"
    if store.labels is None:
        return None, {}, "packed train store has no labels; OOF AUC skipped"
    rows = {}
    for k in folds:
        ids = _validation_ids(run, layout, k)
        if ids is None:
            return None, {}, f"no {run.oof(k)}, {run.folds} or {layout.folds_csv}; OOF AUC with/without TTA skipped"
        try:
            rows[k] = store.index_of(ids)
        except DataError as exc:  # e.g. a store packed with --skip-bad: predicting must still work
            return None, {}, f"fold {k}'s validation ids are not all in the packed train store ({exc}); OOF AUC skipped"
    return store, rows, None


def _oof_auc(store: PackedStore, rows: dict[int, np.ndarray], views: dict[int, np.ndarray], tta: int) -> OofAuc:
    per_fold, y_all, p1_all, pn_all = [], [], [], []
    for k, idx in rows.items():
        y, p1, pn = store.labels[idx], sigmoid_mean(views[k][:, :1]), sigmoid_mean(views[k])
        per_fold.append((k, len(idx), roc_auc(y, p1), roc_auc(y, pn)))
        y_all.append(y), p1_all.append(p1), pn_all.append(pn)
    y, p1, pn = np.concatenate(y_all), np.concatenate(p1_all), np.concatenate(pn_all)
    return OofAuc(tta=tta, auc_1=roc_auc(y, p1), auc_n=roc_auc(y, pn), per_fold=per_fold)


def _recorded_cv_auc(run_dir, folds: list[int]) -> float | None:
    """Pooled AUC of the selected folds' training-time ``oof.csv`` files, if all are there."""
    run = RunLayout.of(run_dir)
    if not all(run.oof(k).is_file() for k in folds):
        return None
    try:
        oof = pd.concat([pd.read_csv(run.oof(k)) for k in folds])
        return _finite(roc_auc(oof["label"], oof["prob"]))
    except (KeyError, ValueError, pd.errors.ParserError):
        return None  # a malformed oof.csv only costs the ledger its CV figure


def _finite(x: float | None) -> float | None:
    """JSON has no NaN: an undefined AUC (one-class fold) is stored as null."""
    return None if x is None or not np.isfinite(x) else float(x)


def write_submission(ids: np.ndarray, probs: np.ndarray, out: str | os.PathLike[str]) -> Path:
    """Write ``id,label`` rows atomically (probabilities with 8 significant digits)."""
    out = Path(out)
    with atomic_open(out, "w", encoding="utf-8", newline="") as fh:
        pd.DataFrame({"id": ids, "label": probs}).to_csv(fh, index=False, float_format="%.8g", lineterminator="\n")
    return out


def write_sidecar(out: Path, info: dict) -> Path:
    """``<out>.json``: what made this submission (read back by ``hcd submit`` for its ledger)."""
    side = Path(f"{out}.json")
    atomic_write_text(side, json.dumps(info, indent=2) + "\n")
    return side


def _check_options(tta: int, ensemble: str, batch_size: int) -> None:
    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"--ensemble must be 'mean' or 'rank', got {ensemble!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")


def _predict_folds(models: dict[int, nn.Module], spec: RunModel, store: PackedStore, test_rows: np.ndarray,
                   train: PackedStore | None, val_rows: dict[int, np.ndarray], *, dev: torch.device, tta: int,
                   batch_size: int, dtype: torch.dtype | None):
    """Each fold's test probabilities, its validation rows' per-view logits, and the seconds spent on test.

    ``models`` is emptied as it goes, so only one fold's weights sit on the device at a time.
    """
    fold_probs, oof_views, test_s = [], {}, 0.0
    kw = dict(img_size=spec.img_size, device=dev, tta=tta, batch_size=batch_size, dtype=dtype)
    with progress("img") as bar:
        t_test = bar.add_task("test", total=len(models) * len(test_rows))
        t_oof = bar.add_task("OOF", total=sum(map(len, val_rows.values()))) if train is not None else None
        for k in list(models):
            model = to_device(models.pop(k), dev)
            bar.update(t_test, description=f"test fold {k}")
            t0 = time.perf_counter()
            views = predict_views(model, store.images, test_rows, on_batch=lambda n: bar.advance(t_test, n), **kw)
            test_s += time.perf_counter() - t0
            fold_probs.append(sigmoid_mean(views))
            if train is not None:
                bar.update(t_oof, description=f"OOF fold {k}")
                oof_views[k] = predict_views(model, train.images, val_rows[k],
                                             on_batch=lambda n: bar.advance(t_oof, n), **kw)
            del model
    return fold_probs, oof_views, test_s


def predict_run(
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    tta: int = 8,
    out: str | os.PathLike[str] | None = None,
    ensemble: str = "mean",
    device: str = "auto",
    batch_size: int = 256,
    folds: str = "all",
    precision: Precision = "auto",
    oof: bool = True,
) -> PredictResult:
    """Predict ``DIR``'s test set with every selected fold of ``RUN`` and write the submission (see module doc)."""
    _check_options(tta, ensemble, batch_size)
    spec = read_run_model(run_dir)
    fold_ids = select_folds(run_dir, folds)
    ids = sample_ids(data_dir)
    dev = resolve_device(device)
    dtype = amp_dtype(dev, precision)
    # Every fold's weights are checked (on the CPU) before any image is touched: a wrong file fails in seconds.
    models = {k: load_fold_model(run_dir, k, spec, torch.device("cpu")) for k in fold_ids}
    store = open_test_store(data_dir)
    test_rows = store.index_of(ids)
    train, val_rows, note = _oof_plan(run_dir, data_dir, fold_ids) if oof else (None, {}, "OOF check turned off")

    fold_probs, oof_views, test_s = _predict_folds(models, spec, store, test_rows, train, val_rows, dev=dev,
                                                   tta=tta, batch_size=batch_size, dtype=dtype)
    probs = fold_ensemble(np.stack(fold_probs), how=ensemble)
    oof_auc = _oof_auc(train, val_rows, oof_views, tta) if train is not None else None
    # cv_auc means one thing in every ledger row: the single-view OOF AUC that `hcd cv` reports, whether or
    # not this --data-dir had the packed train store; what TTA adds is kept apart as oof_auc_tta.
    cv_auc = _recorded_cv_auc(run_dir, fold_ids)
    if cv_auc is None and oof_auc is not None:
        cv_auc = _finite(oof_auc.auc_1)
    out_path = Path(out) if out is not None else RunLayout.of(run_dir).root / "submission.csv"
    write_submission(ids, probs, out_path)
    side = write_sidecar(out_path, {
        "runs": [str(Path(run_dir).resolve())], "folds": fold_ids, "tta": tta, "ensemble": ensemble,
        "cv_auc": cv_auc, "model": spec.name, "img_size": spec.img_size,
        "oof_auc_1view": None if oof_auc is None else _finite(oof_auc.auc_1),
        "oof_auc_tta": None if oof_auc is None else _finite(oof_auc.auc_n),
    })
    n_done = len(fold_ids) * len(ids)
    return PredictResult(out=out_path, sidecar=side, folds=fold_ids, tta=tta, ensemble=ensemble, n_images=len(ids),
                         images_per_s=n_done / test_s if test_s > 0 else float("nan"), cv_auc=cv_auc,
                         oof=oof_auc, note=note)
