"""``--fold each``: one training kernel per fold, then one inference kernel that ensembles their outputs.

``fanout_specs`` turns the options of `hcd kernel run` into ``n_folds`` training kernels (``NAME-fold-K``, each
its own GPU session) and the inference kernel (``NAME-predict`` / ``hcd-predict-folds``), which attaches the
fold kernels as ``kernel_sources`` and rebuilds ``run/`` from their outputs inside Kaggle. ``push_folds`` pushes
every fold kernel that has no live or completed version yet (``run.py``'s push record and pick-up, per kernel),
``wait_folds`` polls them all, and ``run_fanout`` drives the whole of it: folds, wait, then ``run_kernel`` for
the inference kernel (fetch, validate, submit).

Never push twice: a rerun picks up every fold version that is queued, running or complete, re-pushes only the
folds that failed, and picks up the inference kernel the same way. The inference kernel's script names the fold
versions it gathers, so its digest says which fold versions a finished inference run was built on: a rerun
after a kill at the very end finds it finished over the same versions and pushes nothing. Once the whole
fan-out has finished, a rerun starts a new one (as `hcd kernel run` does).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hcd_kit.errors import ConfigError
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.kernel import DEFAULT_ROOT, kernel_digest, kernel_status, push_kernel, render_kernel
from hcd_kit.kaggle.poll import poll_until
from hcd_kit.kaggle.run import (
    ACTIVE,
    KernelRun,
    RunHooks,
    RunOptions,
    failed_log_tail,
    mark_push,
    pick_up,
    read_last_push,
    run_kernel,
    utc_now,
)
from hcd_kit.kaggle.spec import KernelSpec, check_spec

PREDICT_NAME = "hcd-predict-folds"
_WAITING = ("pushed", *ACTIVE)  # not yet ended ("pushed": not polled yet)


@dataclass
class FoldKernel:
    """One fold's training kernel in a fan-out: where it got to."""

    fold: int
    ref: str
    folder: Path
    version: int | None = None
    pushed: bool = False  # False: picked up the version pushed before
    status: str = "pushed"
    failure_message: str = ""
    log: list[str] = field(default_factory=list)  # tail of the log of a failed session

    @property
    def ended(self) -> bool:
        return self.status not in _WAITING


@dataclass
class FanoutRun:
    folds: list[FoldKernel]
    inference: KernelRun | None = None
    done_before: bool = False  # the inference over these fold versions had already finished

    @property
    def failed(self) -> list[FoldKernel]:
        return [f for f in self.folds if f.ended and f.status != "COMPLETE"]


def fanout_specs(base: KernelSpec, n_folds: int, name: str | None = None) -> tuple[list[KernelSpec], KernelSpec]:
    """The fold kernels' specs and the inference kernel's (its ``fold_kernels`` still without versions)."""
    if base.mode != "train":
        raise ConfigError(
            "--fold each trains one kernel per fold; --weights-dataset makes an inference-only kernel: drop one of them"
        )
    if not 2 <= n_folds <= 20:
        raise ConfigError(f"--n-folds {n_folds}: --fold each needs 2 to 20 folds (one GPU session each)")
    prefix = name or "hcd-train"
    folds = [replace(base, fold=str(k), name=f"{prefix}-fold-{k}", n_folds=n_folds) for k in range(n_folds)]
    infer = replace(
        base,
        mode="predict",
        fold="all",
        name=f"{name}-predict" if name else PREDICT_NAME,
        fold_kernels=[f.name for f in folds],
        n_folds=n_folds,
    )
    for spec in (*folds, infer):
        check_spec(spec)
    return folds, infer


def push_folds(
    specs: list[KernelSpec],
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    *,
    user: str | None = None,
    timeout: float | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> list[FoldKernel]:
    """Render every fold kernel and push those with no live or completed version to pick up (failed ones again)."""
    user = user or kaggle_api.username()
    out = []
    for spec in specs:
        folder = render_kernel(spec, user, root)
        ref = f"{user}/{spec.name}"
        rec = pick_up(folder, ref, kernel_digest(folder), timeout, say)
        fk = FoldKernel(int(spec.fold), ref, folder, pushed=rec is None)
        if rec is None:
            res = push_kernel(folder, timeout=timeout)  # recorded in last_push.json before the next push
            rec = read_last_push(folder) or {}
            say(f"pushed {ref} version {res.version} asking for {res.machine_shape} {res.url}".rstrip())
        fk.version = rec.get("version")
        out.append(fk)
    return out


def summary(folds: list[FoldKernel]) -> str:
    """One line: each fold's status, then how many are queued, running, complete and failed."""
    each = ", ".join(f"fold {f.fold} {f.status}" for f in folds)
    count = lambda *st: sum(f.status in st for f in folds)  # noqa: E731
    failed = sum(f.ended and f.status != "COMPLETE" for f in folds)
    line = (
        f"{each} ({count('QUEUED', 'NEW_SCRIPT')} queued, {count('RUNNING')} running, "
        f"{count('COMPLETE')} complete, {failed} failed)"
    )
    if count("QUEUED") and count("RUNNING"):
        line += "; Kaggle runs a few GPU sessions at once, the others wait in its queue"
    return line


def wait_folds(
    folds: list[FoldKernel],
    *,
    wait_timeout: float,
    poll: float,
    timeout: float | None = None,
    on_poll: Callable[[list[FoldKernel]], None] | None = None,
) -> list[FoldKernel]:
    """Poll every fold kernel that has not ended until all have; a wait past ``wait_timeout`` is a KaggleError."""

    def fetch() -> list[FoldKernel]:
        for f in folds:
            if not f.ended:
                st = kernel_status(f.ref, timeout=timeout)
                f.status, f.failure_message = st.status, st.failure_message
        return folds

    return poll_until(
        fetch,
        lambda fs: all(f.ended for f in fs),
        wait_timeout=wait_timeout,
        poll=poll,
        on_poll=on_poll,
        still=lambda fs: (
            f"fold kernels still running after {wait_timeout:g} s ({summary(fs)}); they keep running "
            "on Kaggle: run the same command again later to pick them up (nothing is pushed twice)"
        ),
    )


def run_fanout(
    base: KernelSpec,
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    options: RunOptions | None = None,
    hooks: RunHooks | None = None,
    name: str | None = None,
) -> FanoutRun:
    """Push (or pick up) the ``base.n_folds`` fold kernels, wait for all, then run the inference kernel as
    ``run_kernel`` does, with the same ``options`` and ``hooks`` (``hooks.on_folds(folds)`` sees every poll of the
    folds). ``base`` holds the options every kernel shares (train args, datasets, machine shape...), ``name`` the
    user's kernel name, the prefix of theirs. Returns a ``FanoutRun``: with failed folds (their log tails fetched)
    and no inference when a fold did not complete; rerunning then re-pushes only those folds.

    Example: ``run_fanout(KernelSpec(train_args="--no-pretrained"), "kernels",
    RunOptions(sample_csv=Path("data/sample_submission.csv"), message="r18 5 folds"))``
    """
    opt, hooks = options or RunOptions(), hooks or RunHooks()
    if opt.attach:
        raise ConfigError(
            "--attach does not apply to --fold each: run the same command again, it picks up every "
            "kernel already pushed and pushes none twice"
        )
    fold_specs, infer = fanout_specs(base, base.n_folds, name)
    opt.check()
    root, timeout, say = Path(root), opt.timeout, hooks.say
    user = kaggle_api.username()
    folds = push_folds(fold_specs, root, user=user, timeout=timeout, say=say)
    wait_folds(folds, wait_timeout=opt.wait_timeout, poll=opt.poll, timeout=timeout, on_poll=hooks.on_folds)
    result = FanoutRun(folds)
    for f in result.failed:
        f.log = failed_log_tail(f.ref, f.folder / "output", opt.transfer_timeout, timeout)
    if result.failed:
        return result
    infer = replace(infer, fold_kernels=[f"{f.ref}@{f.version}" for f in folds])
    rec = read_last_push(root / infer.name)
    if rec and rec.get("finished") and rec.get("digest") == kernel_digest(render_kernel(infer, user, root)):
        say(
            f"{user}/{infer.name} version {rec.get('version')} already ran over these fold versions "
            f"(finished {rec.get('finished')}): nothing to push"
        )
        result.done_before = True
    else:
        result.inference = run_kernel(infer, root, opt, hooks)
        if not result.inference.ok:
            return result
    for f in folds:  # the fan-out is over: a rerun starts a new one
        mark_push(f.folder, finished=utc_now())
    return result
