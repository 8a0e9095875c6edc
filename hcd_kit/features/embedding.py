"""``hcd embed``: a frozen backbone's features of every packed patch, in TTA views, kept in a feature store.

``embed`` builds ``--model`` with no head (``create_model(num_classes=0)``), feeds it exactly what training
and prediction feed a network (``hcd_kit.preprocess.to_input`` at the backbone's input size, the ``tta``
dihedral views of each patch stacked into one batch as in ``hcd predict``), pools each view to one vector
(``Backbone.pool``: timm's own head pooling, or class token + mean patch token) and writes float16 rows
into the store of ``hcd_kit.features.store``, flushing every ``chunk_rows`` patches. An interrupted embed
goes on where it stopped; a finished one with the same settings is not redone::

    res = embed("data", "uni", "features/uni", tta=2)   # -> features/uni/{train,test}_features.npy
    res.dim, res.images_per_s, res.skipped

``hcd probe`` (``hcd_kit.features.probes``) then fits a linear model per fold on these features.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hcd_kit.choices import MIN_IMG_SIZE, Precision, TtaViews
from hcd_kit.config import check_choice
from hcd_kit.console import progress
from hcd_kit.data import BatchLoader, PackedStore
from hcd_kit.data.pack import open_split
from hcd_kit.device import amp_dtype, autocast, model_input, resolve_device, set_threads
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.features.store import (
    SplitWriter,
    check_compatible,
    data_identity,
    read_manifest,
    remove_store,
    write_manifest,
)
from hcd_kit.fsutil import check_free_space
from hcd_kit.inference.tta import tta_stack, tta_transforms
from hcd_kit.layout import SPLITS, DataLayout
from hcd_kit.locks import holding
from hcd_kit.preprocess import to_input


@dataclass
class SplitEmbed:
    split: str
    rows: int
    start: int  # rows an interrupted embed had finished (0: embedded from the first row)
    status: str  # "embedded", "resumed" or "already embedded"


@dataclass
class EmbedResult:
    out: Path
    model: str
    label: str  # the backbone's name (registry name, or the spec)
    img_size: int
    tta: int
    pool: str
    dim: int
    splits: list[SplitEmbed]
    seconds: float
    images_per_s: float  # patches embedded per second by this call, all their views included (NaN: none)
    skipped: bool  # everything asked for was in the store already


class PooledFeatures(nn.Module):
    """A headless backbone and its pooling as one module, so ``nn.DataParallel`` splits all of the work."""

    def __init__(self, model: nn.Module, pool: str) -> None:
        super().__init__()
        self.model, self.pool = model, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "head":  # timm's own pooling: num_classes=0 leaves the pooled pre-logits
            return self.model(x)
        # forward_features bypasses the model's forward pre-hooks, so its input normalisation is applied here
        for hook in self.model._forward_pre_hooks.values():
            out = hook(self.model, (x,))
            x = out[0] if isinstance(out, tuple) else (x if out is None else out)
        tokens = self.model.forward_features(x)
        return torch.cat([tokens[:, 0], tokens[:, self.model.num_prefix_tokens :].mean(1)], dim=1)


def _check_options(tta: int, precision: str, batch_size: int, img_size: int | None, splits: list[str]) -> None:
    check_choice("--tta", tta, TtaViews)
    check_choice("--precision", precision, Precision)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if img_size is not None and img_size < MIN_IMG_SIZE:
        raise ConfigError(f"--img-size must be >= {MIN_IMG_SIZE}, got {img_size}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ConfigError(f"--split must name train, test or both (e.g. train,test); got {','.join(splits) or 'none'}")


def _weights_record(weights: str | os.PathLike[str] | None) -> dict | None:
    """How the store names a --weights file: its name and size (the same file elsewhere is the same weights)."""
    if weights is None:
        return None
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    return {"file": path.name, "bytes": path.stat().st_size}


def _native_size(net: nn.Module, kind: str) -> int | None:
    """The input size a hub checkpoint's own config names (a timm name's default cfg says nothing we want)."""
    if kind != "hf-hub":
        return None
    size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else None


@torch.inference_mode()
def _feature_dim(net: nn.Module, img_size: int, device: torch.device, dtype, label: str) -> int:
    """Length of one feature vector, from one blank patch; a one-line ConfigError when the size does not fit."""
    x = to_input(torch.zeros((1, 96, 96, 3), dtype=torch.uint8), img_size, device)
    try:
        with autocast(device, dtype):
            out = net(x)
    except (RuntimeError, AssertionError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(
            f"'{label}' cannot take {img_size} px input ({first}); pass the --img-size its weights were trained at"
        ) from None
    if out.ndim != 2:
        raise ConfigError(f"'{label}' gives features of shape {tuple(out.shape)} per batch, not one vector per patch")
    return int(out.shape[1])


@torch.inference_mode()
def _embed_split(
    net: nn.Module,
    store: PackedStore,
    writer: SplitWriter,
    *,
    split: str,
    img_size: int,
    device: torch.device,
    tta: int,
    batch_size: int,
    dtype,
    chunk_rows: int,
    label: str,
    on_rows: Callable[[int], None],
    on_chunk: Callable[[str, int], None] | None,
) -> None:
    """Embed rows ``writer.start..N`` of ``store`` into ``writer``, flushing every ``chunk_rows`` patches."""
    n = len(store)
    per_pass = max(1, batch_size // tta)  # batch_size counts views, as in `hcd predict`
    loader = BatchLoader(
        store.images,
        None,
        np.arange(writer.start, n),
        batch_size=per_pass,
        shuffle=False,
        pin_memory=device.type == "cuda",
    )
    done = flushed = writer.start
    for batch in loader:
        x = model_input(tta_stack(to_input(batch.images, img_size, device), tta), net)
        with autocast(device, dtype):
            out = net(x)
        feats = out.to(torch.float16).reshape(len(batch.index), tta, -1).cpu().numpy()  # half the copy
        if not np.isfinite(feats).all():  # fp16 overflow in a big ViT, or a broken checkpoint
            raise ConfigError(
                f"'{label}' gave non-finite features for {split} rows {done}..{done + len(feats) - 1}; "
                "try --precision fp32 (or bf16 where the device has it)"
            )
        writer.write(done, feats)
        done += len(feats)
        on_rows(len(feats))
        if done - flushed >= chunk_rows or done == n:
            writer.flush(done)
            flushed = done
            if on_chunk is not None:
                on_chunk(split, done)


@holding(lambda a: a["out"], "hcd embed", "wait for it to finish (or stop it), or embed into another --out")
def embed(
    data_dir: str | os.PathLike[str],
    model: str,
    out: str | os.PathLike[str],
    tta: TtaViews = 1,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    img_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    precision: Precision = "auto",
    splits: Sequence[str] = ("train", "test"),
    force: bool = False,
    *,
    chunk_rows: int = 4096,
    on_chunk: Callable[[str, int], None] | None = None,
) -> EmbedResult:
    """Embed ``splits`` of ``DIR``'s packed store with ``model`` into the store ``out`` (see module doc).

    ``img_size`` defaults to the backbone's input size, else the size its hub / local-dir config names,
    else 96. ``force`` rebuilds a store made with other settings; ``on_chunk(split, rows_done)`` is called
    after each flushed chunk.
    """
    from hcd_kit.backbones import resolve

    t_start = time.perf_counter()
    splits = list(dict.fromkeys(splits))
    _check_options(tta, precision, batch_size, img_size, splits)
    backbone = resolve(model)
    stores = {s: open_split(data_dir, s) for s in splits}
    packed = DataLayout.of(data_dir).packed_dir
    identity = {s: data_identity(packed, s) for s in splits}
    root = Path(out)
    settings = {
        "model": backbone.name if backbone.kind == "local-dir" else backbone.spec,
        "weights": _weights_record(weights),
        "pretrained": pretrained or weights is not None,
        "img_size": img_size or backbone.input_size or (None if backbone.kind == "hf-hub" else 96),
        "tta": tta,
        "pool": backbone.pool,
    }  # a hub checkpoint's own size is known once it is built
    old = None if force else read_manifest(root)  # --force: the old store goes once the model is built
    if old is not None:
        check_compatible(root, old, settings, identity)
        if all(old["splits"].get(s, {}).get("complete") for s in splits):
            done = [
                SplitEmbed(s, int(old["splits"][s]["rows"]), int(old["splits"][s]["rows"]), "already embedded")
                for s in splits
            ]
            return EmbedResult(
                out=root,
                model=model,
                label=backbone.label,
                img_size=int(old["img_size"]),
                tta=tta,
                pool=backbone.pool,
                dim=int(old["dim"]),
                splits=done,
                seconds=time.perf_counter() - t_start,
                images_per_s=float("nan"),
                skipped=True,
            )

    from hcd_kit.device import place_model
    from hcd_kit.model import create_model

    dev = resolve_device(device)
    dtype = amp_dtype(dev, precision)
    set_threads()  # the CPUs this process may use (its affinity mask)
    net = create_model(model, pretrained=pretrained, weights=weights, num_classes=0, img_size=img_size)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = img_size or backbone.input_size or _native_size(net, backbone.kind) or 96
    if old is not None:
        check_compatible(root, old, {**settings, "img_size": size}, {})
    net = place_model(PooledFeatures(net, backbone.pool).eval(), dev)  # channels-last where it is faster
    dim = _feature_dim(net, size, dev, dtype, backbone.label)
    if old is not None and int(old.get("dim", -1)) != dim:
        raise DataError(
            f"{root} holds {old.get('dim')}-long features but '{backbone.label}' gives {dim}; "
            "rebuild it with `hcd embed --force`"
        )
    if dev.type == "cuda" and dev.index is None and torch.cuda.device_count() > 1:
        # Kaggle's T4 x2: one process drives both GPUs, each taking half of every batch (frozen features
        # need no gradient sync, so DataParallel's single process costs little and halves the wall time).
        net = nn.DataParallel(net)

    manifest = old or {
        "model": settings["model"],
        "spec": model,
        "label": backbone.label,
        "kind": backbone.kind,
        "hub": backbone.hub_id,
        "architecture": cfg.get("architecture"),
        "weights": settings["weights"],
        "pretrained": settings["pretrained"],
        "img_size": size,
        "pool": backbone.pool,
        "dim": dim,
        "tta": tta,
        "views": list(tta_transforms(tta)),
        "precision": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "data": {},
        "splits": {},
    }
    todo = [s for s in splits if not manifest["splits"].get(s, {}).get("complete")]
    manifest["data"].update({s: identity[s] for s in todo})
    manifest["splits"].update({s: {"rows": len(stores[s]), "complete": False} for s in todo})
    need = sum(len(stores[s]) for s in todo) * len(manifest["views"]) * dim * 2  # float16 features
    check_free_space(root, need, f"the {'/'.join(todo)} features", " or embed into another --out")
    if force:
        remove_store(root)
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, manifest)

    results, new_rows, t_run = [], 0, 0.0
    with progress("img") as bar:
        for s in splits:
            if s not in todo:
                results.append(SplitEmbed(s, len(stores[s]), len(stores[s]), "already embedded"))
                continue
            writer = SplitWriter(root, s, stores[s].ids, stores[s].labels, tta, dim)
            task = bar.add_task(f"embed {s}", total=len(stores[s]), completed=writer.start)
            t0 = time.perf_counter()
            try:
                _embed_split(
                    net,
                    stores[s],
                    writer,
                    split=s,
                    img_size=size,
                    device=dev,
                    tta=tta,
                    batch_size=batch_size,
                    dtype=dtype,
                    chunk_rows=max(1, chunk_rows),
                    label=backbone.label,
                    on_rows=lambda k, t=task: bar.advance(t, k),
                    on_chunk=on_chunk,
                )
            finally:
                writer.close()
            t_run += time.perf_counter() - t0
            new_rows += len(stores[s]) - writer.start
            manifest["splits"][s]["complete"] = True
            write_manifest(root, manifest)
            results.append(SplitEmbed(s, len(stores[s]), writer.start, "resumed" if writer.start else "embedded"))
    return EmbedResult(
        out=root,
        model=model,
        label=backbone.label,
        img_size=size,
        tta=tta,
        pool=backbone.pool,
        dim=dim,
        splits=results,
        seconds=time.perf_counter() - t_start,
        images_per_s=new_rows / t_run if t_run > 0 else float("nan"),
        skipped=False,
    )
