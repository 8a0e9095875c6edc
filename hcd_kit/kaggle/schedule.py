"""The fan-out's scheduler: at most ``max_sessions`` fold kernels live at once, the next pushed when one ends.

Kaggle runs at most two GPU sessions per account at once and queues nothing beyond them (a third push is refused,
no version created). So a fold kernel waits here, on our side (status ``waiting``), until the account's ledger
(``sessions.SessionLedger``, shared by every `hcd kernel run` of the user on this machine) has a free slot; it is
then pushed once (``pushonce.push_once``) and polled until it ends, which frees its slot for the next. A push the
service refuses for want of a slot (a session started elsewhere, such as the web editor, holds one) leaves the
kernel waiting: the scheduler says so, backs off and tries again, and never fights it.

``start`` picks up (or pushes) what it can now; ``schedule`` polls and pushes until every fold kernel has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle import poll as _poll
from hcd_kit.kaggle.calls import MAX_BACKOFF
from hcd_kit.kaggle.kernel import kernel_status
from hcd_kit.kaggle.pushonce import push_once
from hcd_kit.kaggle.run import ACTIVE, read_last_push
from hcd_kit.kaggle.sessions import MAX_SESSIONS, SessionLedger, slot_refused

WAITING = "waiting"  # for a GPU session, on our side: not pushed yet
_LIVE = ("pushed", *ACTIVE)  # "pushed": not polled yet


@dataclass
class FoldKernel:
    """One training kernel of a fan-out (one fold, or several trained at once, one per GPU): where it got to."""

    folds: list[int]
    ref: str
    folder: Path
    version: int | None = None
    pushed: bool = False  # False: picked up the version pushed before (or not pushed yet)
    status: str = WAITING
    failure_message: str = ""
    log: list[str] = field(default_factory=list)  # tail of the log of a failed session

    @property
    def label(self) -> str:
        return ("fold " if len(self.folds) == 1 else "folds ") + ",".join(map(str, self.folds))

    @property
    def live(self) -> bool:
        return self.status in _LIVE

    @property
    def ended(self) -> bool:
        return self.status != WAITING and not self.live


def summary(folds: list[FoldKernel], max_sessions: int = MAX_SESSIONS) -> str:
    """One line: each fold kernel's status, then how many wait for a GPU session, are queued, running, complete
    and failed."""
    each = ", ".join(f"{f.label} {f.status}" for f in folds)
    count = lambda *st: sum(f.status in st for f in folds)  # noqa: E731
    waiting, live = count(WAITING), sum(f.live for f in folds)
    failed = sum(f.ended and f.status != "COMPLETE" for f in folds)
    line = (
        f"{each} ({waiting} waiting for a GPU session, {count('pushed', 'QUEUED', 'NEW_SCRIPT')} queued, "
        f"{count('RUNNING')} running, {count('COMPLETE')} complete, {failed} failed)"
    )
    if waiting and live:
        line += f"; Kaggle runs at most {max_sessions} GPU sessions at once and queues none: the others wait here"
    return line


@dataclass
class Scheduler:
    """Pushes and polls the fold kernels of one fan-out; ``ledger`` holds the account's slots on this machine."""

    folds: list[FoldKernel]
    ledger: SessionLedger
    timeout: float | None = None  # each call
    session_timeout: float | None = None  # the client's session time-out of every push
    say: Callable[[str], None] = lambda line: None
    refused: bool = False  # the service said every slot is taken (sessions started elsewhere)

    def poll(self) -> bool:
        """Poll every live fold kernel; free the slot of each that ended. True when one did."""
        changed = False
        for f in self.folds:
            if f.live:
                st = kernel_status(f.ref, timeout=self.timeout)
                changed |= st.status != f.status
                f.status, f.failure_message = st.status, st.failure_message
                if not f.live:
                    self.ledger.release(f.ref)
        return changed

    def start(self) -> bool:
        """Push waiting fold kernels, in order, while the ledger has a free slot. True when one was pushed."""
        pushed = False
        for f in self.folds:
            if f.status != WAITING:
                continue
            if not self.ledger.reserve(f.ref):
                return pushed  # every slot of this machine's processes is taken: wait for one to end
            try:
                res = push_once(f.folder, timeout=self.timeout, session_timeout=self.session_timeout, say=self.say)
            except KaggleError as exc:
                self.ledger.release(f.ref)
                if slot_refused(exc):
                    if not self.refused:
                        self.say(
                            f"Kaggle has no free GPU session for {f.ref} (every one of the account's is taken, some "
                            "by sessions started elsewhere, e.g. the web editor): waiting for one to end, then "
                            "trying again"
                        )
                    self.refused = True
                    return pushed
                raise KaggleError(
                    f"{exc}; {summary(self.folds, self.ledger.limit)}: the fold kernels pushed keep running on "
                    "Kaggle: run the same command again to pick them up (nothing is pushed twice)"
                ) from None
            self.refused = False
            rec = read_last_push(f.folder) or {}
            f.version, f.pushed, f.status = rec.get("version", res.version), True, "pushed"
            self.ledger.confirm(f.ref, f.version)
            self.say(f"pushed {f.ref} ({f.label}) version {f.version} asking for {res.machine_shape}")
            pushed = True
        return pushed

    def run(
        self,
        *,
        wait_timeout: float,
        poll: float,
        on_poll: Callable[[list[FoldKernel]], None] | None = None,
    ) -> list[FoldKernel]:
        """Poll and push until every fold kernel has ended; past ``wait_timeout`` s a ``KaggleError``. The wait
        between rounds starts at ``poll`` s after a change and backs off to 60 s while nothing changes."""
        clock = _poll.time  # the module's clock: tests put a fake one there
        deadline = clock.monotonic() + wait_timeout
        delay = poll
        while True:
            changed = self.poll()
            changed |= self.start()
            if on_poll:
                on_poll(self.folds)
            if all(f.ended for f in self.folds):
                return self.folds
            delay = poll if changed else min(delay * _poll.GROWTH, MAX_BACKOFF)
            if clock.monotonic() + delay > deadline:
                raise KaggleError(
                    f"fold kernels still running or waiting for a GPU session after {wait_timeout:g} s "
                    f"({summary(self.folds, self.ledger.limit)}); those pushed keep running on Kaggle: run the "
                    "same command again later to pick them up and push the rest (nothing is pushed twice)"
                )
            clock.sleep(delay)
