"""The error gallery: the most confident false positives and negatives as patch tiles, and their Grad-CAM.

``error_cards`` picks the errors (``most_confident_errors``), looks their patches up in the packed train store
of ``--data-dir`` and draws each one; ``gradcam_cards`` explains each with the fold model that produced its
out-of-fold probability (``RUN/fold{k}/best.pt``). Whatever cannot be drawn (no packed store, ids absent from
it, a probe run, a fold without weights, an architecture Grad-CAM does not handle) becomes a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hcd_kit.errors import ConfigError, DataError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.report import figures
from hcd_kit.report.analysis import most_confident_errors


@dataclass
class Card:
    """One patch of the gallery: what the caption says and the tile's data URI (None when not drawable)."""

    id: str
    kind: str  # "fp" or "fn"
    label: int
    prob: float
    fold: int
    image: str | None = None
    cam: np.ndarray | None = field(default=None, repr=False)
    remark: str | None = None  # e.g. that a Grad-CAM map is empty


@dataclass
class Gallery:
    threshold: float
    fp: list[Card]
    fn: list[Card]
    patches: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # id -> uint8 96x96x3
    note: str | None = None  # why the tiles are missing

    @property
    def cards(self) -> list[Card]:
        return self.fp + self.fn


def _cards(frame: pd.DataFrame, kind: str) -> list[Card]:
    return [Card(str(r.id), kind, int(r.label), float(r.prob), int(r.fold)) for r in frame.itertuples(index=False)]


def error_cards(oof: pd.DataFrame, threshold: float, n: int, data_dir: str | os.PathLike[str]) -> Gallery:
    """The ``n`` most confident errors of each kind at ``threshold``, drawn from the packed train store."""
    from hcd_kit.data import open_store

    fp, fn = most_confident_errors(oof, threshold, n)
    gallery = Gallery(threshold, _cards(fp, "fp"), _cards(fn, "fn"))
    if not gallery.cards:
        gallery.note = "no errors at this threshold" if n > 0 else "--n-errors 0: no patches asked for"
        return gallery
    packed = DataLayout.of(data_dir).packed_dir
    try:
        store = open_store(packed, "train")
        rows = store.index_of([c.id for c in gallery.cards])
    except DataError as exc:
        gallery.note = f"patches not shown: {exc} (pass the --data-dir the run was trained on; `hcd prepare` packs it)"
        return gallery
    for card, row in zip(gallery.cards, rows):
        patch = np.asarray(store.images[row])
        gallery.patches[card.id] = patch
        card.image = figures.patch_tile(patch)
    return gallery


@dataclass
class Explained:
    cards: list[Card]
    layers: list[str]  # "fold k: <layer>" for each fold model used
    note: str | None = None  # what could not be explained, and why


def gradcam_cards(run_dir: str | os.PathLike[str], gallery: Gallery, device: str = "auto") -> Explained:
    """Each error's Grad-CAM over its patch, computed with the model of the fold it was predicted by."""
    if gallery.note is not None or not gallery.patches:
        return Explained([], [], gallery.note or "no patches to explain")
    try:
        from hcd_kit.inference.runs import load_fold_model
        from hcd_kit.runs.model import read_run_model

        spec = read_run_model(run_dir)
    except ConfigError as exc:
        return Explained([], [], f"Grad-CAM needs fold weights: {exc}")
    import torch

    from hcd_kit.device import resolve_device
    from hcd_kit.report.gradcam import GradCam, UnsupportedModel

    run, dev = RunLayout.of(run_dir), resolve_device(device)
    out, layers, notes = [], [], []
    for k in sorted({c.fold for c in gallery.cards}):
        mine = [c for c in gallery.cards if c.fold == k]
        if not run.best(k).is_file():
            notes.append(f"fold {k} has no best.pt ({len(mine)} patch(es) not explained)")
            continue
        try:
            model = load_fold_model(run_dir, k, spec, dev)
        except DataError as exc:  # a damaged or mismatched best.pt: the page says so, the rest still renders
            notes.append(f"fold {k}: {exc}")
            continue
        for p in model.parameters():
            p.requires_grad_(False)  # gradients are wanted for activations only
        try:
            cam = GradCam(model, spec.img_size, dev)
        except UnsupportedModel as exc:
            return Explained([], [], f"Grad-CAM not available for {spec.model}: {exc}")
        layer = cam.layer_name
        for c in mine:
            try:
                m = cam(gallery.patches[c.id], positive=c.prob >= gallery.threshold)
            except UnsupportedModel as exc:
                return Explained([], [], f"Grad-CAM not available for {spec.model}: {exc}")
            empty = "empty map: no region raises this score" if float(m.max()) <= 0 else None
            tile = figures.patch_tile(gallery.patches[c.id], m)
            out.append(Card(c.id, c.kind, c.label, c.prob, c.fold, tile, m, empty))
        layers.append(f"fold {k}: {layer}")
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    order = {c.id: i for i, c in enumerate(gallery.cards)}
    out.sort(key=lambda c: order[c.id])
    return Explained(out, layers, "; ".join(notes) or None)
