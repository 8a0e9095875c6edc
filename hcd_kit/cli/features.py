"""Commands: embed (a frozen backbone's features of every patch) and probe (per-fold linear probes on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.choices import DEVICE_HELP, ProbeHead, TtaViews
from hcd_kit.cli._app import PrecisionOption, command, parse_folds
from hcd_kit.cli.predict import _auc


@command()
def embed(
    model: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Backbone: a timm name, a registry name (`hcd models`), hf-hub:ORG/NAME or local-dir:FOLDER.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR", help="Feature store folder to write (or to finish, when an embed was interrupted)."
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Competition folder; train/ and test/ are packed first if they are not yet."),
    ] = Path("data"),
    tta: Annotated[
        TtaViews,
        typer.Option(help="Dihedral views kept per patch: 1 (none), 2 (+h-flip), 4 (+v-flip, 180), 8 (all of D4)."),
    ] = 1,
    weights: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            show_default=False,
            help="Local pretrained weights (.safetensors/.pth) for offline use, e.g. a Kaggle dataset file.",
        ),
    ] = None,
    pretrained: Annotated[
        bool,
        typer.Option(
            "--pretrained/--no-pretrained",
            metavar="",
            help="Load the backbone's pretrained weights (--no-pretrained: random ones, for tests).",
        ),
    ] = True,
    img_size: Annotated[
        Optional[int],
        typer.Option(
            metavar="PX", show_default="the backbone's input size, else 96", help="Pixels patches are upscaled to."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Views per forward pass (batch-size / tta patches in all their views).")
    ] = 256,
    device: Annotated[str, typer.Option(metavar="DEVICE", help=f"{DEVICE_HELP[:-1]} (auto uses every GPU).")] = "auto",
    precision: PrecisionOption = "auto",
    split: Annotated[
        str, typer.Option(metavar="SPLITS", help="Splits to embed: train, test or train,test.")
    ] = "train,test",
    force: Annotated[
        bool, typer.Option("--force", metavar="", help="Rebuild a store made with other settings or data.")
    ] = False,
) -> None:
    """Embed every train and test patch with a frozen backbone into a memory-mapped feature store.

    Each patch goes through --model without its head in --tta flipped/rotated views (stacked in the same
    batch), pooled to one vector per view, and is stored as float16 in OUT/{split}_features.npy (N, views,
    dim) beside OUT/{split}_ids.csv and OUT/manifest.json (model, sizes, data identity). Progress is flushed
    in chunks: run the same command again after an interruption and it goes on where it stopped; on a
    finished store with the same settings it does nothing. `hcd probe` fits linear probes on OUT.

    Example: hcd embed --data-dir data --model uni --tta 2 --out features/uni

    Example: hcd embed --model local-dir:/kaggle/input/uni-weights --tta 8 --out features/uni --batch-size 512
    """
    from hcd_kit.console import console
    from hcd_kit.features import embed as run_embed

    res = run_embed(
        data_dir,
        model,
        out,
        tta=tta,
        weights=weights,
        pretrained=pretrained,
        img_size=img_size,
        batch_size=batch_size,
        device=device,
        precision=precision,
        splits=[s.strip() for s in split.split(",") if s.strip()],
        force=force,
    )
    for s in res.splits:
        how = {"resumed": f" (resumed at row {s.start:,})", "already embedded": " (already embedded)"}.get(s.status, "")
        console.print(
            f"{s.split:<5} {s.rows:>8,} patches x {res.tta} view(s) x {res.dim} features{how}",
            soft_wrap=True,
            highlight=False,
        )
    if res.skipped:
        console.print(
            f"{res.out} already embedded with these settings; nothing to do (--force rebuilds it)",
            soft_wrap=True,
            highlight=False,
        )
        return
    # soft_wrap: the label may be a long local-dir: path, which rich would otherwise break (or fold) to its width
    console.print(
        f"{res.label} at {res.img_size} px, pool {res.pool}: {res.images_per_s:,.0f} img/s "
        f"({res.seconds:,.0f} s in all)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"wrote {res.out}. Next: hcd probe --features {res.out} --data-dir {data_dir} --run-dir RUN",
        soft_wrap=True,
        highlight=False,
    )


@command()
def probe(
    features: Annotated[
        Path, typer.Option(metavar="DIR", help="Feature store written by `hcd embed` (train and test).")
    ],
    run_dir: Annotated[
        Path,
        typer.Option(
            metavar="DIR", help="Run folder to write: fold*/oof.csv, submission.csv, probe.json, like a trained run."
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Competition folder with folds.csv (`hcd folds`) and sample_submission.csv."),
    ] = Path("data"),
    head: Annotated[
        ProbeHead,
        typer.Option(help="logreg (standardised features, logistic regression) or mlp (one hidden layer of 256)."),
    ] = "logreg",
    c: Annotated[
        str,
        typer.Option(
            "--c", metavar="auto|C", help="Logistic regression's C; auto picks it per fold from 1e-4..10 by 3-fold AUC."
        ),
    ] = "auto",
    fold: Annotated[
        str, typer.Option(metavar="FOLDS", help="Folds to probe: all, one number, or a list like 0,2.")
    ] = "all",
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the C search's split and of the MLP.")] = 0,
) -> None:
    """Fit a linear probe (or a small MLP) per fold on frozen features and write it as a run.

    Fold K's probe learns from view 0 of every train patch outside fold K of DATA_DIR/folds.csv (the split
    `hcd train` uses, so out-of-fold ids line up with CNN runs), then scores fold K's patches and the test
    patches in every stored view. Writes RUN_DIR/fold*/oof.csv, RUN_DIR/oof_tta{N}.csv (views averaged),
    RUN_DIR/submission.csv (views, then folds averaged; sample_submission order) with its .json sidecar,
    and RUN_DIR/probe.json. `hcd cv`, `hcd ensemble` and `hcd submit` take the run like any other.

    Example: hcd probe --features features/uni --data-dir data --run-dir runs/uni-probe

    Example: hcd ensemble runs/r18 runs/uni-probe --weights auto --out subs/blend.csv
    """
    from hcd_kit.console import console
    from hcd_kit.features import parse_c
    from hcd_kit.features import probe as run_probe

    res = run_probe(features, data_dir, run_dir, head=head, c=parse_c(c), folds=parse_folds(fold), seed=seed)
    many = f"{res.views} views"
    console.print(f"OOF AUC  fold      n        C   1 view  {many:>8}", highlight=False)
    for f in res.folds:
        cc = "-" if f.c is None else f"{f.c:g}"
        console.print(
            f"         {f.fold:>4} {f.n_val:>6,} {cc:>8}   {_auc(f.auc_1):>6}  {_auc(f.auc_n):>8}", highlight=False
        )
    n = sum(f.n_val for f in res.folds)
    console.print(
        f"OOF AUC   all {n:>6,} {'':>8}   {_auc(res.oof_auc_1):>6}  {_auc(res.oof_auc_n):>8}", highlight=False
    )
    for note in res.notes:
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
    console.print(
        f"{res.head} probe of {len(res.folds)} fold(s) in {res.seconds:,.1f} s; wrote "
        f"{', '.join(p.name for p in res.written if p.parent == res.run_dir)} and fold*/oof.csv "
        f"in {res.run_dir}",
        soft_wrap=True,
        highlight=False,
    )
