"""`hcd kernel push --fold each` and `hcd kernel run --fold each`: the fold fan-out (``hcd_kit.kaggle.fanout``).

Not commands of their own: `kernel push` and `kernel run` (cli/kernel.py) hand their options here when
--fold is ``each``; cli/_kernel_options.py reads them into the specs and the ``RunOptions`` (once, for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hcd_kit.cli._kernel_options import fanout_specs_from, owner, run_options_from


def _say(line: str) -> None:
    from rich.markup import escape

    from hcd_kit.console import console

    console.print(escape(line), soft_wrap=True)


def push_each(opts: Mapping[str, Any]) -> None:
    """Push (or pick up) one training kernel per fold; render the inference kernel, pushed by `kernel run`."""
    from hcd_kit.kaggle import push_folds, render_kernel

    folds, infer = fanout_specs_from(opts)
    root = opts["root"]
    user = owner(opts["dry_run"])
    if opts["dry_run"]:
        for spec in folds:
            _say(f"rendered {render_kernel(spec, user, root)}/ (train, fold {spec.fold} of {spec.n_folds})")
    else:
        push_folds(folds, root, user=user, timeout=opts["timeout"], say=_say)
    folder = render_kernel(infer, user, root)
    _say(f"rendered {folder}/ (ensembles the {len(folds)} folds; not pushed: it needs every fold's output)")
    _say(
        "when every fold kernel is COMPLETE, `hcd kernel run --fold each` with the same options picks them up "
        "and pushes it (or run that now: it waits for them)"
    )


def run_each(opts: Mapping[str, Any]) -> None:
    """Drive the fan-out: fold kernels, the wait for all of them, the inference kernel, check and submit."""
    from rich.markup import escape

    from hcd_kit.cli._app import fail
    from hcd_kit.cli._kernel_view import clock, report_run
    from hcd_kit.console import console, err_console
    from hcd_kit.kaggle import RunHooks, run_fanout
    from hcd_kit.kaggle.fanout import summary

    options = run_options_from(opts)
    folds, _ = fanout_specs_from(opts)  # refused before anything is pushed
    lines: list[str] = []

    def on_folds(fs) -> None:
        line = summary(fs)
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
    res = run_fanout(folds[0], opts["root"], options, hooks, name=opts["name"])
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
            f"fold {f.fold} {f.status}" + (f": {f.failure_message}" if f.failure_message else "") for f in res.failed
        )
        raise fail(
            f"{escape(which)}; run the same command again to re-push only the failed fold(s) (the "
            f"{len(res.folds) - len(res.failed)} completed ones are kept)"
        )
    if res.inference is not None:
        report_run(res.inference)
