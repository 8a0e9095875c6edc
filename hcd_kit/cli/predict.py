"""Commands: predict (a run's folds + TTA -> submission.csv) and ensemble (blend several runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.choices import BlendMode, TtaViews
from hcd_kit.cli._app import Device, FoldsToUse, PrecisionOption, ViewBatch, command, parse_folds


def _auc(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"


@command()
def predict(
    run_dir: Annotated[
        Path, typer.Option(metavar="DIR", help="Run folder written by `hcd train` (config.toml + fold*/best.pt).")
    ],
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            show_default="the folder the run trained on (RUN_DIR/data.json), else ./data",
            help="Competition folder: needs test/ (or a packed test store) and sample_submission.csv.",
        ),
    ] = None,
    tta: Annotated[
        TtaViews, typer.Option(help="Dihedral views per patch: 1 (none), 2 (+h-flip), 4 (+v-flip, 180), 8 (all of D4).")
    ] = 8,
    out: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE", show_default=False, help="Submission CSV to write \\[default: RUN_DIR/ submission.csv]."
        ),
    ] = None,
    blend: Annotated[BlendMode, typer.Option(help="How to average folds: mean (probability) or rank.")] = "mean",
    device: Device = "auto",
    precision: PrecisionOption = "auto",
    batch_size: ViewBatch = 256,
    fold: FoldsToUse = "all",
    oof: Annotated[
        bool,
        typer.Option(
            metavar="",
            help="Also re-score each fold's validation ids with 1 and with --tta views (needs the packed train store).",
        ),
    ] = True,
) -> None:
    """Predict the test set with every fold of a run, with test-time augmentation, and write a submission.

    Each fold's best.pt scores every test patch in --tta flipped/rotated views, stacked into batches on
    the device; views are averaged as probabilities, then folds (mean or rank). Writes id,label in exactly
    the order of sample_submission.csv (packing test/ first if needed) and OUT.json with runs, folds, tta,
    ensemble and cv_auc, which `hcd submit` records. With the packed train store present it also reports
    the out-of-fold AUC with 1 view and with --tta views, so you see what TTA buys, and keeps the --tta-view
    OOF predictions as RUN_DIR/oof_tta{N}.csv, so that `hcd ensemble` weighs this run by OOF made like its
    test predictions.

    Example: hcd predict --run-dir runs/r18 --tta 8 --out subs/r18_tta8.csv
    """
    from hcd_kit.console import console
    from hcd_kit.inference import predict_run, signed

    res = predict_run(
        data_dir,
        run_dir,
        tta=tta,
        out=out,
        blend=blend,
        device=device,
        batch_size=batch_size,
        folds=parse_folds(fold),
        precision=precision,
        oof=oof,
    )  # type: ignore[arg-type]
    if res.oof is not None:
        console.print(f"OOF AUC  fold    n   1 view   {res.tta} views")
        for k, n, a1, an in res.oof.per_fold:
            console.print(f"         {k:>4} {n:>4}   {_auc(a1):>6}   {_auc(an):>7}")
        gain = res.oof.auc_n - res.oof.auc_1
        what = f"   (TTA x{res.tta}: {signed(gain)})" if gain == gain else ""  # NaN when a class is missing
        console.print(
            f"OOF AUC  all  {sum(r[1] for r in res.oof.per_fold):>4}   {_auc(res.oof.auc_1):>6}   "
            f"{_auc(res.oof.auc_n):>7}{what}"
        )
    if res.note:
        console.print(f"note: {res.note}", soft_wrap=True)
    if res.oof_file is not None:
        console.print(f"wrote {res.oof_file} (OOF with TTA x{res.tta}, for `hcd ensemble`)", soft_wrap=True)
    console.print(
        f"folds {','.join(map(str, res.folds))} | tta {res.tta} | ensemble {res.ensemble} | "
        f"{res.n_images} test patches at {res.images_per_s:,.0f} img/s per fold"
    )
    console.print(f"wrote {res.out} (cv_auc {_auc(res.cv_auc)}) and {res.sidecar.name}", soft_wrap=True)


@command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", hidden=True)],  # described in the docstring
    out: Annotated[Path, typer.Option(metavar="FILE", help="Blended submission CSV to write.")],
    weights: Annotated[
        Optional[str],
        typer.Option(
            metavar="W,W,...|auto",
            show_default="equal",
            help="One weight per run, e.g. 0.6,0.4 (normalised to sum 1), or auto: the weights and blend with the best OOF AUC, with a nested check of what they gain.",
        ),
    ] = None,
    blend: Annotated[
        Optional[BlendMode],
        typer.Option(
            show_default="mean; with --weights auto: the better of mean and rank",
            help="mean (probabilities) or rank (mean of per-run ranks). With --weights auto, giving it restricts the search to that mode.",
        ),
    ] = None,
    pred: Annotated[
        Optional[list[Path]],
        typer.Option(
            metavar="FILE",
            show_default="RUN_DIR/submission.csv",
            help="Test predictions of one run (repeat once per run, in order).",
        ),
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            metavar="DIR",
            show_default="the first run's order",
            help="If given, the output follows DIR/sample_submission.csv's ids and order.",
        ),
    ] = None,
) -> None:
    """Blend the predictions of several runs and report each run's OOF AUC and the blend's.

    RUN_DIR...: the run folders to blend, each with submission.csv and fold*/oof.csv.
    Test predictions come from each RUN_DIR/submission.csv (written by `hcd predict`) or --pred files. OOF
    predictions are aligned by id (all runs must cover the same OOF ids) and made like the test ones: when
    a prediction used TTA xN and `hcd predict` wrote RUN_DIR/oof_tta{N}.csv, that file, else the 1-view
    RUN_DIR/fold*/oof.csv (a note says when runs mix the two). Writes OUT (id order of the first run, or of
    sample_submission.csv with --data-dir) and OUT.json for the submit ledger.

    --weights auto searches weights (a 0.05 grid for 2 runs, 0.1 for 3, coordinate search beyond) and
    mean vs rank for the best pooled OOF AUC. The gain it reports is nested: the OOF ids are split into 5
    stratified parts, and each part is scored with the weights chosen on the other four, next to equal
    weights on the same part. The final weights are then fitted on all OOF ids and applied to the test set.

    Example: hcd ensemble runs/r18 runs/effb0 --weights 0.6,0.4 --blend rank --out subs/blend.csv

    Example: hcd ensemble runs/r18 runs/effb0 --weights auto --out subs/auto.csv --data-dir data
    """
    from hcd_kit.console import console
    from hcd_kit.inference import ensemble_runs, parse_weights, signed

    res = ensemble_runs(runs, out, weights=parse_weights(weights, len(runs)), blend=blend, pred=pred, data_dir=data_dir)
    for run, w, auc, v in zip(res.runs, res.weights, res.run_auc, res.oof_views):
        what = "" if v is None else f"  ({f'TTA x{v}' if v > 1 else '1 view'} OOF)"
        console.print(f"OOF AUC {_auc(auc)}  weight {w:.3f}  {run}{what}", soft_wrap=True)
    for note in res.notes:
        console.print(f"note: {note}", soft_wrap=True)
    if (c := res.search) is not None:
        searched = "mean and rank" if blend is None else f"{blend} only"
        console.print(
            f"weights auto: {c.mode} blend, weights {','.join(f'{x:.2f}' for x in c.weights)} "
            f"(searched {searched}; fitted on all {res.n_oof} OOF ids)",
            soft_wrap=True,
        )
        console.print(
            f"nested OOF AUC ({c.n_parts} held-out parts): auto {_auc(c.nested_auc)} vs equal-weight "
            f"{c.baseline_mode} {_auc(c.nested_equal_auc)} ({signed(c.nested_gain)})",
            soft_wrap=True,
        )
    if res.blend_auc is not None:
        fitted = "; weights fitted on these ids" if res.search is not None else ""
        console.print(f"OOF AUC {_auc(res.blend_auc)}  blend ({res.how}, {res.n_oof} ids{fitted})")
    console.print(f"wrote {res.out} ({res.n_test} rows) and {res.sidecar.name}", soft_wrap=True)
