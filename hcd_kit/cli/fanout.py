"""`hcd kernel push --fold each` and `hcd kernel run --fold each`: the fold fan-out (``hcd_kit.kaggle.fanout``).

Not commands of their own: `kernel push` and `kernel run` (cli/kernel.py) hand their options here when
--fold is ``each``; cli/_kernel_options.py reads them into the specs and the ``RunOptions`` (once, for both).
Here the time plan is made, because only the CLI may ask the training layer: a fold kernel's time budget (the
user's --time-budget in --train-args, else the recipe's expected hours for its folds on T4 x2, with a margin),
the session time-out of every push (``--session-timeout``, default that budget plus a margin) and the fan-out's
wait (the schedule: ceil(fold kernels / sessions) x a fold kernel's hours, plus a margin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Optional

import typer

from hcd_kit.cli._kernel_options import owner, run_options_from, say_output, spec_from

DEFAULT_BUDGET_H = 11.0  # the kernel template's own default (DEFAULT_TIME_BUDGET): training + TTA end before 12 h
SAFETY = 1.25  # a recipe's expected hours, times this, rounded up to a quarter hour, is a fold kernel's budget
WAIT_MARGIN_H = 1.0  # the fan-out waits this much beyond its schedule


def session_options(
    max_sessions: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            help="GPU sessions hcd keeps live at once (Kaggle runs 2 per account and queues none); shared by every "
            "`hcd kernel run` of your user on this machine. With --fold each the others wait here for a slot.",
        ),
    ] = 2,
    folds_per_kernel: Annotated[
        Optional[int],
        typer.Option(
            metavar="N",
            show_default="2 on T4 x2, else 1",
            help="With --fold each: folds each kernel trains at once, one per GPU (--strategy fold-parallel). "
            "Kaggle bills a session's time, not its GPUs: five folds in three sessions, not five.",
        ),
    ] = None,
    session_timeout: Annotated[
        Optional[float],
        typer.Option(
            metavar="SECONDS",
            show_default="time budget + margin",
            help="Kaggle stops each pushed session after this long, capping the GPU quota it spends.",
        ),
    ] = None,
) -> None:
    """The options of `hcd kernel push|run` about GPU sessions (a signature only)."""


def _say(line: str) -> None:
    from rich.markup import escape

    from hcd_kit.console import console

    console.print(escape(line), soft_wrap=True)


def time_budget(words: list[str], n_folds: int = 5, folds: int | None = None) -> tuple[str | None, float]:
    """A kernel's `hcd train --time-budget` to add (None: its train args ``words`` set one, or a --config may) and
    that budget in hours. With ``folds`` (a fold kernel training that many at once), the recipe's expected hours
    for them on T4 x2; otherwise the kernel template's 11 h."""
    from hcd_kit.training import parse_duration, parse_train_args

    train = parse_train_args(words, "--train-args", one_run=True)  # words: read, not split again
    given = train.overrides.get("time_budget")
    if given:
        return None, parse_duration(given) / 3600
    if "config" in train.options:
        return None, DEFAULT_BUDGET_H
    hours = _recipe_hours(train, n_folds, folds) if folds else None
    if hours is None:
        return (f"{DEFAULT_BUDGET_H:g}h" if folds else None), DEFAULT_BUDGET_H
    hours = min(max(0.5, math.ceil(hours * SAFETY * 4) / 4), DEFAULT_BUDGET_H)
    return f"{int(hours * 60)}m", hours


def _recipe_hours(train, n_folds: int, folds: int) -> float | None:
    from hcd_kit.training.costs import COMPETITION_SIZE, rates, run_seconds
    from hcd_kit.training.recipes import default_recipe, recipe_config

    overrides = {k: v for k, v in train.overrides.items() if k != "time_budget"}
    cfg = recipe_config(train.options.get("recipe") or default_recipe("cuda"), overrides)
    r = rates(cfg.model, cfg.img_size, "t4x2")
    if r is None:
        return None
    return run_seconds(r, cfg.epochs, *COMPETITION_SIZE, folds=n_folds, trained_folds=folds) / 3600


def session_timeout(opts: Mapping[str, Any], budget_hours: float | None) -> float:
    """--session-timeout, else the budget plus the kernel's margin, at most Kaggle's 12 h (seconds)."""
    from hcd_kit.kaggle.fanout import KERNEL_MARGIN_H, SESSION_LIMIT_H

    if opts.get("session_timeout"):
        return float(opts["session_timeout"])
    return min((budget_hours or DEFAULT_BUDGET_H) + KERNEL_MARGIN_H, SESSION_LIMIT_H) * 3600


def _plan(opts: Mapping[str, Any]):
    """The fold kernels' and the inference kernel's specs, the ``FanoutPlan`` and the session time-out."""
    from hcd_kit.kaggle import FanoutPlan, fanout_specs
    from hcd_kit.kaggle.spec import DEFAULT_SHAPE

    base = spec_from(opts, fold="0", name=None)  # the options every kernel of the fan-out shares
    per = opts.get("folds_per_kernel") or (2 if base.machine_shape == DEFAULT_SHAPE else 1)
    budget, hours = time_budget(base.train_args, opts["n_folds"], min(per, opts["n_folds"]))
    plan = FanoutPlan(per, budget, hours)
    folds, infer = fanout_specs(base, opts["n_folds"], opts["name"], per, budget)
    say_output(folds[0], f"{folds[0].name} (the most folds of the fold kernels): ")
    return base, folds, infer, plan, session_timeout(opts, hours)


def push_each(opts: Mapping[str, Any]) -> None:
    """Pick up or push fold kernels while GPU sessions are free; render the inference kernel, pushed by `kernel run`."""
    from hcd_kit.kaggle import push_folds, render_kernel

    _, folds, infer, _, limit = _plan(opts)
    root = opts["root"]
    user = owner(opts["dry_run"])
    if opts["dry_run"]:
        for spec in folds:
            _say(f"rendered {render_kernel(spec, user, root)}/ (train, folds {spec.fold} of {spec.n_folds})")
    else:
        pushed = push_folds(
            folds,
            root,
            user=user,
            timeout=opts["timeout"],
            session_timeout=limit,
            max_sessions=opts["max_sessions"],
            say=_say,
        )
        waiting = [f.label for f in pushed if f.status == "waiting"]
        if waiting:
            _say(
                f"{', '.join(waiting)} wait for a GPU session (Kaggle runs {opts['max_sessions']} at once and "
                "queues none): `hcd kernel run --fold each` with the same options pushes them as sessions end"
            )
    folder = render_kernel(infer, user, root)
    _say(f"rendered {folder}/ (ensembles the {opts['n_folds']} folds; not pushed: it needs every fold's output)")
    _say(
        "when every fold kernel is COMPLETE, `hcd kernel run --fold each` with the same options picks them up "
        "and pushes it (or run that now: it waits for them, and pushes the fold kernels still waiting)"
    )


def run_each(opts: Mapping[str, Any]) -> None:
    """Drive the fan-out: fold kernels, the wait for all of them, the inference kernel, check and submit."""
    from rich.markup import escape

    from hcd_kit.cli._app import fail
    from hcd_kit.cli._kernel_view import clock, report_run
    from hcd_kit.console import console, err_console
    from hcd_kit.kaggle import RunHooks, run_fanout
    from hcd_kit.kaggle.fanout import summary

    base, folds, _, plan, limit = _plan(opts)  # refused before anything is pushed
    sessions = opts["max_sessions"]
    wait = opts.get("wait_timeout")
    if wait is None:  # the schedule: every fold kernel, `sessions` at a time, and a margin
        wait = (plan.schedule_hours(len(folds), sessions) or DEFAULT_BUDGET_H) * 3600 + WAIT_MARGIN_H * 3600
    options = run_options_from({**opts, "wait_timeout": wait})
    options.session_timeout, options.max_sessions = limit, sessions
    lines: list[str] = []

    def on_folds(fs) -> None:
        line = summary(fs, sessions)
        if not lines or lines[-1] != line:  # one line per change
            lines.append(line)
            console.print(f"  {escape(line)}", soft_wrap=True)

    last: list[str] = []

    def on_poll(st, elapsed: float) -> None:
        if not last or last[-1] != st.status:
            last.append(st.status)
            console.print(f"  {st.ref}: {st.status} ({clock(elapsed)} since the push)")

    hooks = RunHooks(
        on_poll=on_poll,
        on_score=lambda r: console.print(f"  submission {r.ref}: {r.status}"),
        on_folds=on_folds,
        say=_say,
    )
    res = run_fanout(base, opts["root"], options, hooks, name=opts["name"], plan=plan)
    if res.failed:
        for f in res.failed:
            err_console.print(
                f"last lines of the log of {f.ref} version {f.version} ({f.folder / 'output'}):",
                highlight=False,
                soft_wrap=True,
            )
            for line in f.log:
                err_console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
        which = "; ".join(
            f"{f.label} {f.status}" + (f": {f.failure_message}" if f.failure_message else "") for f in res.failed
        )
        raise fail(
            f"{escape(which)}; run the same command again to re-push only the failed fold kernel(s) (the "
            f"{len(res.folds) - len(res.failed)} completed ones are kept)"
        )
    if res.inference is not None:
        report_run(res.inference)
