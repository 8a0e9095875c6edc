"""``build_report``: one run folder in, one self-contained HTML file out (``hcd report``).

The steps: ``data.collect`` reads the run; ``analysis`` turns the pooled out-of-fold rows into a Youden
threshold, a confusion matrix, calibration bins and the most confident errors; ``figures`` draws them;
``patches`` finds the errors' patches and Grad-CAM maps; ``html`` fills the template. Every section of
``SECTIONS`` is always in the page; one that cannot be made says why in a note.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hcd_kit.errors import ConfigError
from hcd_kit.metrics import roc_auc
from hcd_kit.report import figures, html
from hcd_kit.report.analysis import best_epoch, calibration, confusion_counts, youden_threshold
from hcd_kit.report.data import RunData, _version, auc_rows, collect, num
from hcd_kit.report.evaluations import evaluation_rows
from hcd_kit.report.patches import Card, error_cards, gradcam_cards

SECTIONS: tuple[tuple[str, str], ...] = (
    ("config", "Config & recipe"),
    ("environment", "Environment"),
    ("oof-auc", "OOF AUC"),
    ("evaluations", "Evaluations"),
    ("learning-curves", "Learning curves"),
    ("roc-pr", "ROC & PR"),
    ("calibration", "Calibration"),
    ("confusion", "Confusion"),
    ("errors", "Errors"),
    ("gradcam", "Grad-CAM"),
    ("training-time", "Training time"),
    ("submissions", "Submissions"),
)
SECTION_IDS = tuple(s for s, _ in SECTIONS)


@dataclass
class ReportResult:
    out: Path
    threshold: float
    fp: list[Card]
    fn: list[Card]
    cams: list[Card]
    notes: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _auc_figure(data: RunData) -> str:
    labels = [f"fold {f.fold}" for f in data.cv.folds] + ["pooled"]
    series = {"1 view": [f.auc for f in data.cv.folds] + [data.cv.overall_auc]}
    for v, df in sorted(data.tta.items()):
        series[f"TTA x{v}"] = [
            roc_auc(part["label"], part["prob"]) if len(part := df[df["fold"] == f.fold]) else math.nan
            for f in data.cv.folds
        ] + [roc_auc(df["label"], df["prob"])]
    return figures.auc_bars(series, labels)


def _time_rows(data: RunData) -> list[list[str]]:
    rows = []
    for t in data.times:
        h = data.histories.get(t.fold)
        speed = h["images_per_s"].mean() if h is not None and "images_per_s" in h else math.nan
        rows.append(
            [
                str(t.fold),
                _duration(t.seconds),
                str(t.epochs),
                f"{t.seconds / max(1, t.epochs):.1f}",
                str(t.sessions),
                num(float(speed), 0),
            ]
        )
    return rows


def _best_rows(data: RunData) -> list[list[str]]:
    rows = []
    for k, h in sorted(data.histories.items()):
        best = best_epoch(h)
        auc = float(h.loc[h["epoch"] == best, "val_auc"].iloc[0]) if best is not None else math.nan
        rows.append([str(k), str(int(h["epoch"].max())), str(best or "–"), num(auc)])
    return rows


def build_report(
    run_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    ledger: str | os.PathLike[str] | None = None,
    n_errors: int = 12,
    device: str = "auto",
) -> ReportResult:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``) and say what is in it; the
    ledger is found as `hcd submit` finds it (``kaggle.ledger.ledger_path``) unless ``ledger`` is given. The
    patches come from ``data_dir``, by default the data folder the run trained on (``RUN/data.json``)."""
    from hcd_kit.kaggle.ledger import ledger_path
    from hcd_kit.runs.record import run_data_dir

    if n_errors < 0:
        raise ConfigError(f"--n-errors must be >= 0, got {n_errors}")
    moved: list[str] = []
    data_dir = run_data_dir(run_dir, data_dir, warn=moved.append)
    data = collect(run_dir, data_dir, ledger_path(ledger))
    oof, notes = data.pooled, dict(data.notes)
    if moved:
        notes["data"] = moved[0]
    y, p = oof["label"].to_numpy(np.int64), oof["prob"].to_numpy(float)
    threshold = youden_threshold(y, p)
    tn, fp_n, fn_n, tp = counts = confusion_counts(oof, threshold)
    cal = calibration(y, p)
    gallery = error_cards(oof, threshold, n_errors, data_dir)
    if gallery.note:
        notes["errors"] = gallery.note
    if data.kind == "probe":
        explained_cards, layers = [], []
        cam_note = "a probe run keeps no fold network (`hcd probe` fits a head on frozen features): no Grad-CAM"
    else:
        explained = gradcam_cards(data.run.root, gallery, device)
        explained_cards, layers, cam_note = explained.cards, explained.layers, explained.note
    if cam_note:
        notes["gradcam"] = cam_note
    eval_header, eval_rows, eval_note = evaluation_rows(data.run.root)  # `hcd evaluate`'s scores on other data
    if eval_note:
        notes["evaluations"] = eval_note
    total = sum(t.seconds for t in data.times)
    auc_table = auc_rows(data.cv, data.tta)
    context = dict(
        version=_version("hcd-kit"),
        run_name=data.run.root.resolve().name,
        run_dir=str(data.run.root.resolve()),
        kind=data.kind,
        model=data.config.get("model", "–"),
        recipe=data.config.get("recipe"),
        pooled_auc=num(data.cv.overall_auc),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=SECTIONS,
        notes=notes,
        config_rows=data.config_rows,
        environment=data.environment,
        auc_header=auc_table[0],
        auc_rows=auc_table[1],
        mean_auc=num(data.cv.mean_auc),
        std_auc=num(data.cv.std_auc),
        auc_figure=_auc_figure(data),
        eval_header=eval_header,
        eval_rows=eval_rows,
        curves=figures.learning_curves(data.histories) if data.histories else None,
        best_rows=_best_rows(data),
        roc_pr=figures.roc_pr(oof, data.tta),
        reliability=figures.reliability(cal),
        ece=num(cal.ece, 3),
        brier=num(cal.brier, 3),
        confusion=figures.confusion(counts, threshold),
        threshold_text=num(threshold),
        sensitivity=num(tp / max(1, tp + fn_n), 3),
        specificity=num(tn / max(1, tn + fp_n), 3),
        n_errors=n_errors,
        fp=gallery.fp,
        fn=gallery.fn,
        cam_fp=[c for c in explained_cards if c.kind == "fp"],
        cam_fn=[c for c in explained_cards if c.kind == "fn"],
        cam_layers=", ".join(layers),
        times=_time_rows(data),
        total_time=_duration(total),
        submissions=data.submissions,
    )
    text = html.render(context)
    path = html.write(Path(out) if out is not None else data.run.root / "report.html", text)
    return ReportResult(path, threshold, gallery.fp, gallery.fn, explained_cards, notes, len(text.encode("utf-8")))
