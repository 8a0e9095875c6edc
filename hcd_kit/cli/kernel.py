"""Commands that run hcd on Kaggle's GPUs: kernel push|status|output and dataset push.

The library modules are ``hcd_kit.kaggle.kernel`` (render, push, watch, fetch) and ``hcd_kit.kaggle.dataset``
(the wheel and weights datasets an offline kernel attaches). Every Kaggle call goes through
``hcd_kit.kaggle.api``; credentials come from KAGGLE_USERNAME + KAGGLE_KEY, ~/.kaggle/kaggle.json or
KAGGLE_API_TOKEN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hcd_kit.cli._app import COMPETITION, Competition, command, fail, group, parse_folds
from hcd_kit.cli.kaggle import Name, Poll, Timeout, TransferTimeout
from hcd_kit.choices import TtaViews

PLACEHOLDER_OWNER = "<your-kaggle-username>"  # owner of a kernel rendered by --dry-run without credentials

kernel_app = group("kernel", "Run hcd on a Kaggle GPU: render and push a kernel, watch it, fetch its output.\n\n"
                            "Example: hcd kernel push --fold 0 --dry-run")
dataset_app = group("dataset", "Kaggle datasets that carry hcd_kit (its wheel) and trained weights into offline "
                               "kernels.\n\nExample: hcd dataset push --dry-run")


def _opt(text: str, metavar: str = "", **kw):
    return typer.Option(metavar=metavar, help=text, **kw)


@command(kernel_app, "push")
def kernel_push(
    fold: Annotated[str, _opt("Folds to train: all, one number, or a list like 0,2.", "FOLDS")] = "all",
    name: Annotated[Optional[str], _opt("Kernel slug.", "NAME", show_default="hcd-train, hcd-train-fold-K or hcd-predict")] = None,
    machine_shape: Annotated[str, _opt("Accelerator asked for (the kernel logs what it got).", "SHAPE")] = "NvidiaTeslaT4",
    internet: Annotated[bool, _opt("Give the kernel internet access (off: it needs nothing outside Kaggle).")] = False,
    weights_dataset: Annotated[
        str, _opt("Weights dataset (from `hcd dataset push --run-dir`): makes an inference-only kernel.", "SLUG",
                  show_default="none: a training kernel")
    ] = "",
    wheel_dataset: Annotated[str, _opt("Dataset holding the hcd_kit wheel (`hcd dataset push`).", "SLUG")] = "hcd-kit",
    dataset: Annotated[
        Optional[list[str]],
        _opt("Another dataset to attach (repeatable), e.g. pretrained weights for "
             "--train-args \"--weights /kaggle/input/...\": the kernel has no internet.", "SLUG"),
    ] = None,
    train_args: Annotated[
        str, _opt("Extra `hcd train` flags, e.g. \"--epochs 8 --no-pretrained\"; offline, training needs "
                  "--weights FILE (from an attached dataset) or --no-pretrained.", "FLAGS", show_default="none")
    ] = "",
    predict_args: Annotated[str, _opt("Extra `hcd predict` flags.", "FLAGS", show_default="none")] = "",
    tta: Annotated[TtaViews, typer.Option(help="TTA views for the kernel's prediction.")] = 8,
    competition: Competition = COMPETITION,
    root: Annotated[
        Path, _opt("The kernel is rendered into ROOT/NAME/; customised templates in ROOT/templates/ (kernel.py, "
                   "kernel-metadata.json) replace the packaged ones.", "ROOT")
    ] = Path("kernels"),
    dry_run: Annotated[
        bool, _opt("Render the kernel folder but do not push it (works without credentials, with a placeholder "
                   "owner).")
    ] = False,
    timeout: Timeout = None,
) -> None:
    """Render a Kaggle kernel that trains (and predicts) with hcd on a GPU, and push it.

    Writes ROOT/NAME/kernel-metadata.json (private, GPU, internet off, the competition and the hcd_kit
    wheel dataset attached) and the kernel script beside it, which logs its real GPUs, installs hcd_kit offline
    from the wheel, then runs prepare -> folds -> train -> cv -> predict --tta 8 into
    /kaggle/working/submission.csv. Push the wheel first with `hcd dataset push`. Offline, a training
    kernel cannot fetch ImageNet weights from the hub: pass --weights (a file in an attached dataset) or
    --no-pretrained in --train-args, or use --internet; anything else is refused before rendering.

    Example: hcd kernel push --fold 0 --train-args "--epochs 6 --no-pretrained"
    (then: hcd kernel status --name hcd-train-fold-0 --wait)
    """
    from rich.markup import escape

    from hcd_kit.console import console, err_console
    from hcd_kit.errors import KaggleError
    from hcd_kit.kaggle import KernelSpec, check_spec, default_name, push_kernel, render_kernel
    from hcd_kit.kaggle import api as kaggle_api

    folds = parse_folds(fold)
    fold = "all" if folds is None else ",".join(map(str, folds))
    mode = "predict" if weights_dataset else "train"
    spec = KernelSpec(
        name=name or default_name(mode, fold), mode=mode, fold=fold, machine_shape=machine_shape,
        internet=internet, competition=competition, wheel_dataset=wheel_dataset,
        weights_dataset=weights_dataset, train_args=train_args, predict_args=predict_args, tta=tta,
        extra_datasets=list(dataset or []),
    )
    check_spec(spec)  # before any credentials check or file: a kernel that cannot run is refused first
    try:
        user = kaggle_api.username()
    except KaggleError as exc:
        if not dry_run:
            raise
        # a dry run only renders; it should not need an account to show what would be pushed
        user = PLACEHOLDER_OWNER
        err_console.print(f"[yellow]warning:[/] {escape(str(exc))}; dry run: rendering with the owner {user}",
                          soft_wrap=True, highlight=False)
    folder = render_kernel(spec, user, root)
    net = "on" if internet else "off"
    console.print(f"rendered {folder}/ ({mode}, folds {fold}, machine shape {machine_shape}, internet {net})")
    if dry_run:
        return
    res = push_kernel(folder, timeout=timeout)
    version = f" version {res.version}" if res.version else ""
    console.print(f"pushed {res.ref}{version} asking for {res.machine_shape} {res.url}".rstrip())
    console.print(f"watch it with: hcd kernel status --name {spec.name} --wait")


@command(kernel_app, "status")
def kernel_status_cmd(
    name: Name = "hcd-train",
    wait: Annotated[bool, _opt("Poll until the session finishes.")] = False,
    wait_timeout: Annotated[float, _opt("Seconds --wait waits (a GPU session lasts 12 h at most).", "SECONDS")] = 43200.0,
    poll_interval: Poll = 10.0,
    timeout: Timeout = None,
) -> None:
    """Show a kernel's session status (QUEUED, RUNNING, COMPLETE, ERROR, ...); exit non-zero when the
    session ended in anything but COMPLETE (ERROR, CANCEL_REQUESTED, CANCEL_ACKNOWLEDGED).

    Example: hcd kernel status --name hcd-train --wait
    """
    from hcd_kit.console import console
    from hcd_kit.kaggle import kernel_ref, kernel_status

    ref = kernel_ref(name)
    st = kernel_status(
        ref, wait=wait, wait_timeout=wait_timeout, poll=poll_interval, timeout=timeout,
        on_poll=(lambda s: console.print(f"  {s.ref}: {s.status}")) if wait else None,
    )
    if st.status == "ERROR":
        raise fail(f"kernel {ref} failed: {st.failure_message or 'no message'}; see its log with hcd kernel output")
    if st.done and not st.ok:  # e.g. cancelled: no submission.csv will come, so a script must not go on
        why = f": {st.failure_message}" if st.failure_message else ""
        raise fail(f"kernel {ref} ended {st.status} without completing{why}; push it again with hcd kernel push")
    console.print(f"{ref}: {st.status}")


@command(kernel_app, "output", renamed={"out": "out_dir", "timeout": "transfer_timeout"})
def kernel_output_cmd(
    name: Name = "hcd-train",
    out_dir: Annotated[Optional[Path], _opt("Folder for the files.", "DIR", show_default="kernels/NAME/output")] = None,
    transfer_timeout: TransferTimeout = 3600.0,
) -> None:
    """Download every output file of a kernel's latest session (submission.csv, run/, gpus.json, the log).

    Example: hcd kernel output --name hcd-train --out-dir kaggle-out/
    """
    from hcd_kit.console import console
    from hcd_kit.kaggle import kernel_output, kernel_ref

    ref = kernel_ref(name)
    dest = out_dir or Path("kernels") / ref.split("/")[1] / "output"
    files = kernel_output(ref, dest, transfer_timeout=transfer_timeout)
    console.print(f"downloaded {len(files)} files of {ref} into {dest}")


@command(dataset_app, "push", renamed={"out": "out_dir", "timeout": "transfer_timeout"})
def dataset_push(
    run_dir: Annotated[Optional[Path], _opt("Also ship this run's config.toml and fold weights.", "DIR")] = None,
    name: Annotated[Optional[str], _opt("Dataset slug.", "NAME", show_default="hcd-kit, or hcd-weights with --run-dir")] = None,
    wheel: Annotated[Optional[Path], _opt("Use this hcd_kit wheel instead of building one.", "FILE")] = None,
    out_dir: Annotated[Optional[Path], _opt("Folder to assemble the dataset in.", "DIR", show_default="build/kaggle/NAME")] = None,
    notes: Annotated[str, _opt("Version notes when the dataset exists already.", "TEXT")] = "hcd update",
    dry_run: Annotated[bool, _opt("Assemble the folder but do not upload it.")] = False,
    transfer_timeout: TransferTimeout = 3600.0,
) -> None:
    """Build and upload the Kaggle dataset that kernels install hcd_kit from (plus weights with --run-dir).

    The folder holds the hcd_kit wheel (`pip wheel` of this repository, or --wheel), and with --run-dir
    the run's config.toml and fold{k}_best.pt / fold{k}_oof.csv, plus dataset-metadata.json. The
    dataset is created, or versioned when it exists.

    Example: hcd dataset push --run-dir runs/resnet18 --name hcd-weights-r18
    """
    from hcd_kit.console import console
    from hcd_kit.kaggle import WHEEL_DATASET, build_dataset, check_slug, push_dataset
    from hcd_kit.kaggle import api as kaggle_api

    slug = name or ("hcd-weights" if run_dir else WHEEL_DATASET)
    check_slug(slug)
    ref = f"{kaggle_api.username()}/{slug}"
    folder = out_dir or Path("build") / "kaggle" / slug
    names = build_dataset(folder, ref, wheel=wheel, run_dir=run_dir)
    console.print(f"assembled {folder}/: {', '.join(names)}")
    if dry_run:
        return
    res = push_dataset(folder, notes, transfer_timeout=transfer_timeout)
    console.print(f"{'created' if res.created else 'new version of'} dataset {res.ref} {res.url}".rstrip())
