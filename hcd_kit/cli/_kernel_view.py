"""How `hcd kernel run` shows a kernel run: the live status line, and how the run ended."""

from __future__ import annotations

import time

from hcd_kit.cli._app import fail


class LiveStatus:
    """The live status line: the session's last status and the time since its push, redrawn by rich."""

    def __init__(self, ref: str) -> None:
        self.ref, self.status, self.since = ref, "pushed", time.time()

    def update(self, status: str, elapsed: float) -> None:
        self.status, self.since = status, time.time() - elapsed

    def __rich__(self) -> str:
        return f"{self.ref}: {self.status}, {clock(time.time() - self.since)} since the push"


def clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def report_run(run) -> None:
    """Print how a `KernelRun` ended (log tail and a non-zero exit when it failed; the check; the score)."""
    from rich.markup import escape

    from hcd_kit.console import console, err_console

    if not run.ok:
        err_console.print(
            f"last lines of the log of {run.ref} version {run.version} ({run.out_dir}):",
            highlight=False,
            soft_wrap=True,
        )
        for line in run.log:
            err_console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
        why = f": {escape(run.failure_message)}" if run.failure_message else ""
        again = "fix it and run again" if run.status == "ERROR" else "run again"
        raise fail(f"kernel {run.ref} version {run.version} ended {run.status}{why}; {again} to push a new version")
    checked = "checked against the sample" if run.validated else "NOT checked (no sample_submission.csv in --data-dir)"
    console.print(f"{run.submission}: {checked}", soft_wrap=True)
    rec = run.record
    if rec is not None:
        if rec.status == "ERROR":
            why = f": {escape(rec.error_description)}" if rec.error_description else "; see its page for the reason"
            raise fail(f"Kaggle could not score submission {rec.ref}{why}")
        score = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        console.print(f"public score {score(rec.public_score)}  private score {score(rec.private_score)}")
