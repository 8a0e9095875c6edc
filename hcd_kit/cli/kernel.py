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

from hcd_kit.cli._app import command, fail, group
from hcd_kit.cli._kernel_options import (
    fanned_out,
    kernel_options,
    owner,
    run_options_from,
    say_output,
    signature,
    spec_from,
)
from hcd_kit.cli._kernel_options import (
    opt as _opt,
)
from hcd_kit.cli.fanout import session_options, session_timeout, time_budget
from hcd_kit.cli.kaggle import (
    Name,
    Poll,
    Timeout,
    TransferTimeout,
)

kernel_app = group(
    "kernel",
    "Run hcd on a Kaggle GPU: render and push a kernel, watch it, fetch its output.\n\n"
    "Example: hcd kernel push --fold 0 --dry-run",
)


def _dry_run(
    dry_run: Annotated[
        bool, _opt("Render the kernel folder but do not push it (works without credentials, with a placeholder owner).")
    ] = False,
) -> None:
    """--dry-run, an option of `hcd kernel push` alone (a signature only)."""


def _timeout(timeout: Timeout = None) -> None:
    """--timeout of `hcd kernel push` and `run` (a signature only)."""


@command(kernel_app, "push", signature=signature(kernel_options, session_options, _dry_run, _timeout))
def kernel_push(**opts) -> None:
    """Render a Kaggle kernel that trains (and predicts) with hcd on a GPU, and push it.

    Writes ROOT/NAME/kernel-metadata.json (private, GPU, internet off, the competition and the hcd_kit
    wheel dataset attached) and the kernel script beside it, which logs its real GPUs, installs hcd_kit offline
    from the wheel, then runs prepare -> folds -> train -> cv -> predict --tta 8 into
    /kaggle/working/submission.csv. Push the wheel first with `hcd dataset push`. Offline, a training
    kernel cannot fetch ImageNet weights from the hub: pass --pretrained-from (a dataset made by `hcd weights
    push MODEL`), or --weights dataset:OWNER/SLUG/FILE or --no-pretrained in --train-args, or use --internet;
    anything else is refused before rendering. A registry model (`hcd models`: uni, ...) needs one of two
    routes: --pretrained-from a dataset of its weights (`hcd weights push uni --private-ok`), or --hub-secret
    NAME (internet on, HF_TOKEN from your Kaggle secret NAME). --probe MODEL runs `hcd embed` + `hcd probe`
    instead of training. Every dataset:OWNER/SLUG/FILE in --train-args/--predict-args is
    attached and resolved to wherever Kaggle mounts it. --fold each pushes training kernels over the folds
    (--folds-per-kernel at once each) while GPU sessions are free (Kaggle runs two per account at once and
    queues none), and renders the inference kernel that `hcd kernel run --fold each` pushes once they are all
    COMPLETE (it also pushes the fold kernels still waiting for a session).

    Example: hcd kernel push --fold 0 --train-args "--epochs 6 --no-pretrained"
    (then: hcd kernel status --name hcd-train-fold-0 --wait)
    """
    if fanned_out(opts):
        from hcd_kit.cli.fanout import push_each

        return push_each(opts)
    from hcd_kit.console import console
    from hcd_kit.kaggle import push_kernel, render_kernel

    spec = spec_from(opts)  # before any credentials check or file: a kernel that cannot run is refused first
    dry_run = opts["dry_run"]
    user = owner(dry_run)
    folder = render_kernel(spec, user, opts["root"])
    net = "on" if spec.internet else "off"
    console.print(
        f"rendered {folder}/ ({spec.mode}, folds {spec.fold}, machine shape {spec.machine_shape}, internet {net})",
        soft_wrap=True,
    )
    say_output(spec)
    if spec.hub_secret:
        console.print(
            f"the kernel sets HF_TOKEN from your Kaggle secret {spec.hub_secret}, which only the web editor can "
            "attach (not the API): until then its session stops at its start, saying so. Open the notebook, attach "
            f"{spec.hub_secret} in Add-ons > Secrets, Save Version there, then `hcd kernel run --attach` (same "
            "options) waits, fetches and submits; a rerun pushes a new version, and whether that keeps the secret "
            "is unconfirmed",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    if dry_run:
        return
    say = lambda line: console.print(line, soft_wrap=True, highlight=False, markup=False)  # noqa: E731
    # waits for datasets Kaggle is still processing; Kaggle stops the session after `limit` s
    limit = session_timeout(opts, time_budget(spec.train_args)[1])
    res = push_kernel(folder, timeout=opts["timeout"], session_timeout=limit, say=say)
    version = f" version {res.version}" if res.version else ""
    console.print(f"pushed {res.ref}{version} asking for {res.machine_shape} {res.url}".rstrip())
    console.print(f"watch it with: hcd kernel status --name {spec.name} --wait")


@command(kernel_app, "status")
def kernel_status_cmd(
    name: Name = "hcd-train",
    wait: Annotated[bool, _opt("Poll until the session finishes.")] = False,
    wait_timeout: Annotated[
        float, _opt("Seconds --wait waits (a GPU session lasts 12 h at most).", "SECONDS")
    ] = 43200.0,
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
        ref,
        wait=wait,
        wait_timeout=wait_timeout,
        poll=poll_interval,
        timeout=timeout,
        on_poll=(lambda s: console.print(f"  {s.ref}: {s.status}")) if wait else None,
    )
    if st.status == "ERROR":
        raise fail(f"kernel {ref} failed: {st.failure_message or 'no message'}; see its log with hcd kernel output")
    if st.done and not st.ok:  # e.g. cancelled: no submission.csv will come, so a script must not go on
        why = f": {st.failure_message}" if st.failure_message else ""
        raise fail(f"kernel {ref} ended {st.status} without completing{why}; push it again with hcd kernel push")
    console.print(f"{ref}: {st.status}")


@command(kernel_app, "output")
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
    console.print(f"downloaded {len(files)} files of {ref} into {dest}", soft_wrap=True)


# `hcd kernel run` takes the options of `kernel push` (``kernel_options``: a new one is offered here too) but
# --dry-run, plus these.
RUN_PANEL = "Waiting, fetching, submitting"


def _ropt(text: str, metavar: str = "", **kw):
    return _opt(text, metavar, rich_help_panel=RUN_PANEL, **kw)


def _run_options(
    attach: Annotated[
        bool,
        _ropt(
            "Never push: pick up the version recorded in ROOT/NAME/last_push.json "
            "(after Ctrl-C or a lost connection; a plain rerun does so too when nothing "
            "changed)."
        ),
    ] = False,
    submit: Annotated[bool, _ropt("Submit the kernel's submission.csv (needs -m) and wait for its score.")] = False,
    message: Annotated[
        Optional[str],
        typer.Option(
            "--message",
            "-m",
            metavar="TEXT",
            show_default="none",
            rich_help_panel=RUN_PANEL,
            help="Description of the submission shown on Kaggle.",
        ),
    ] = None,
    data_dir: Annotated[
        Path, _ropt("Folder with sample_submission.csv, which the fetched submission is checked against.", "DIR")
    ] = Path("data"),
    out_dir: Annotated[
        Optional[Path], _ropt("Folder for the kernel's output files.", "DIR", show_default="ROOT/NAME/output")
    ] = None,
    wait_timeout: Annotated[
        Optional[float],
        _ropt(
            "Seconds to wait for the session (a GPU session lasts 12 h at most); "
            "it keeps running after that: pick it up with --attach.",
            "SECONDS",
            show_default="12 h; --fold each: its schedule",
        ),
    ] = None,
    score_timeout: Annotated[float, _ropt("Seconds --submit waits for the score.", "SECONDS")] = 3600.0,
    poll_interval: Annotated[float, _ropt("Seconds between the first polls (backs off to 60 s).", "SECONDS")] = 10.0,
    transfer_timeout: Annotated[float, _ropt("Seconds the download of the output may take.", "SECONDS")] = 3600.0,
    ledger: Annotated[
        Optional[Path],
        _ropt(
            "Ledger file.",
            "FILE",
            show_default="submissions/ledger.jsonl of the nearest folder up that has submissions/",
        ),
    ] = None,
) -> None:
    """The options of `hcd kernel run` alone (a signature only)."""


@command(kernel_app, "run", signature=signature(kernel_options, session_options, _timeout, _run_options))
def kernel_run(**opts) -> None:
    """Push a kernel (the options of `hcd kernel push`), wait for it, fetch its output, check submission.csv,
    and with --submit -m MSG submit it and wait for the score.

    Waits with a status line (queued / running / time since the push), bounded by --wait-timeout. Every
    output file goes to --out-dir; submission.csv is checked against DATA_DIR/sample_submission.csv (needed
    with --submit, checked before anything is pushed). The ledger row names the kernel and its version.
    Never pushes twice: ROOT/NAME/last_push.json records the push before the wait, and a rerun (or
    --attach) picks that version up while it is queued, running, or complete but not yet fetched and
    submitted. A session that ends in ERROR or is cancelled prints the tail of its log and Kaggle's message,
    and exits non-zero.

    Kaggle runs two GPU sessions per account at once and queues none: hcd keeps at most --max-sessions live
    (shared by your `hcd kernel run`s on this machine) and waits, saying so, while one started elsewhere (the
    web editor) holds a slot. A push that got no answer is looked for at Kaggle before any push again.

    --fold each trains --folds-per-kernel folds per kernel (2 on T4 x2, one per GPU: five folds in three
    sessions), each with the recipe's planned hours as its time budget; a fan-out that the GPU quota left
    cannot fit is refused first, saying what would. Fold kernels are pushed as sessions end (the status line
    shows which wait, run, finished or failed), then one inference kernel ensembles their outputs with TTA
    into submission.csv. A rerun re-pushes only failed fold kernels.

    Example: hcd kernel run --fold 0 --train-args "--epochs 6 --no-pretrained" --submit -m "r18 fold 0"
    """
    from contextlib import nullcontext

    from rich.markup import escape

    from hcd_kit.cli._kernel_view import LiveStatus, clock, report_run
    from hcd_kit.console import console
    from hcd_kit.errors import ConfigError
    from hcd_kit.kaggle import RunHooks, run_kernel

    if opts["submit"] != (opts["message"] is not None):
        raise ConfigError(
            "--submit needs -m MSG (the description shown on Kaggle)"
            if opts["submit"]
            else "-m MSG describes a submission: add --submit"
        )
    if fanned_out(opts):
        from hcd_kit.cli.fanout import run_each

        return run_each(opts)
    spec = spec_from(opts)
    say_output(spec)
    options = run_options_from({**opts, "wait_timeout": opts["wait_timeout"] or 43200.0})
    options.session_timeout = session_timeout(opts, time_budget(spec.train_args)[1])
    options.max_sessions = opts["max_sessions"]
    live, last = LiveStatus(spec.name), []

    def on_poll(st, elapsed: float) -> None:
        live.ref = st.ref
        live.update(st.status, elapsed)
        if not last or last[-1] != st.status:  # one line per change; the live line shows the rest
            last.append(st.status)
            console.print(f"  {st.ref}: {st.status} ({clock(elapsed)} since the push)")

    say = lambda line: console.print(escape(line), soft_wrap=True)  # noqa: E731
    with console.status(live) if console.is_terminal else nullcontext():
        hooks = RunHooks(
            on_poll=on_poll, on_score=lambda r: console.print(f"  submission {r.ref}: {r.status}"), say=say
        )
        run = run_kernel(spec, opts["root"], options, hooks)
    report_run(run)
