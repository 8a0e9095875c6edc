"""The options that describe a Kaggle kernel, shared by `hcd kernel push` and `hcd kernel run` (cli/kernel.py)
and the fold fan-out (cli/fanout.py), and their reading into typed objects, once: ``spec_from`` has the training
layer read --train-args (``hcd_kit.training.parse_train_args``: a bad flag refused in one line) and the kaggle
layer build and check the ``KernelSpec`` (``hcd_kit.kaggle.kernel_spec``); ``run_options_from`` gives the
``RunOptions`` of `hcd kernel run`. The library below sees those objects, never the options themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hcd_kit.choices import MACHINE_SHAPES, TtaViews
from hcd_kit.cli._app import COMPETITION, Competition, parse_folds

PLACEHOLDER_OWNER = "<your-kaggle-username>"  # owner of a kernel rendered by --dry-run without credentials


def owner(dry_run: bool, doing: str = "rendering") -> str:
    """The Kaggle user things are pushed as; a dry run only renders, so it needs no account (placeholder)."""
    from rich.markup import escape

    from hcd_kit.console import err_console
    from hcd_kit.errors import KaggleError
    from hcd_kit.kaggle import api as kaggle_api

    try:
        return kaggle_api.username()
    except KaggleError as exc:
        if not dry_run:
            raise
        err_console.print(
            f"[yellow]warning:[/] {escape(str(exc))}; dry run: {doing} with the owner {PLACEHOLDER_OWNER}",
            soft_wrap=True,
            highlight=False,
        )
        return PLACEHOLDER_OWNER


def opt(text: str, metavar: str = "", **kw):
    return typer.Option(metavar=metavar, help=text, **kw)


HubSecret = Annotated[
    str,
    typer.Option(
        metavar="NAME",
        show_default="none",
        help="Route A to a registry model's weights (`hcd models`: uni, virchow2, ...): the hub, with your token. Turns "
        "the kernel's internet on and sets HF_TOKEN from your Kaggle secret NAME at its start (only the name is in "
        "the kernel). Secrets attach only in the web editor, not through the API: push once (that session stops "
        "at its start, saying so), attach your Hugging Face read token as NAME in the notebook's Add-ons > "
        "Secrets, Save Version there, then `hcd kernel run --attach` waits, fetches and submits. Whether a later "
        "push keeps the secret attached is unconfirmed (if not, its session stops at its start again). Route B, "
        "offline: --pretrained-from a dataset made by `hcd weights push MODEL`.",
    ),
]
Probe = Annotated[
    str,
    typer.Option(
        metavar="MODEL",
        show_default="none",
        help="Make a probe kernel instead of train + predict: `hcd embed` every patch with the frozen MODEL (--tta "
        "views), then `hcd probe` fits a linear probe and writes submission.csv. MODEL's weights come from "
        "--pretrained-from (offline) or --hub-secret (the hub).",
    ),
]


def kernel_options(
    fold: Annotated[
        str,
        opt(
            "Folds to train: all, one number, a list like 0,2, or each (a kernel per fold, then "
            "one that ensembles them).",
            "FOLDS",
        ),
    ] = "all",
    n_folds: Annotated[int, opt("Folds of the split (`hcd folds --n-folds`): with --fold each, kernels.", "N")] = 5,
    name: Annotated[
        Optional[str], opt("Kernel slug.", "NAME", show_default="hcd-train, hcd-train-fold-K or hcd-predict")
    ] = None,
    machine_shape: Annotated[
        str,
        opt(
            f"Accelerator: {', '.join(MACHINE_SHAPES)} (NvidiaTeslaT4 is T4 x2; some are offered only to some "
            "accounts or competitions). Retired shapes (NvidiaTeslaP100, TpuV38, Tpu1VmV38: Kaggle silently runs "
            "another machine), the internal NvidiaTeslaT4Highmem and TPUs (hcd trains on CUDA) are refused. The "
            "kernel logs the GPUs it got (gpus.json) and stops at its start when they are fewer (one or none for "
            "T4 x2) or too old for its torch.",
            "SHAPE",
        ),
    ] = "NvidiaTeslaT4",
    allow_other_gpus: Annotated[
        bool,
        typer.Option(
            "--allow-other-gpus",
            metavar="",
            help="Let the kernel go on whatever GPUs Kaggle gave it (fewer than the shape has, or none), instead "
            "of stopping at its start.",
        ),
    ] = False,
    internet: Annotated[bool, opt("Give the kernel internet access (off: it needs nothing outside Kaggle).")] = False,
    weights_dataset: Annotated[
        str,
        opt(
            "Weights dataset (from `hcd dataset push --run-dir`): makes an inference-only kernel.",
            "SLUG",
            show_default="none: a training kernel",
        ),
    ] = "",
    wheel_dataset: Annotated[str, opt("Dataset holding the hcd_kit wheel (`hcd dataset push`).", "SLUG")] = "hcd-kit",
    dataset: Annotated[
        Optional[list[str]],
        opt(
            "Another dataset to attach (repeatable), e.g. pretrained weights for "
            '--train-args "--weights /kaggle/input/...": the kernel has no internet.',
            "SLUG",
        ),
    ] = None,
    train_args: Annotated[
        str,
        opt(
            'Extra `hcd train` flags, e.g. "--epochs 8 --no-pretrained"; offline, training needs '
            "--weights FILE (dataset:OWNER/SLUG/FILE attaches that dataset itself) or --no-pretrained. Without "
            "--time-budget (or --config) here, training gets --time-budget 11h: it and the TTA prediction end "
            "before Kaggle's 12 h limit.",
            "FLAGS",
            show_default="none",
        ),
    ] = "",
    predict_args: Annotated[str, opt("Extra `hcd predict` flags.", "FLAGS", show_default="none")] = "",
    pretrained_from: Annotated[
        str,
        opt(
            "Dataset made by `hcd weights push MODEL` (OWNER/SLUG, or SLUG for yours): attached, and training "
            "(or --probe's embedding) starts from its model.safetensors (--weights with a dataset: reference "
            "to it). Route B to a registry model's weights, offline; route A is --hub-secret.",
            "DATASET",
            show_default="none",
        ),
    ] = "",
    hub_secret: HubSecret = "",
    probe: Probe = "",
    tta: Annotated[TtaViews, typer.Option(help="TTA views for the kernel's prediction (or --probe's embedding).")] = 8,
    competition: Competition = COMPETITION,
    root: Annotated[
        Path,
        opt(
            "The kernel is rendered into ROOT/NAME/; customised templates in ROOT/templates/ (kernel.py, "
            "kernel-metadata.json) replace the packaged ones.",
            "ROOT",
        ),
    ] = Path("kernels"),
) -> None:
    """The options of `hcd kernel push` that `hcd kernel run` takes too (a signature only: see ``signature``)."""


def signature(*stubs: Callable) -> inspect.Signature:
    """A command's signature made of the parameters of ``stubs``, in order (options declared once, shared)."""
    return inspect.Signature([p for stub in stubs for p in inspect.signature(stub, eval_str=True).parameters.values()])


def fanned_out(opts: Mapping[str, Any]) -> bool:
    """Whether --fold is ``each``: one kernel per fold, then one that ensembles them (cli/fanout.py)."""
    return opts["fold"].strip().lower() == "each"


def spec_from(opts: Mapping[str, Any], **changes: Any):
    """The checked ``KernelSpec`` the options describe (``changes`` replace some, as the fan-out does): read once,
    here, for every command that takes them."""
    from hcd_kit.kaggle import kernel_spec
    from hcd_kit.training import parse_train_args

    o = {**opts, **changes}
    folds = parse_folds(o["fold"])
    train = parse_train_args(o["train_args"], "--train-args", one_run=True)  # a kernel trains one run
    spec = dict(
        folds=folds,
        name=o["name"],
        weights_dataset=o["weights_dataset"],
        probe=o["probe"],
        hub_secret=o["hub_secret"],
        internet=o["internet"],
        datasets=o["dataset"] or [],
        machine_shape=o["machine_shape"],
        allow_other_gpus=o["allow_other_gpus"],
        competition=o["competition"],
        wheel_dataset=o["wheel_dataset"],
        train_args=train.words,
        train_overrides=train.overrides,
        predict_args=o["predict_args"],
        tta=o["tta"],
        pretrained_from=o["pretrained_from"],
        n_folds=o["n_folds"],
    )
    checked = kernel_spec(**spec)  # every cheap check first: a refused kernel is refused before timm loads
    if checked.mode != "train":
        return checked
    return kernel_spec(**spec, fold_bytes=fold_bytes(train))  # then the output's size, from the model


def say_output(spec, who: str = "") -> None:
    """The plan's line about the kernel's saved output (``who``: whose, for a fan-out's fold kernels)."""
    from hcd_kit.console import console
    from hcd_kit.kaggle.output import output_line

    line = output_line(spec)
    if line:
        console.print(who + line, soft_wrap=True, highlight=False, markup=False)


def fold_bytes(train):
    """One fold's best.pt and last.pt for the training settings of ``train`` (``TrainArgs``) on Kaggle's GPU (the
    CUDA recipe unless --recipe), sized by the training layer on the meta device; None: the model is not sizable."""
    from hcd_kit.training.checkpoint import checkpoint_size
    from hcd_kit.training.recipes import default_recipe, recipe_config

    cfg = recipe_config(train.options.get("recipe") or default_recipe("cuda"), train.overrides)
    return checkpoint_size(cfg)


def fanout_specs_from(opts: Mapping[str, Any]):
    """The fold kernels' and the inference kernel's specs for --fold each."""
    from hcd_kit.kaggle import fanout_specs

    base = spec_from(opts, fold="0", name=None)  # the options every kernel of the fan-out shares
    return fanout_specs(base, opts["n_folds"], opts["name"])


def run_options_from(opts: Mapping[str, Any]):
    """The ``RunOptions`` of `hcd kernel run` (how it waits, fetches and submits)."""
    from hcd_kit.kaggle import RunOptions
    from hcd_kit.layout import DataLayout

    return RunOptions(
        attach=opts["attach"],
        out_dir=opts["out_dir"],
        sample_csv=DataLayout.of(opts["data_dir"]).sample_submission,
        message=opts["message"],
        ledger=opts["ledger"],
        wait_timeout=opts["wait_timeout"],
        poll=opts["poll_interval"],
        score_timeout=opts["score_timeout"],
        transfer_timeout=opts["transfer_timeout"],
        timeout=opts["timeout"],
    )
