"""Command: evaluate (score a finished run on a labelled folder it never saw)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hcd_kit.choices import TtaViews
from hcd_kit.cli._app import Device, FoldsToUse, PrecisionOption, ViewBatch, command, parse_folds


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def print_evaluation(record: dict[str, Any], path: Path, notes: list[str]) -> None:
    """The evaluation in a few lines: AUC [interval], fold AUCs, threshold scores, calibration, the file."""
    from hcd_kit.console import console

    lo, hi = record["auc_ci"]
    ci = f" [{_num(lo)}, {_num(hi)}]" if lo is not None else ""
    console.print(
        f"AUC {_num(record['auc'])}{ci} on {record['n']} patches ({record['positives']} positive) "
        f"of {record['data_dir']}",
        soft_wrap=True,
    )
    if lo is not None:
        boot = record["bootstrap"]
        console.print(f"    95 % bootstrap interval: {boot['resamples']} resamples, seed {boot['seed']}")
    folds = "  ".join(f"{k}: {_num(a)}" for k, a in record["fold_auc"].items())
    console.print(f"fold AUC  {folds}   (ensemble of {len(record['fold_auc'])}, TTA x{record['tta']})")
    at = record["at_threshold"]
    console.print(
        f"at threshold {record['threshold']:.4f} (Youden, from {record['threshold_source']}): accuracy "
        f"{_num(at['accuracy'], 3)}, sensitivity {_num(at['sensitivity'], 3)}, specificity "
        f"{_num(at['specificity'], 3)}  (TP {at['tp']} FP {at['fp']} TN {at['tn']} FN {at['fn']})",
        soft_wrap=True,
    )
    cal = record["calibration"]
    console.print(
        f"calibration: Brier {_num(cal['brier'])}, ECE {_num(cal['ece'])} ({cal['bins']} bins), "
        f"mean predicted {_num(cal['mean_prob'], 3)} vs observed {_num(cal['observed_rate'], 3)}",
        soft_wrap=True,
    )
    for note in notes:
        console.print(f"note: {note}", soft_wrap=True)
    console.print(f"wrote {path} (shown by `hcd report --run-dir {Path(record['run_dir'])}`)", soft_wrap=True)


@command()
def evaluate(
    run_dir: Annotated[Path, typer.Option(metavar="DIR", help="Run folder written by `hcd train` or `hcd probe`.")],
    data_dir: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Labelled folder in the competition layout: train/*.tif + train_labels.csv (packed first if needed).",
        ),
    ],
    tta: Annotated[
        Optional[TtaViews],
        typer.Option(
            show_default="8; a probe run: its feature store's views",
            help="Dihedral views per patch: 1 (none), 2 (+h-flip), 4 (+v-flip, 180), 8 (all of D4).",
        ),
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            show_default="the data folder's name",
            help="Name of the evaluation; it is kept as evaluations/NAME.json in the run folder.",
        ),
    ] = None,
    allow_overlap: Annotated[
        bool,
        typer.Option(
            "--allow-overlap",
            metavar="",
            help="Score a folder that shares ids with the run's training data; the overlap is reported.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="Replace an existing evaluation of the same name.")
    ] = False,
    bootstrap: Annotated[
        int,
        typer.Option(metavar="N", help="Bootstrap resamples for the AUC's 95 % interval (seed 0); 0 for none."),
    ] = 1000,
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    batch_size: ViewBatch = 256,
    fold: FoldsToUse = "all",
) -> None:
    """Score a finished run on labelled patches it never saw: another hospital's, a held-back slice, a colleague's.

    Every labelled patch of --data-dir is predicted as `hcd predict` predicts the test set (each fold's
    best.pt in --tta views, views then folds averaged as probabilities). Reports the ensemble's AUC with
    a bootstrap 95 % interval, each fold's AUC, accuracy / sensitivity / specificity at the Youden
    threshold of the run's own out-of-fold predictions (oof_tta{N}.csv when `hcd predict --tta N` wrote
    it), and calibration (Brier score, expected calibration error, mean predicted vs observed rate).
    Writes RUN_DIR/evaluations/NAME.json, which `hcd report` lists. A folder that shares ids with the
    data the run trained on (RUN_DIR/folds.csv) is refused unless --allow-overlap, which also scores the
    unseen patches alone.

    A probe run (`hcd probe`) keeps no fitted model: its probes are fitted again from its feature store
    (checked against its oof.csv), the folder is embedded with the store's backbone settings, and the
    probes score every view of it, as in the probe's own predictions.

    Example: hcd evaluate --run-dir runs/r18 --data-dir hospital-b --tta 8
    """
    from hcd_kit.runs import run_kind

    options = dict(
        name=name,
        allow_overlap=allow_overlap,
        force=force,
        device=device,
        batch_size=batch_size,
        folds=parse_folds(fold),
        precision=precision,
        n_boot=bootstrap,
    )
    if run_kind(run_dir) == "probe":
        from hcd_kit.features import evaluate_probe

        res = evaluate_probe(run_dir, data_dir, tta=tta, **options)  # type: ignore[arg-type]
    else:
        from hcd_kit.inference import evaluate_run

        res = evaluate_run(run_dir, data_dir, tta=8 if tta is None else tta, **options)  # type: ignore[arg-type]
    print_evaluation(res.record, res.path, res.notes)
