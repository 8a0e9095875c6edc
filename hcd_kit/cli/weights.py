"""``hcd weights push``: pretrained weights (timm or registry models) as a private Kaggle dataset, for kernels
without internet; ``hcd weights export``: one fold of a trained run as a timm ``local-dir:`` folder.

The library modules are ``hcd_kit.kaggle.weights`` (build the folder; the licence rule), ``push_dataset`` of
``hcd_kit.kaggle.dataset`` (the upload, as for ``hcd dataset push``) and ``hcd_kit.inference.export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command, group
from hcd_kit.cli.kaggle import DatasetPoll, DatasetWait, NoWait, TransferTimeout, push_and_report

weights_app = group(
    "weights",
    "Weights as files: pretrained ones pushed as a private dataset for offline Kaggle "
    "kernels, or a trained fold exported as a timm local-dir: folder.\n\n"
    "Example: hcd weights push resnet18",
)


@command(weights_app, "push")
def weights_push(
    model: Annotated[str, typer.Argument(metavar="MODEL", hidden=True)],  # described in the docstring
    slug: Annotated[
        Optional[str],
        typer.Option(
            metavar="SLUG", help="Dataset slug.", show_default="timm-MODEL; MODEL-weights for a registry model"
        ),
    ] = None,
    from_file: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="Take the weights from this state dict of MODEL instead of the Hugging Face hub.",
            show_default="the hub",
        ),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(metavar="DIR", help="Folder to assemble the dataset in.", show_default="build/kaggle/SLUG"),
    ] = None,
    private_ok: Annotated[
        bool,
        typer.Option(
            metavar="",
            help="For a registry model whose licence forbids re-hosting (e.g. uni, virchow2: NC-ND): confirm "
            "that its terms let you keep a private copy for your own use. The dataset is private; "
            "never share it.",
        ),
    ] = False,
    notes: Annotated[
        str, typer.Option(metavar="TEXT", help="Version notes when the dataset exists already.")
    ] = "hcd weights update",
    dry_run: Annotated[
        bool,
        typer.Option(
            metavar="",
            help="Assemble the folder but do not upload it (works without credentials, with a placeholder owner).",
        ),
    ] = False,
    transfer_timeout: TransferTimeout = 3600.0,
    wait_timeout: DatasetWait = 1800.0,
    no_wait: NoWait = False,
    poll_interval: DatasetPoll = 5.0,
) -> None:
    """Save the pretrained weights of MODEL (a timm name, optionally with its tag: resnet18,
    resnet18.a1_in1k; or a registry model of `hcd models`: uni, h-optimus-0, ...) and push them as a
    private Kaggle dataset.

    Run it where the Hugging Face hub is reachable (a laptop, not an offline kernel; gated models need
    your access and HF_TOKEN). The dataset holds model.safetensors (the pretrained state dict, which
    `hcd train --model MODEL --weights FILE` loads offline) and timm's config.json (so --model
    local-dir:FOLDER works too). It is created, or versioned when it exists, and the command waits until
    Kaggle has processed it (READY; --wait-timeout, --no-wait). Then train on Kaggle with
    `hcd kernel push --pretrained-from OWNER/SLUG --train-args "--model MODEL"` (or `--probe MODEL`).

    Licences: a registry model whose licence does not allow re-hosting (`hcd models` says which) is
    refused unless you pass --private-ok, confirming its terms let you keep a private copy for your own
    use; the dataset is always private and its description states the licence. The other route needs no
    copy: `hcd kernel push --hub-secret NAME` (internet on, your token as a Kaggle secret).

    Example: hcd weights push uni --private-ok
    """
    from hcd_kit.cli.kernel import owner
    from hcd_kit.console import console
    from hcd_kit.kaggle import check_slug
    from hcd_kit.kaggle.weights import build_weights_dataset, check_licence, default_slug, registry_entry

    entry = registry_entry(model)
    if entry is not None:
        check_licence(entry, private_ok)  # before the credentials check and any download
    slug = slug or default_slug(model)
    check_slug(slug)
    user = owner(dry_run, "assembling")
    ref = f"{user}/{slug}"
    folder = out_dir or Path("build") / "kaggle" / slug
    names = build_weights_dataset(model, folder, ref, from_file=from_file, private_ok=private_ok)
    console.print(f"assembled {folder}/: {', '.join(names)}", soft_wrap=True)
    if not dry_run:
        push_and_report(folder, notes, ref, transfer_timeout, wait_timeout, no_wait, poll_interval)
    name = entry.name if entry is not None else model
    if entry is not None and not entry.redistribute:
        console.print(
            f"{ref} is a private copy of {name} ({entry.licence}) for your own use: keep it private",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    console.print(
        f'train with: hcd kernel push --pretrained-from {ref} --train-args "--model {name}"',
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    if entry is not None:
        console.print(
            f"or probe its features: hcd kernel push --probe {name} --pretrained-from {ref}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@command(weights_app, "export")
def weights_export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", hidden=True)],  # described in the docstring
    fold: Annotated[int, typer.Option(metavar="K", help="The fold whose best.pt to export.")],
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder to write (model.safetensors, config.json).")],
    force: Annotated[bool, typer.Option(metavar="", help="Replace DIR when it already holds files.")] = False,
) -> None:
    """Export fold K of the trained run RUN as a timm local-dir: folder DIR, which `hcd embed --model
    local-dir:DIR`, `hcd train --model local-dir:DIR` and timm.create_model("local-dir:DIR") load offline.

    DIR gets model.safetensors (the fold's weights, its 1-logit head included) and timm's config.json:
    the architecture and its arguments, the input size the run trained at, the normalisation the weights
    expect, and an "hcd" block (registry model, source model, run, fold, patches it trained on). DIR is
    written whole or not at all; one that already holds files is refused unless --force. Push it to Kaggle
    as a dataset like any folder (mind the licence of the pretrained weights it started from).

    Example: hcd weights export runs/uni --fold 0 --out exports/uni-fold0
    """
    from hcd_kit.console import console
    from hcd_kit.inference.export import export_fold

    res = export_fold(run_dir, fold, out, force=force)
    trained = f"{res.train_patches:,} patches" if res.train_patches is not None else "? patches (no folds.csv)"
    console.print(
        f"exported fold {res.fold} of {run_dir} ({res.model}, {res.img_size} px, trained on {trained}) "
        f"to {res.out}/: {', '.join(res.files)}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    console.print(f"use it with: hcd embed --model local-dir:{res.out}", soft_wrap=True, highlight=False, markup=False)
    if res.hcd.get("licence"):
        console.print(
            f"its pretrained weights are under {res.hcd['licence']}: that licence applies to the export",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
