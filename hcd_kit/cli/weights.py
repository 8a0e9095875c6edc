"""``hcd weights push``: pretrained timm weights as a private Kaggle dataset, for kernels without internet.

The library module is ``hcd_kit.kaggle.weights`` (build the folder); the upload is ``push_dataset`` of
``hcd_kit.kaggle.dataset``, as for ``hcd dataset push``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import command, group
from hcd_kit.cli.kaggle import TransferTimeout

weights_app = group("weights", "Pretrained weights for offline Kaggle kernels: fetch them here, push them as a "
                               "private dataset.\n\nExample: hcd weights push resnet18")


@command(weights_app, "push")
def weights_push(
    model: Annotated[str, typer.Argument(metavar="MODEL", hidden=True)],  # described in the docstring
    slug: Annotated[Optional[str], typer.Option(metavar="SLUG", help="Dataset slug.",
                                                show_default="timm-MODEL")] = None,
    from_file: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="Take the weights from this state dict of MODEL instead of the Hugging Face hub.",
        show_default="the hub")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Folder to assemble the dataset in.",
                                                    show_default="build/kaggle/SLUG")] = None,
    notes: Annotated[str, typer.Option(metavar="TEXT", help="Version notes when the dataset exists already.")]
    = "hcd weights update",
    dry_run: Annotated[bool, typer.Option(metavar="", help="Assemble the folder but do not upload it (works "
                                                           "without credentials, with a placeholder owner).")] = False,
    transfer_timeout: TransferTimeout = 3600.0,
) -> None:
    """Save timm's pretrained weights for MODEL (a timm name, optionally with its tag: resnet18,
    resnet18.a1_in1k) and push them as a private Kaggle dataset.

    Run it where the Hugging Face hub is reachable (a laptop, not an offline kernel). The dataset holds
    model.safetensors (the pretrained state dict, which `hcd train --model MODEL --weights FILE` loads
    offline) and timm's config.json (so timm.create_model("local-dir:FOLDER") works too). It is created,
    or versioned when it exists. Then train on Kaggle with
    `hcd kernel push --pretrained-from OWNER/SLUG --train-args "--model MODEL"`.

    Example: hcd weights push resnet18 --slug timm-resnet18
    """
    from hcd_kit.cli.kernel import owner
    from hcd_kit.console import console
    from hcd_kit.kaggle import check_slug, push_dataset
    from hcd_kit.kaggle.weights import build_weights_dataset, default_slug

    slug = slug or default_slug(model)
    check_slug(slug)
    user = owner(dry_run, "assembling")
    ref = f"{user}/{slug}"
    folder = out_dir or Path("build") / "kaggle" / slug
    names = build_weights_dataset(model, folder, ref, from_file=from_file)
    console.print(f"assembled {folder}/: {', '.join(names)}", soft_wrap=True)
    if not dry_run:
        res = push_dataset(folder, notes, transfer_timeout=transfer_timeout)
        console.print(f"{'created' if res.created else 'new version of'} dataset {res.ref} {res.url}".rstrip(),
                      soft_wrap=True)
    console.print(f"train with: hcd kernel push --pretrained-from {ref} --train-args \"--model {model}\"",
                  soft_wrap=True, highlight=False, markup=False)
