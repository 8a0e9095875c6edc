"""``hcd report``: one self-contained HTML page per run, built from a real tiny run trained here in seconds.

The page must open from disk with nothing fetched (every ``<img>`` a data: URI that is a valid PNG, no http(s)
in src/href, no scripts), keep every section id, list exactly the errors ``most_confident_errors`` picks (and
those must be the surest mistakes by brute force), explain each with its own fold's model, and still render
for a run without weights or packed data. The browser check runs where Chromium and Playwright are present.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import packed_subset
from PIL import Image
from typer.testing import CliRunner

from hcd_kit.cli import app
from hcd_kit.report import SECTION_IDS, build_report, most_confident_errors, youden_threshold

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


class Page(HTMLParser):
    """Every tag's attributes, in order (enough to check links, ids and images)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def section(text: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def gallery_ids(text: str, sid: str, kind: str) -> list[str]:
    return [a["data-id"] for a in Page(section(text, sid)).all("figure") if a.get("data-kind") == kind]


@pytest.fixture(scope="module")
def tiny(sample_root, tmp_path_factory):
    """A resnet10t run (2 folds x 2 epochs at 48 px) on 64 real patches, predicted with TTA x2, one ledger record."""
    from hcd_kit.inference import predict_run
    from hcd_kit.kaggle.ledger import LedgerRecord, append_record
    from hcd_kit.training import TrainConfig, train

    root = tmp_path_factory.mktemp("report")
    data = packed_subset(sample_root, root / "data", 64, 8)
    cfg = TrainConfig(
        model="resnet10t",
        pretrained=False,
        device="cpu",
        img_size=48,
        threads=1,
        batch_size=32,
        epochs=2,
        lr=3e-3,
        precision="fp32",
        seed=0,
    )
    run = root / "run"
    train(cfg, data, run)
    predict_run(data, run, tta=2, device="cpu", precision="fp32", batch_size=64)
    rec = LedgerRecord.for_file(run / "submission.csv", "tiny run", "histopathologic-cancer-detection")
    rec.status, rec.public_score, rec.private_score = "COMPLETE", 0.6789, 0.6543
    append_record(root / "ledger.jsonl", rec)
    res = build_report(run, data, ledger=root / "ledger.jsonl", n_errors=5, device="cpu")
    return dict(root=root, data=data, run=run, res=res, html=res.out.read_text(encoding="utf-8"))


def pooled_oof(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p, dtype={"id": str}) for p in sorted(run.glob("fold*/oof.csv"))], ignore_index=True)


def test_the_report_is_one_self_contained_page(tiny):
    text, page = tiny["html"], Page(tiny["html"])
    assert tiny["res"].out == tiny["run"] / "report.html"
    assert text.lstrip().lower().startswith("<!doctype html>") and text.count("<html") == 1
    links = [a.get(k, "") for _, a in page.tags for k in ("src", "href")]
    assert not [u for u in links if re.match(r"\s*(https?:)?//", u, re.I)], "a link leaves the file"
    assert not page.all("script") and not page.all("link") and "@import" not in text and "url(" not in text
    ids = {a["id"] for _, a in page.tags if "id" in a}
    assert set(SECTION_IDS) <= ids
    imgs = page.all("img")
    assert len(imgs) >= 7 + 2 * 5  # plots, then 5 FP / FN tiles and their Grad-CAM (fewer errors may exist)
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1], validate=True))) as im:
            assert im.format == "PNG" and im.size[0] > 0
            im.load()


def test_the_gallery_lists_exactly_the_most_confident_errors(tiny):
    oof = pooled_oof(tiny["run"])
    t = youden_threshold(oof["label"], oof["prob"])
    assert t == pytest.approx(tiny["res"].threshold)
    # the threshold is Youden's: no probability cut-off separates the classes better
    j = lambda c: (
        ((oof["prob"] >= c) & (oof["label"] == 1)).mean() / oof["label"].mean()
        - ((oof["prob"] >= c) & (oof["label"] == 0)).mean() / (1 - oof["label"].mean())
    )  # noqa: E731
    assert j(t) == pytest.approx(max(j(c) for c in oof["prob"].unique()))
    assert f"{t:.4f}" in section(tiny["html"], "confusion")
    fp, fn = most_confident_errors(oof, t, 5)
    rows = list(zip(oof["id"], oof["prob"], oof["label"]))
    brute_fp = [i for i, p, y in sorted(rows, key=lambda r: (-r[1], r[0])) if y == 0 and p >= t][:5]
    brute_fn = [i for i, p, y in sorted(rows, key=lambda r: (r[1], r[0])) if y == 1 and p < t][:5]
    assert fp["id"].tolist() == brute_fp and fn["id"].tolist() == brute_fn
    assert len(brute_fp) + len(brute_fn) > 0
    assert gallery_ids(tiny["html"], "errors", "fp") == brute_fp
    assert gallery_ids(tiny["html"], "errors", "fn") == brute_fn
    assert gallery_ids(tiny["html"], "gradcam", "fp") == brute_fp
    assert gallery_ids(tiny["html"], "gradcam", "fn") == brute_fn
    fold_of = dict(zip(oof["id"], oof["fold"]))
    for a in Page(section(tiny["html"], "errors")).all("figure"):
        assert int(a["data-fold"]) == fold_of[a["data-id"]]


@pytest.mark.parametrize("seed", range(20))
def test_most_confident_errors_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    oof = pd.DataFrame(
        {
            "id": [f"{i:04x}" for i in rng.permutation(n)],
            "fold": rng.integers(0, 3, n),
            "prob": rng.choice(np.linspace(0, 1, 11), n),
            "label": rng.integers(0, 2, n),
        }
    )  # many ties
    t, k = float(rng.choice([0.3, 0.5, 0.7])), int(rng.integers(0, 8))
    fp, fn = most_confident_errors(oof, t, k)
    rows = list(oof.itertuples(index=False))
    want_fp = [r.id for r in sorted(rows, key=lambda r: (-r.prob, r.id)) if r.label == 0 and r.prob >= t][:k]
    want_fn = [r.id for r in sorted(rows, key=lambda r: (r.prob, r.id)) if r.label == 1 and r.prob < t][:k]
    assert fp["id"].tolist() == want_fp and fn["id"].tolist() == want_fn
    assert list(fp.columns) == list(oof.columns)


def test_gradcam_maps_come_from_each_patch_s_own_fold_model(tiny):
    import torch

    from hcd_kit.data import open_store
    from hcd_kit.inference.runs import load_fold_model
    from hcd_kit.report import GradCam
    from hcd_kit.runs.model import read_run_model

    cams = tiny["res"].cams
    assert [c.id for c in cams] == [c.id for c in tiny["res"].fp + tiny["res"].fn]
    for c in cams:
        assert c.cam.shape == (96, 96) and np.isfinite(c.cam).all() and c.cam.min() >= 0 and c.cam.max() <= 1
        assert c.cam.max() == 1 or c.remark  # scaled to [0, 1], or said to be empty
    live = [c for c in cams if not c.remark]
    assert live and all(c.cam.std() > 0 for c in live)  # non-constant wherever there is evidence
    run, spec = tiny["run"], read_run_model(tiny["run"])
    store = open_store(tiny["data"] / "packed", "train")
    c = live[0]
    patch = np.asarray(store.images[store.index_of([c.id])[0]])
    models = {k: load_fold_model(run, k, spec, torch.device("cpu")) for k in (0, 1)}
    own = GradCam(models[c.fold], spec.img_size)(patch, positive=c.prob >= tiny["res"].threshold)
    other = GradCam(models[1 - c.fold], spec.img_size)(patch, positive=c.prob >= tiny["res"].threshold)
    assert np.allclose(own, c.cam, atol=1e-5) and not np.allclose(other, c.cam, atol=1e-3)


def test_gradcam_finds_a_bright_square_with_a_hand_made_cnn():
    import torch
    from torch import nn

    from hcd_kit.report import GradCam

    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_(), conv.bias.zero_()
        conv.weight[0, :, 0, 0] = 1.0  # channel 0: brightness (positive where the patch is bright)
        conv.weight[1, :, 0, 0] = -1.0
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor([[1.0, 0.0]]))
    patch = np.zeros((96, 96, 3), np.uint8)
    patch[8:40, 56:88] = 255
    cam = GradCam(model, 96)(patch, positive=True)
    assert cam.shape == (96, 96) and cam.max() == 1
    assert cam[8:40, 56:88].mean() > 0.9 and cam[50:, :40].max() < 0.05
    assert GradCam(model, 96)(patch, positive=False).max() == 0  # no evidence for "normal": an empty map


def test_gradcam_of_a_vit_uses_the_last_block_on_the_patch_grid():
    import timm

    from hcd_kit.report import GradCam

    model = timm.create_model("vit_tiny_patch16_224", img_size=48, depth=2, num_classes=1, pretrained=False)
    cam = GradCam(model, 48)
    assert cam.layer_name == "blocks.1.norm1"
    m = cam(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8), positive=True)
    assert m.shape == (96, 96) and np.isfinite(m).all()


def test_the_other_sections_hold_what_the_run_says(tiny):
    text, run = tiny["html"], tiny["run"]
    subs = section(text, "submissions")
    assert "0.6789" in subs and "0.6543" in subs and "COMPLETE" in subs and "tiny run" in subs
    assert "resnet10t" in section(text, "config") and "augment.color" in section(text, "config")
    assert "TTA x2" in section(text, "oof-auc") and "pooled" in section(text, "oof-auc")
    log = (run / "train.log").read_text()
    for k, epoch in re.findall(r"fold (\d+): best val AUC [\d.]+ \(epoch (\d+)/", log):
        assert re.search(
            rf"<td class=\"num\">{k}</td><td class=\"num\">2</td><td class=\"num\">{epoch}</td>",
            section(text, "learning-curves"),
        )
    times = section(text, "training-time")
    assert times.count("<tr>") == 3 and "sessions" in times
    assert "torch" in section(text, "environment") and "packed train" in section(text, "environment")
    trained = json.loads((run / "environment.json").read_text())  # what `hcd train` recorded, and why
    env = section(text, "environment")
    assert f"{trained['precision']} ({trained['precision_reason']})" in env and trained["cpu_isa"] in env


def test_fold_times_sum_the_sessions_of_a_resumed_fold(tmp_path):
    from hcd_kit.layout import RunLayout
    from hcd_kit.report.data import fold_times

    (tmp_path / "train.log").write_text(
        "2026-01-01 10:00:00 train resnet18 @ 96px on cuda, precision fp16, folds [0, 1] -> runs/x\n"
        "2026-01-01 10:00:00 fold 0: 100 train / 50 val images, 1 steps/epoch of 100; trainable 1M of 1M\n"
        "2026-01-01 10:01:00 fold 0 epoch 1/3: train_loss 0.6 val_loss 0.6 val_auc 0.7 * lr 1e-3\n"
        "2026-01-01 10:02:30 fold 0 epoch 2/3: train_loss 0.5 val_loss 0.5 val_auc 0.8 * lr 1e-3\n"
        "2026-01-01 10:02:31 fold 0: interrupted; last.pt keeps the last finished epoch\n"
        "2026-01-01 11:00:00 fold 0: resuming after epoch 2 (best val AUC so far 0.8000)\n"
        "2026-01-01 11:00:01 fold 0: 100 train / 50 val images, 1 steps/epoch of 100; trainable 1M of 1M\n"
        "2026-01-01 11:01:00 fold 0 epoch 3/3: train_loss 0.4 val_loss 0.5 val_auc 0.8 lr 1e-5\n"
        "2026-01-01 11:01:00 fold 1: 100 train / 50 val images, 1 steps/epoch of 100; trainable 1M of 1M\n"
    )
    times = fold_times(RunLayout.of(tmp_path))
    assert [(t.fold, t.seconds, t.epochs, t.sessions) for t in times] == [(0, 150.0 + 60.0, 3, 2)]


def test_a_run_without_weights_or_packed_data_still_renders(tiny, tmp_path):
    probe = tmp_path / "probe"
    drop = shutil.ignore_patterns("*.pt", "history.csv", "report.html", "train.log")
    shutil.copytree(tiny["run"], probe, ignore=drop)
    (probe / "config.toml").write_text('kind = "probe"\nmodel = "resnet10t"\nimg_size = 48\n')
    res = runner.invoke(
        app,
        [
            "report",
            "--run-dir",
            str(probe),
            "--data-dir",
            str(tiny["data"]),
            "--ledger",
            str(tmp_path / "none.jsonl"),
            "--n-errors",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    text = (probe / "report.html").read_text()
    assert set(SECTION_IDS) <= {a["id"] for _, a in Page(text).tags if "id" in a}
    assert "probe" in section(text, "learning-curves") and "no Grad-CAM" in section(text, "gradcam")
    assert len(gallery_ids(text, "errors", "fp")) == min(3, len(tiny["res"].fp))  # patches still shown
    # a trained run whose weights and packed store are gone: notes where the images were
    bare = tmp_path / "bare"
    shutil.copytree(tiny["run"], bare, ignore=shutil.ignore_patterns("best.pt", "report.html"))
    out = tmp_path / "out" / "bare.html"
    res = runner.invoke(
        app,
        [
            "report",
            "--run-dir",
            str(bare),
            "--data-dir",
            str(tmp_path / "nodata"),
            "--out",
            str(out),
            "--ledger",
            str(tmp_path / "none.jsonl"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "patches not shown" in section(text, "errors") and "patches not shown" in section(text, "gradcam")
    assert "<img" not in section(text, "errors") and "<img" in section(text, "learning-curves")


def test_a_damaged_fold_weights_file_is_a_note_not_a_failure(tiny, tmp_path):
    run = tmp_path / "damaged"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("report.html"))
    (run / "fold1" / "best.pt").write_bytes(b"not a weights file")
    res = build_report(run, tiny["data"], ledger=tmp_path / "none.jsonl", n_errors=5, device="cpu")
    text = res.out.read_text(encoding="utf-8")
    assert "fold 1:" in section(text, "gradcam") and "is damaged (not a torch file)" in section(text, "gradcam")
    assert "<img" in section(text, "gradcam") or all(c.fold == 1 for c in res.fp + res.fn)  # fold 0 still explained


def test_bad_input_is_one_line(tmp_path):
    res = runner.invoke(app, ["report", "--run-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "run").mkdir()
    res = runner.invoke(app, ["report", "--run-dir", str(tmp_path / "run"), "--n-errors", "-1"])
    assert res.exit_code == 2 and "--n-errors" in res.stderr


def test_cv_says_where_the_report_is(tiny):
    res = runner.invoke(app, ["cv", "--run-dir", str(tiny["run"]), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert f"report: {tiny['run'] / 'report.html'} (hcd report --run-dir {tiny['run']})" in res.stdout


def test_help_loads_neither_jinja2_nor_matplotlib():
    code = (
        "import sys; from hcd_kit.cli import app; from typer.main import get_command; get_command(app); "
        "print(sorted(m for m in ('jinja2', 'matplotlib', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_page_passes_the_browser_check(tiny, tmp_path):
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright); browser check skipped")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium); browser check skipped")
    shot = tmp_path / "page.png"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "report_browser.py"),
            "--report",
            str(tiny["res"].out),
            "--screenshot",
            str(shot),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    facts = json.loads(res.stdout)
    assert facts["ok"] and facts["sections"] == len(SECTION_IDS) and facts["external_requests"] == 0
    assert facts["images"] == facts["images_loaded"] == len(Page(tiny["html"]).all("img"))
    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] > 2000


def synthetic_history(n_epochs: int, rng) -> pd.DataFrame:
    e = np.arange(1, n_epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "lr": 3e-3 * np.cos(np.linspace(0, 1.5, n_epochs)) ** 2,
            "train_loss": 0.7 * np.exp(-e / (n_epochs / 2)) + rng.uniform(0, 0.05, n_epochs),
            "val_loss": 0.7 * np.exp(-e / (n_epochs / 1.5)) + 0.1 + rng.uniform(0, 0.08, n_epochs),
            "val_auc": 0.6 + 0.35 * (1 - np.exp(-e / (n_epochs / 3))) + rng.uniform(0, 0.03, n_epochs),
            "images_per_s": 100.0,
            "skipped_steps": 0,
        }
    )


def plot_figure(kind: str):
    from hcd_kit.metrics import calibration
    from hcd_kit.report import figures

    rng = np.random.default_rng(0)
    if kind.startswith("curves"):
        folds, epochs = map(int, kind.split("-")[1].split("x"))
        return figures.learning_curves_figure({k: synthetic_history(epochs, rng) for k in range(folds)})
    n = 2000
    oof = pd.DataFrame(
        {"id": [str(i) for i in range(n)], "fold": rng.integers(0, 5, n), "label": rng.integers(0, 2, n)}
    )
    oof["prob"] = np.clip(0.4 * oof["label"] + rng.uniform(0, 0.6, n), 0, 1)
    if kind == "roc_pr":
        return figures.roc_pr_figure(oof, {2: oof.assign(prob=oof["prob"] ** 1.1), 8: oof})
    if kind == "reliability":
        return figures.reliability_figure(calibration(oof["label"], oof["prob"]))
    auc = {"1 view": [0.97, 0.98, 0.99, 0.97, 0.98], "TTA x8": [0.98, 0.99, 0.995, 0.98, 0.99]}
    return figures.auc_bars_figure(auc, ["fold 0", "fold 1", "fold 2", "fold 3", "pooled"])


def overlap(a, b, tol: float = 0.5) -> bool:
    """Whether two display boxes share more than a sliver (``tol`` pixels) each way."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


@pytest.mark.parametrize(
    "kind", ["curves-1x6", "curves-2x6", "curves-5x6", "curves-5x60", "roc_pr", "reliability", "bars"]
)
def test_plot_panels_do_not_overlap(kind):
    """Drawn as the report saves it: every legend stays off every panel's data area and off every label; no
    panel's tick labels, axis labels or title reach into another panel or its labels; and no two tick labels of
    one axis touch (many epochs, five folds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot_figure(kind)
    fig.set_dpi(96)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()

    def ticks(axis):
        lo, hi = sorted(axis.get_view_interval())
        eps = 1e-9 * max(1.0, hi - lo)
        on = [t.label1 for t in axis.get_major_ticks() if lo - eps <= t.get_loc() <= hi + eps]
        return [t for t in on if t.get_visible() and t.get_text()]

    def labels(ax):
        texts = [*ticks(ax.xaxis), *ticks(ax.yaxis), ax.xaxis.label, ax.yaxis.label, ax.title]
        texts += [ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text()]
        return [t.get_window_extent(r) for t in texts if t.get_visible() and t.get_text()]

    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend())]
    assert legends, "the figure has a legend"
    for legend in legends:
        box = legend.get_window_extent(r)
        for ax in axes:
            assert not overlap(box, ax.get_window_extent(r)), f"a legend lies on the data of '{ax.get_title()}'"
            assert not any(overlap(box, b) for b in labels(ax)), f"a legend lies on the labels of '{ax.get_title()}'"
    for i, a in enumerate(axes):
        for axis in (a.xaxis, a.yaxis):
            boxes = sorted((t.get_window_extent(r) for t in ticks(axis)), key=lambda b: (b.x0, b.y0))
            assert not any(overlap(p, q) for p, q in zip(boxes, boxes[1:])), "two tick labels of one axis touch"
        for b in axes[i + 1 :]:
            for box in labels(a):
                assert not overlap(box, b.get_window_extent(r)), "a label reaches into the next panel"
                assert not any(overlap(box, other) for other in labels(b)), "two panels' labels collide"
            for box in labels(b):
                assert not overlap(box, a.get_window_extent(r)), "a label reaches into the previous panel"
