"""Commands: predict (a run's folds + TTA -> submission.csv) and ensemble (blend several runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import app, fail, handle_errors

TTA_VALUES = (1, 2, 4, 8)


def _auc(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"


@app.command()
@handle_errors
def predict(
    data_dir: Annotated[Path, typer.Option(help="Competition folder: needs test/ (or a packed test store) and sample_submission.csv.")],
    run_dir: Annotated[Path, typer.Option(help="Run folder written by `hcd train` (config.toml + fold*/best.pt).")],
    tta: Annotated[int, typer.Option(help="Dihedral views per patch: 1 (none), 2 (+h-flip), 4 (+v-flip, 180), 8 (all of D4).")] = 8,
    out: Annotated[Optional[Path], typer.Option(help="Submission CSV to write (default: RUN/submission.csv).")] = None,
    ensemble: Annotated[str, typer.Option(help="How to average folds: mean (probability) or rank.")] = "mean",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="Autocast: auto (fp16 on CUDA, bf16 on CPU), fp16, bf16 or fp32.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Views per forward pass (batch-size / tta patches in all their views); raise it on a big GPU.")] = 256,
    folds: Annotated[str, typer.Option(help="Folds to use: all, or a list such as 0,2.")] = "all",
    oof: Annotated[bool, typer.Option(help="Also re-score each fold's validation ids with 1 and with --tta views (needs the packed train store).")] = True,
) -> None:
    """Predict the test set with every fold of a run, with test-time augmentation, and write a submission.

    Each fold's best.pt scores every test patch in --tta flipped/rotated views, stacked into batches on
    the device; views are averaged as probabilities, then folds (mean or rank). Writes id,label in exactly
    the order of sample_submission.csv (packing test/ first if needed) and OUT.json with runs, folds, tta,
    ensemble and cv_auc, which `hcd submit` records. With the packed train store present it also reports
    the out-of-fold AUC with 1 view and with --tta views, so you see what TTA buys.

    Example: hcd predict --data-dir data --run-dir runs/r18 --tta 8 --out subs/r18_tta8.csv
    """
    if tta not in TTA_VALUES:
        raise fail(f"--tta must be one of 1, 2, 4, 8, got {tta}", 2)
    if ensemble not in ("mean", "rank"):
        raise fail(f"--ensemble must be 'mean' or 'rank', got {ensemble!r}", 2)
    if precision not in ("auto", "fp16", "bf16", "fp32"):
        raise fail(f"--precision must be auto, fp16, bf16 or fp32, got {precision!r}", 2)
    from hcd_kit.console import console
    from hcd_kit.inference.predict import predict_run

    res = predict_run(data_dir, run_dir, tta=tta, out=out, ensemble=ensemble, device=device,
                      batch_size=batch_size, folds=folds, precision=precision, oof=oof)  # type: ignore[arg-type]
    if res.oof is not None:
        console.print(f"OOF AUC  fold    n   1 view   {res.tta} views")
        for k, n, a1, an in res.oof.per_fold:
            console.print(f"         {k:>4} {n:>4}   {_auc(a1):>6}   {_auc(an):>7}")
        gain = res.oof.auc_n - res.oof.auc_1
        what = f"   (TTA x{res.tta}: {gain:+.4f})" if gain == gain else ""  # NaN when a class is missing
        console.print(f"OOF AUC  all  {sum(r[1] for r in res.oof.per_fold):>4}   {_auc(res.oof.auc_1):>6}   "
                      f"{_auc(res.oof.auc_n):>7}{what}")
    elif res.note:
        console.print(f"note: {res.note}")
    console.print(f"folds {','.join(map(str, res.folds))} | tta {res.tta} | ensemble {res.ensemble} | "
                  f"{res.n_images} test patches at {res.images_per_s:,.0f} img/s per fold")
    console.print(f"wrote {res.out} (cv_auc {_auc(res.cv_auc)}) and {res.sidecar.name}")


@app.command()
@handle_errors
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to blend (each with submission.csv and fold*/oof.csv).")],
    out: Annotated[Path, typer.Option(help="Blended submission CSV to write.")],
    weights: Annotated[Optional[str], typer.Option(help="One weight per run, e.g. 0.6,0.4 (normalised to sum 1; default: equal).")] = None,
    how: Annotated[str, typer.Option(help="mean (probabilities) or rank (mean of per-run ranks).")] = "mean",
    pred: Annotated[Optional[list[Path]], typer.Option(help="Test predictions per run instead of RUN/submission.csv (repeat once per run, in order).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="If given, the output follows DIR/sample_submission.csv's ids and order.")] = None,
) -> None:
    """Blend the predictions of several runs and report each run's OOF AUC and the blend's.

    Test predictions come from each RUN/submission.csv (written by `hcd predict`) or --pred files; OOF
    predictions from each RUN/fold*/oof.csv, aligned by id (all runs must cover the same OOF ids). Writes
    OUT (id order of the first run, or of sample_submission.csv with --data-dir) and OUT.json for the
    submit ledger.

    Example: hcd ensemble runs/r18 runs/effb0 --weights 0.6,0.4 --how rank --out subs/blend.csv
    """
    if how not in ("mean", "rank"):
        raise fail(f"--how must be 'mean' or 'rank', got {how!r}", 2)
    from hcd_kit.console import console
    from hcd_kit.inference.ensemble import ensemble_runs, parse_weights

    res = ensemble_runs(runs, out, weights=parse_weights(weights, len(runs)), how=how, preds=pred, data_dir=data_dir)
    for run, w, auc in zip(res.runs, res.weights, res.run_auc):
        console.print(f"OOF AUC {_auc(auc)}  weight {w:.3f}  {run}")
    if res.blend_auc is not None:
        console.print(f"OOF AUC {_auc(res.blend_auc)}  blend ({res.how}, {res.n_oof} ids)")
    elif res.note:
        console.print(f"note: {res.note}")
    console.print(f"wrote {res.out} ({res.n_test} rows) and {res.sidecar.name}")
