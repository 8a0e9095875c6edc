"""``--fold each``: training kernels over the folds, then one inference kernel that ensembles their outputs.

``fanout_specs`` turns the options of `hcd kernel run` into fold kernels (``NAME-fold-K``, or ``NAME-fold-K-L`` for
one that trains ``folds_per_kernel`` folds at once, one per GPU, with ``--strategy fold-parallel``: Kaggle bills a
session's wall-clock, not its GPUs, so on T4 x2 five folds take three sessions, not five) and the inference
kernel (``NAME-predict`` / ``hcd-predict-folds``), which attaches the fold kernels as ``kernel_sources`` and
rebuilds ``run/`` from their outputs inside Kaggle. Kaggle runs at most two GPU sessions per account at once and
queues nothing beyond them, so ``run_fanout`` schedules them (``schedule.Scheduler``): at most ``max_sessions``
live, the next pushed when one ends; then ``run_kernel`` runs the inference kernel (fetch, validate, submit).
Before the first push it reads the GPU quota left this week and refuses, in one line, a fan-out whose planned
hours (fold kernels x each one's time budget + margin, ``FanoutPlan``) do not fit, saying what would.

Never push twice: a rerun picks up every fold version that is queued, running or complete (``run.pick_up``, per
kernel), re-pushes only the fold kernels that failed, and picks up the inference kernel the same way; a push
whose answer never came is looked for at the service first (``pushonce``). The inference kernel's script names
the fold versions it gathers, so its digest says which fold versions a finished inference run was built on: a
rerun after a kill at the very end finds it finished over the same versions and pushes nothing. Once the whole
fan-out has finished, a rerun starts a new one (as `hcd kernel run` does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from hcd_kit.errors import ConfigError
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.kernel import DEFAULT_ROOT, kernel_digest, render_kernel
from hcd_kit.kaggle.pushonce import created
from hcd_kit.kaggle.run import (
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
from hcd_kit.kaggle.schedule import WAITING, FoldKernel, Scheduler, summary
from hcd_kit.kaggle.sessions import MAX_SESSIONS, account_ledger, gpu_hours_left
from hcd_kit.kaggle.spec import KernelSpec, check_spec

__all__ = ["FanoutPlan", "FanoutRun", "FoldKernel", "fanout_specs", "push_folds", "run_fanout", "summary"]

PREDICT_NAME = "hcd-predict-folds"
KERNEL_MARGIN_H = 0.75  # a fold kernel's session beyond training: install, prepare, folds, cv, the saved output
SESSION_LIMIT_H = 12.0  # Kaggle stops a GPU session at 12 h


@dataclass
class FanoutPlan:
    """How the fan-out spends the GPU quota: ``folds_per_kernel`` folds trained at once in each fold kernel (one
    per GPU), ``time_budget`` the `hcd train --time-budget` each gets (None: its train args set one, or a
    --config may), ``budget_hours`` that budget in hours (None: not known, no quota check)."""

    folds_per_kernel: int = 1
    time_budget: str | None = None
    budget_hours: float | None = None

    @property
    def kernel_hours(self) -> float | None:
        """A fold kernel's planned session: its training budget plus the margin, at most Kaggle's 12 h."""
        if self.budget_hours is None:
            return None
        return min(self.budget_hours + KERNEL_MARGIN_H, SESSION_LIMIT_H)

    def schedule_hours(self, kernels: int, max_sessions: int) -> float | None:
        """Wall-clock hours for ``kernels`` fold kernels, ``max_sessions`` at a time."""
        h = self.kernel_hours
        return None if h is None else math.ceil(kernels / max(1, max_sessions)) * h


@dataclass
class FanoutRun:
    folds: list[FoldKernel]
    inference: KernelRun | None = None
    done_before: bool = False  # the inference over these fold versions had already finished

    @property
    def failed(self) -> list[FoldKernel]:
        return [f for f in self.folds if f.ended and f.status != "COMPLETE"]


def _with_fold_args(base: KernelSpec, group: list[int], time_budget: str | None) -> list[str]:
    words = list(base.train_args)
    keys = [w.split("=")[0] for w in words]
    if len(group) > 1:
        strategy = (base.train_overrides or {}).get("strategy")
        if strategy is None and "--strategy" in keys:
            at = keys.index("--strategy")
            strategy = words[at].partition("=")[2] or (words[at + 1] if at + 1 < len(words) else "")
        if strategy not in (None, "fold-parallel"):
            raise ConfigError(
                f"--folds-per-kernel {len(group)} trains its folds at once, one per GPU (--strategy fold-parallel): "
                f"drop --strategy {strategy} from --train-args, or pass --folds-per-kernel 1"
            )
        if strategy is None:
            words += ["--strategy", "fold-parallel"]
    if time_budget and not {"--time-budget", "--config"} & set(keys):
        words += ["--time-budget", time_budget]
    return words


def _fold_overrides(base: KernelSpec, group: list[int]) -> dict | None:
    """The settings a fold kernel's train args give: the fold-parallel strategy added for several folds at once
    (what its saved output holds follows from it: a last.pt per fold in flight)."""
    if base.train_overrides is None or len(group) < 2:
        return base.train_overrides
    return {"strategy": "fold-parallel", **base.train_overrides}


def fanout_specs(
    base: KernelSpec,
    n_folds: int,
    name: str | None = None,
    folds_per_kernel: int = 1,
    time_budget: str | None = None,
) -> tuple[list[KernelSpec], KernelSpec]:
    """The fold kernels' specs (``folds_per_kernel`` folds each, trained at once) and the inference kernel's (its
    ``fold_kernels`` still without versions). ``time_budget`` goes to every fold kernel's `hcd train` whose train
    args set none."""
    if base.mode != "train":
        raise ConfigError(
            "--fold each trains one kernel per fold; --weights-dataset makes an inference-only kernel: drop one of them"
        )
    if not 2 <= n_folds <= 20:
        raise ConfigError(f"--n-folds {n_folds}: --fold each needs 2 to 20 folds")
    if not 1 <= folds_per_kernel <= 8:
        raise ConfigError(f"--folds-per-kernel {folds_per_kernel}: use 1 to 8 (one fold per GPU of the machine)")
    prefix = name or "hcd-train"
    groups = [list(range(k, min(k + folds_per_kernel, n_folds))) for k in range(0, n_folds, folds_per_kernel)]
    folds = [
        replace(
            base,
            fold=",".join(map(str, g)),
            name=f"{prefix}-fold-{'-'.join(map(str, g))}",
            n_folds=n_folds,
            train_args=_with_fold_args(base, g, time_budget),
            train_overrides=_fold_overrides(base, g),
        )
        for g in groups
    ]
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


def check_quota(kernels: int, plan: FanoutPlan, n_folds: int, timeout: float | None = None) -> str:
    """Refuse (ConfigError, one line) ``kernels`` fold kernels to push whose planned hours exceed the GPU quota
    left this week, saying what would fit; else return a line saying what was checked ("" when nothing was)."""
    need_each = plan.kernel_hours
    if not kernels or need_each is None:
        return ""
    left = gpu_hours_left(timeout)
    if left is None:
        return "the GPU quota left could not be read: not checked"
    need = kernels * need_each
    if need <= left + 1e-9:
        return f"{kernels} fold kernels of at most {need_each:.2f} h each: {need:.1f} of the {left:.1f} GPU hours left"
    fits = []
    per = plan.folds_per_kernel
    if per == 1 and math.ceil(n_folds / 2) * need_each <= left:
        fits.append(f"--folds-per-kernel 2 on T4 x2 ({math.ceil(n_folds / 2)} sessions)")
    max_kernels = int(left // need_each)
    fewer = min(max_kernels * per, n_folds - 1)
    if fewer >= 2:
        fits.append(f"--n-folds {fewer}")
    budget_h = left / kernels - KERNEL_MARGIN_H
    if plan.budget_hours is not None and budget_h >= 0.25:
        fits.append(f'--train-args "--time-budget {int(budget_h * 60)}m"')
    what = "; what fits: " + ", or ".join(fits) if fits else "; wait until the quota refreshes"
    raise ConfigError(
        f"the fan-out needs {kernels} fold kernel sessions of up to {need_each:.2f} GPU hours each ({need:.1f} h), "
        f"more than the {left:.1f} h of this week's GPU quota left (nothing was pushed){what}"
    )


def _pick_up(specs: list[KernelSpec], root: Path, user: str, timeout: float | None, say) -> list[FoldKernel]:
    """Render every fold kernel and pick up each live or completed version (pushed before, or created by a push
    whose answer never came); the others wait for a GPU session."""
    out = []
    for spec in specs:
        folder = render_kernel(spec, user, root)
        ref = f"{user}/{spec.name}"
        rec = pick_up(folder, ref, kernel_digest(folder), timeout, say)
        if rec is None and created(folder, timeout) is not None:
            rec = read_last_push(folder) or {}
            say(f"{ref} version {rec.get('version')}, whose push got no answer, was created: not pushing again")
        fk = FoldKernel([int(k) for k in spec.fold.split(",")], ref, folder)
        if rec is not None:
            fk.version, fk.status = rec.get("version"), "pushed"  # polled next: live or complete
        out.append(fk)
    return out


def push_folds(
    specs: list[KernelSpec],
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    *,
    user: str | None = None,
    timeout: float | None = None,
    session_timeout: float | None = None,
    max_sessions: int = MAX_SESSIONS,
    say: Callable[[str], None] = lambda line: None,
) -> list[FoldKernel]:
    """Render every fold kernel, pick up those with a live or completed version, and push the others while a GPU
    session is free (failed ones again); the rest stay ``waiting`` (`hcd kernel run --fold each` pushes them)."""
    user = user or kaggle_api.username()
    folds = _pick_up(specs, Path(root), user, timeout, say)
    sched = Scheduler(folds, account_ledger(max_sessions, timeout), timeout, session_timeout, say)
    for f in folds:
        if f.live:
            sched.ledger.confirm(f.ref, f.version)
    sched.poll()
    sched.start()
    return folds


def run_fanout(
    base: KernelSpec,
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    options: RunOptions | None = None,
    hooks: RunHooks | None = None,
    name: str | None = None,
    plan: FanoutPlan | None = None,
) -> FanoutRun:
    """Pick up or push the fold kernels of ``base.n_folds`` folds (``plan``: folds per kernel, time budget),
    at most ``options.max_sessions`` live at once, the next pushed as one ends; then run the inference kernel
    as ``run_kernel`` does, with the same ``options`` and ``hooks`` (``hooks.on_folds(folds)`` sees every round of
    the schedule). ``base`` holds the options every kernel shares (train args, datasets, machine shape...),
    ``name`` the user's kernel name, the prefix of theirs. Refuses, before any push, fold kernels whose planned
    hours exceed the GPU quota left. Returns a ``FanoutRun``: with failed fold kernels (their log tails fetched)
    and no inference when one did not complete; rerunning then re-pushes only those.

    Example: ``run_fanout(KernelSpec(train_args="--no-pretrained"), "kernels",
    RunOptions(sample_csv=Path("data/sample_submission.csv"), message="r18 5 folds"), plan=FanoutPlan(2, "1h", 1.0))``
    """
    opt, hooks, plan = options or RunOptions(), hooks or RunHooks(), plan or FanoutPlan()
    if opt.attach:
        raise ConfigError(
            "--attach does not apply to --fold each: run the same command again, it picks up every "
            "kernel already pushed and pushes none twice"
        )
    fold_specs, infer = fanout_specs(base, base.n_folds, name, plan.folds_per_kernel, plan.time_budget)
    opt.check()
    root, timeout, say = Path(root), opt.timeout, hooks.say
    user = kaggle_api.username()
    folds = _pick_up(fold_specs, root, user, timeout, say)
    checked = check_quota(sum(f.status == WAITING for f in folds), plan, base.n_folds, timeout)
    if checked:
        say(f"GPU quota: {checked}")
    sched = Scheduler(folds, account_ledger(opt.max_sessions, timeout), timeout, opt.session_timeout, say)
    for f in folds:
        if f.live:
            sched.ledger.confirm(f.ref, f.version)
    sched.run(wait_timeout=opt.wait_timeout, poll=opt.poll, on_poll=hooks.on_folds)
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
