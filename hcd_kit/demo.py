"""``hcd demo``: the whole pipeline, offline, on real patches, in a few minutes on a laptop CPU.

Steps: lay out the data (the sample shipped in ``assets/demo.zip``, or any competition-layout folder) ->
``prepare`` (pack) -> ``folds`` -> a loader throughput readout -> ``train`` every fold of a small model
from scratch -> ``cv`` (out-of-fold AUC and plots) -> ``predict`` with TTA x8 and the fold ensemble ->
a validated ``submission.csv``. Everything is written under one working folder; the input data folder
is only read (symlinked), so the demo can run on read-only data such as a Kaggle input mount.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from hcd_kit.config import load_config
from hcd_kit.console import console
from hcd_kit.data import materialise
from hcd_kit.errors import DataError
from hcd_kit.layout import DataLayout, RunLayout
from hcd_kit.locks import holding

DEMO_RECIPE = "cpu"  # resnet10t from scratch, tuned on hcd-mini (hcd_kit/assets/recipes/cpu.toml)
# The shipped sample trains for as many of the recipe's epochs as fit this budget (training + the TTA x8
# prediction; the planner measures this machine first), so `hcd demo` ends in about 3 minutes on any 2-core CPU:
# ~7 epochs where bf16 is emulated (AVX2: fp32), ~15 where it is native. A folder of your own (--data-dir) or
# --epochs trains what was asked, however long it takes.
DEMO_BUDGET = "2m"
INPUT_ENTRIES = ("train", "test", "train_labels.csv", "sample_submission.csv")


@dataclass
class DemoResult:
    work_dir: Path
    data_dir: Path
    n_train: int = 0
    n_test: int = 0
    prepare_ips: dict[str, float] = field(default_factory=dict)
    loader_ips: float = 0.0
    cv_auc: float = float("nan")
    fold_aucs: list[float] = field(default_factory=list)
    oof_auc_1view: float | None = None
    oof_auc_tta: float | None = None
    submission: Path | None = None
    plots: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    config: object = None  # the TrainConfig it trained
    precision: str = ""  # what it trained in, and why (RUN/environment.json)


def link_inputs(src: Path, dest: Path) -> DataLayout:
    """A writable competition folder at ``dest`` whose inputs are symlinks into (read-only) ``src``."""
    src = src.resolve()
    missing = [e for e in ("train", "train_labels.csv") if not (src / e).exists()]
    if missing:
        raise DataError(f"{src} is not a competition folder: {missing[0]} is missing")
    dest.mkdir(parents=True, exist_ok=True)
    for entry in INPUT_ENTRIES:
        link = dest / entry
        if (src / entry).exists() and not link.exists():
            link.symlink_to(src / entry, target_is_directory=(src / entry).is_dir())
    return DataLayout.of(dest)


def loader_throughput(packed_dir: Path, batch_size: int = 256, epochs: int = 3) -> float:
    """Images/s that ``BatchLoader`` delivers from the packed train store (warm cache, shuffled)."""
    from hcd_kit.data import BatchLoader, open_store

    store = open_store(packed_dir, "train")
    loader = BatchLoader(store.images, store.labels, batch_size=batch_size, seed=0)
    for _ in loader:  # warm the page cache
        pass
    n, start = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        n += sum(len(b.index) for b in loader)
    return n / max(time.perf_counter() - start, 1e-9)


@holding(lambda a: a["work_dir"], "hcd demo", "wait for it to finish (or stop it), or use another --work-dir")
def run_demo(
    work_dir: str | os.PathLike[str] = "hcd-demo",
    data_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    tta: int = 8,
    seed: int = 0,
    recipe: str = DEMO_RECIPE,
    time_budget: str | None = None,
) -> DemoResult:
    """Run the offline pipeline end to end (see module docstring) and return what it measured.

    Trains ``recipe`` (``cpu``: exactly what ``hcd train --recipe cpu --no-pretrained`` trains) with
    ``model``, ``epochs``, ``batch_size`` and ``seed`` overriding it where given. ``time_budget`` (training and
    prediction, as ``hcd train --time-budget``) defaults to ``DEMO_BUDGET`` for the shipped sample without
    ``epochs``, and to none otherwise.
    """
    from hcd_kit.data import create_folds, prepare
    from hcd_kit.inference import predict_run
    from hcd_kit.report import write_plots
    from hcd_kit.runs import cv_report, validate_submission
    from hcd_kit.training import recipe_config, train

    work = Path(work_dir)
    clock = time.perf_counter()

    def step(title: str) -> None:
        nonlocal clock
        console.rule(f"[bold]{title}")
        clock = time.perf_counter()

    def done(key: str) -> None:
        res.seconds[key] = time.perf_counter() - clock

    if data_dir is None:
        layout = materialise(work / "data")
        source = "the real patches shipped with hcd (hcd_kit/assets/demo.zip)"
    else:
        layout = link_inputs(Path(data_dir), work / "data")
        source = str(Path(data_dir).resolve())
    res = DemoResult(work_dir=work, data_dir=layout.root)
    console.print(f"Data: {source}, laid out as a competition folder in {layout.root}")

    step("1. hcd prepare: decode every TIFF once into a memory-mapped store")
    summary = prepare(layout.root)
    for name, split in summary.splits.items():
        res.prepare_ips[name] = split.images_per_s
        console.print(
            f"{name}: {split.count} patches" + ("" if split.up_to_date else f", {split.images_per_s:,.0f} images/s")
        )
    res.n_train = summary.splits["train"].count
    res.n_test = summary.splits["test"].count if "test" in summary.splits else 0
    done("prepare")

    step("2. hcd folds: stratified 5-fold split")
    folds = create_folds(layout.root, n_folds=5, seed=0)
    console.print(f"wrote {folds.path}: " + ", ".join(f"fold {k}: {n}" for k, n in enumerate(folds.counts)))
    done("folds")

    step("3. loader throughput (what feeds the GPU)")
    res.loader_ips = loader_throughput(layout.packed_dir)
    console.print(f"BatchLoader delivers {res.loader_ips:,.0f} images/s from the packed store")
    done("loader")

    if time_budget is None and data_dir is None and epochs is None:
        time_budget = DEMO_BUDGET
    cfg = recipe_config(
        recipe,
        {
            "model": model,
            "epochs": epochs,
            "batch_size": batch_size,
            "device": device,
            "seed": seed,
            "pretrained": False,
            "time_budget": time_budget,
        },
    )
    step(f"4. hcd train --recipe {recipe}: {cfg.model} from scratch, all 5 folds")
    if time_budget:  # a line of its own: a rule's title is cut to the terminal's width
        console.print(
            f"as many of the recipe's {cfg.epochs} epochs as fit a {time_budget} budget for training and "
            "prediction: the time plan measures this machine first",
            soft_wrap=True,
        )
    run_dir = work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo's own folder: a fresh run every time
    train(cfg, layout.root, run_dir)
    run = RunLayout.of(run_dir)
    res.config = load_config(type(cfg), run.config)  # the epochs the budget chose
    env = json.loads(run.environment.read_text(encoding="utf-8"))
    res.precision = f"{env['precision']} ({env['precision_reason']}), {env['threads']} CPU thread(s)"
    done("train")

    step("5. hcd cv: out-of-fold AUC")
    report = cv_report(run_dir)
    res.cv_auc = report.overall_auc
    res.fold_aucs = [f.auc for f in report.folds]
    res.plots = write_plots(report)
    console.print(f"OOF AUC {report.overall_auc:.4f} (folds: {', '.join(f'{a:.3f}' for a in res.fold_aucs)})")
    done("cv")

    if res.n_test:
        step(f"6. hcd predict: TTA x{tta} over flips and rotations, mean of the 5 fold models")
        pred = predict_run(layout.root, run_dir, tta=tta, out=work / "submission.csv", device=device)
        if pred.oof is not None:
            res.oof_auc_1view, res.oof_auc_tta = pred.oof.auc_1, pred.oof.auc_n
            console.print(f"OOF AUC: 1 view {pred.oof.auc_1:.4f} -> TTA x{tta} {pred.oof.auc_n:.4f}")
        validate_submission(pred.out, layout.sample_submission)
        res.submission = pred.out
        console.print(f"{pred.out}: {pred.n_images} rows, validated against {layout.sample_submission.name}")
        done("predict")
    return res
