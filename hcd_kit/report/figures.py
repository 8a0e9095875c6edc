"""The report's pictures, each returned as a ``data:image/png;base64,...`` URI that the HTML embeds.

Plots use matplotlib's object API (``Figure`` on the Agg canvas: no pyplot state, safe headless); patch tiles
use Pillow: a 96 px patch upscaled without smoothing, its central 32x32 (the region the label is about)
outlined, and optionally a Grad-CAM map blended over it.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd

from hcd_kit.report.analysis import Calibration, best_epoch

CENTRE = (32, 64)  # the labelled central 32x32 of a 96x96 patch: rows and columns 32..63


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fig_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return png_uri(buf.getvalue())


def _figure(w: float, h: float, n: int = 1, **kw):
    """A figure of ``n`` panels in a row under constrained layout: labels, titles and legends placed outside
    the axes never land on a neighbouring panel (``kw`` goes to ``subplots``, e.g. ``sharex``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, n, **kw)
    return fig, (axes if n > 1 else [axes])


def _legend_columns(n: int, most: int = 5) -> int:
    """Columns for a legend of ``n`` entries under a figure: rows of at most ``most``, filled evenly."""
    rows = max(1, math.ceil(n / most))
    return max(1, math.ceil(n / rows))


def auc_bars(fold_auc: dict[str, list[float]], labels: list[str]) -> str:
    return _fig_uri(auc_bars_figure(fold_auc, labels))


def auc_bars_figure(fold_auc: dict[str, list[float]], labels: list[str]):
    """Grouped bars: per fold and pooled, the AUC of each prediction kind (1 view, TTA xN ...); legend at the right."""
    fig, (ax,) = _figure(7.6, 3.2)
    width = 0.8 / max(1, len(fold_auc))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(fold_auc.items()):
        ax.bar(x + i * width, values, width, label=name, color=f"C{i}")
    ax.set_xticks(x + width * (len(fold_auc) - 1) / 2, labels)
    finite = [v for vs in fold_auc.values() for v in vs if math.isfinite(v)]
    lo = min(finite, default=0.5)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set(ylabel="ROC AUC", title="out-of-fold AUC per fold")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def learning_curves(histories: dict[int, pd.DataFrame]) -> str:
    return _fig_uri(learning_curves_figure(histories))


def learning_curves_figure(histories: dict[int, pd.DataFrame]):
    """Loss (train solid, val dashed), val AUC and learning rate per epoch; each fold's best epoch starred.

    One legend for the three panels, at their right: a colour per fold (its best epoch named), then the keys
    to the line styles. Epoch ticks are whole numbers, at most ~8 per panel however long the run.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    epochs = max((len(h) for h in histories.values()), default=1)
    fig, (ax_loss, ax_auc, ax_lr) = _figure(14, 4.2, 3, sharex=True)
    dots = {"marker": ".", "markersize": 5} if epochs <= 30 else {}  # a dot per epoch while they stay apart
    star = {"marker": "*", "markersize": 13, "markeredgecolor": "black", "linestyle": "none"}
    folds = []
    for i, (k, h) in enumerate(sorted(histories.items())):
        color = f"C{i % 10}"
        ax_loss.plot(h["epoch"], h["train_loss"], color=color, **dots)
        ax_loss.plot(h["epoch"], h["val_loss"], color=color, linestyle="--", **dots)
        ax_auc.plot(h["epoch"], h["val_auc"], color=color, **dots)
        if "lr" in h:
            ax_lr.plot(h["epoch"], h["lr"], color=color, **dots)
        best = best_epoch(h)
        if best is not None:
            row = h[h["epoch"] == best].iloc[0]
            ax_auc.plot([best], [row["val_auc"]], color=color, zorder=3, clip_on=False, **star)
            ax_loss.axvline(best, color=color, linestyle=":", linewidth=1)
        folds.append(
            Line2D([], [], color=color, label=f"fold {k}" + ("" if best is None else f" (best: epoch {best})"))
        )
    keys = [
        Line2D([], [], color="grey", label="train loss"),
        Line2D([], [], color="grey", linestyle="--", label="val loss"),
        Line2D([], [], color="grey", **star, label="best.pt (highest val AUC)"),
    ]
    ax_loss.set(title="loss (dotted: best epoch)", xlabel="epoch", ylabel="BCE loss")
    ax_auc.set(title="validation AUC (star: best.pt)", xlabel="epoch", ylabel="ROC AUC")
    ax_lr.set(title="learning rate (at epoch end)", xlabel="epoch", ylabel=_scale_lr(ax_lr, histories))
    ax_loss.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))  # shared by the three panels
    for ax in (ax_loss, ax_auc, ax_lr):
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(alpha=0.3)
    fig.legend(handles=folds + keys, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _scale_lr(ax, histories: dict[int, pd.DataFrame]) -> str:
    """Tick the learning rate in units of its power of ten and name the unit in the axis label (matplotlib's
    own offset text would sit on the panel's title); returns the label."""
    from matplotlib.ticker import FuncFormatter

    lrs = np.abs(np.concatenate([h["lr"].to_numpy(float) for h in histories.values() if "lr" in h] or [np.zeros(0)]))
    top = lrs[np.isfinite(lrs)].max(initial=0.0)
    e = math.floor(math.log10(top)) if top > 0 else 0
    if -2 <= e <= 2:
        return "lr"
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 10**e:g}"))
    return f"lr ($\\times 10^{{{e}}}$)"


def roc_pr(oof: pd.DataFrame, tta: dict[int, pd.DataFrame]) -> str:
    return _fig_uri(roc_pr_figure(oof, tta))


def roc_pr_figure(oof: pd.DataFrame, tta: dict[int, pd.DataFrame]):
    """ROC and precision-recall curves: pooled OOF in black, each fold in colour, TTA OOF dashed; one legend
    under both panels names each curve with its AUC and average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fig, (ax_roc, ax_pr) = _figure(11, 5.8, 2)

    def draw(df: pd.DataFrame, name: str, **style) -> None:
        if df["label"].nunique() < 2:
            return
        y, p = df["label"].to_numpy(), df["prob"].to_numpy()
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        auc, ap = roc_auc_score(y, p), average_precision_score(y, p)
        ax_roc.plot(fpr, tpr, label=f"{name}: AUC {auc:.4f}, AP {ap:.4f}", **style)
        ax_pr.plot(rec, prec, **style)

    for i, k in enumerate(sorted(oof["fold"].unique())):
        draw(oof[oof["fold"] == k], f"fold {k}", color=f"C{i % 10}", linewidth=1, alpha=0.6)
    for v, df in sorted(tta.items()):
        draw(df, f"pooled TTA x{v}", color="grey", linewidth=1.8, linestyle="--")
    draw(oof, "pooled OOF", color="black", linewidth=2.2)
    base = float(oof["label"].mean()) if len(oof) else 0.0
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label=f"chance (PR: precision {base:.2f})")
    ax_pr.axhline(base, color="grey", linestyle=":", linewidth=1)
    ax_roc.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(title="precision-recall", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
    n = len(ax_roc.get_legend_handles_labels()[0])
    fig.legend(loc="outside lower center", ncols=_legend_columns(n, 3), fontsize=8, frameon=False)
    return fig


def reliability(cal: Calibration) -> str:
    return _fig_uri(reliability_figure(cal))


def reliability_figure(cal: Calibration):
    """Observed tumour rate against mean predicted probability per bin, with the bins' counts beneath; the
    legend under both panels."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 6.4), layout="constrained")
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = cal.count > 0
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.plot(
        cal.mean_prob[used],
        cal.frac_pos[used],
        marker="o",
        color="C0",
        label=f"pooled OOF (ECE {cal.ece:.3f}, Brier {cal.brier:.3f})",
    )
    ax.set(title="reliability", ylabel="fraction tumour", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    centres = (cal.edges[:-1] + cal.edges[1:]) / 2
    ax_n.bar(centres, cal.count, width=np.diff(cal.edges) * 0.9, color="C0", alpha=0.6)
    ax_n.set(xlabel="predicted probability", ylabel="patches")
    ax_n.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return fig


def confusion(counts: tuple[int, int, int, int], threshold: float) -> str:
    tn, fp, fn, tp = counts
    grid = np.array([[tn, fp], [fn, tp]])
    fig, (ax,) = _figure(4.2, 3.8)
    ax.imshow(grid, cmap="Blues")
    total = max(1, grid.sum())
    for (r, c), v in np.ndenumerate(grid):
        ax.text(
            c,
            r,
            f"{v:,}\n{v / total:.1%}",
            ha="center",
            va="center",
            color="white" if v > grid.max() / 2 else "black",
            fontsize=11,
        )
    ax.set_xticks([0, 1], ["normal", "tumour"])
    ax.set_yticks([0, 1], ["normal", "tumour"])
    ax.set(xlabel=f"predicted (prob >= {threshold:.4f})", ylabel="label", title="confusion matrix")
    return _fig_uri(fig)


def patch_tile(patch: np.ndarray, cam: np.ndarray | None = None, scale: int = 2, alpha: float = 0.6) -> str:
    """One patch (uint8 HxWx3) upscaled ``scale`` times (nearest), central 32x32 outlined; a Grad-CAM ``cam``
    (HxW in [0, 1]) is blended over it in the jet colour map, opaque where the map is high and transparent
    where it is zero (so a map without evidence leaves the patch as it is)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    rgb = np.asarray(patch, dtype=np.uint8)
    if cam is not None:
        heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
        weight = alpha * np.clip(cam, 0, 1)[..., None]
        rgb = (rgb * (1 - weight) + heat * weight).round().astype(np.uint8)
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb).resize((w * scale, h * scale), Image.NEAREST)
    lo, hi = CENTRE[0] * scale, CENTRE[1] * scale - 1
    draw = ImageDraw.Draw(img)
    draw.rectangle([lo - 1, lo - 1, hi + 1, hi + 1], outline=(0, 0, 0), width=1)
    draw.rectangle([lo, lo, hi, hi], outline=(0, 255, 0), width=1)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return png_uri(buf.getvalue())
