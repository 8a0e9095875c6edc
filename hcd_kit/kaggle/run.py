"""``hcd kernel run``: push a kernel (or pick up the version already pushed), wait, fetch, check, submit.

``run_kernel`` renders the kernel, pushes it with ``push_kernel`` (which records the push in
``ROOT/<name>/last_push.json`` before anything waits), waits for the session with bounded polls, downloads
every output file, validates ``submission.csv`` against the competition's sample and, with a message, submits
it and waits for the score; the ledger row names the kernel and its version.

Never push twice: ``last_push.json`` holds the version and a digest of what was pushed, and the run adds how
far it got (``fetched``, ``submission_ref``, ``finished``). A rerun after Ctrl-C or a lost connection whose render is
unchanged picks up that version while it is queued, running, or complete and its run unfinished; ``attach``
always picks it up (and never renders). A submission already made for it is waited for, not made again.
A session that ends in anything but COMPLETE comes back with the tail of its log and Kaggle's message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hcd_kit.damage import first_line
from hcd_kit.errors import ConfigError, KaggleError
from hcd_kit.fsutil import atomic_write_json
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.api import DEFAULT_TRANSFER_TIMEOUT
from hcd_kit.kaggle.kernel import (
    DEFAULT_ROOT,
    KernelStatus,
    kernel_digest,
    kernel_output,
    kernel_status,
    render_kernel,
)
from hcd_kit.kaggle.ledger import LedgerRecord, ledger_path, read_ledger, update_records
from hcd_kit.kaggle.poll import poll_until
from hcd_kit.kaggle.pushonce import push_in_slot
from hcd_kit.kaggle.sessions import MAX_SESSIONS, account_ledger
from hcd_kit.kaggle.spec import KernelSpec, check_spec
from hcd_kit.kaggle.submit import submit_file, wait_for_score
from hcd_kit.runs.submission import validate_submission

LAST_PUSH = "last_push.json"
ACTIVE = ("QUEUED", "RUNNING", "NEW_SCRIPT")
LOG_TAIL = 30  # lines of a failed session's log shown


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_last_push(folder: str | os.PathLike[str]) -> dict | None:
    """The push record of a kernel folder, or None when nothing was pushed from it."""
    path = Path(folder) / LAST_PUSH
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: cut short or garbage
        raise ConfigError(f"{path} is damaged ({first_line(exc)}); remove it to push afresh") from None
    if not isinstance(rec, dict):
        raise ConfigError(
            f"{path} is damaged (a JSON {type(rec).__name__}, not a push record); remove it to push afresh"
        )
    return rec


def mark_push(folder: Path, **fields: object) -> dict:
    """Add ``fields`` to the push record (atomically): how far the run for that version got."""
    rec = read_last_push(folder) or {}
    rec.update(fields)
    atomic_write_json(folder / LAST_PUSH, rec)
    return rec


def log_tail(path: str | os.PathLike[str], lines: int = LOG_TAIL) -> list[str]:
    """The last ``lines`` lines of a kernel log (Kaggle's JSON list of ``{stream_name, data}``, or plain text)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        entries = json.loads(text)
        if isinstance(entries, list):
            text = "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))
    except ValueError:
        pass
    return text.rstrip("\n").splitlines()[-lines:]


@dataclass
class RunOptions:
    """How ``run_kernel`` (and ``run_fanout``) waits, fetches and submits; what it pushes is the ``KernelSpec``.

    ``attach`` never pushes (the version in ``last_push.json``); ``out_dir`` defaults to ``ROOT/<name>/output``;
    ``sample_csv`` (the competition's sample) validates the fetched ``submission.csv``; ``message`` submits it (then
    the sample is required) and waits up to ``score_timeout`` s for the score. ``wait_timeout`` bounds the wait for
    the session, ``poll`` the first poll interval, ``transfer_timeout`` the download, ``timeout`` each call.
    ``session_timeout`` (s) is the client's session time-out of every push (Kaggle stops the session then);
    ``max_sessions`` the GPU sessions the account runs at once (Kaggle's limit: 2), shared by every `hcd kernel
    run` of the user on this machine (``sessions.SessionLedger``)."""

    attach: bool = False
    out_dir: Path | None = None
    sample_csv: Path | None = None
    message: str | None = None
    ledger: Path | None = None
    wait_timeout: float = 12 * 3600.0
    poll: float = 10.0
    score_timeout: float = 3600.0
    transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT
    timeout: float | None = None
    session_timeout: float | None = None
    max_sessions: int = MAX_SESSIONS

    def check(self) -> None:
        """Refuse a submission that could not be checked against the sample, before anything is pushed."""
        if self.message is not None and (self.sample_csv is None or not Path(self.sample_csv).is_file()):
            raise ConfigError(
                f"--submit checks the kernel's submission against "
                f"{self.sample_csv or 'sample_submission.csv'}, which is missing: run `hcd download` "
                "or pass --data-dir (nothing was pushed)"
            )


def _quiet(line: str) -> None:
    pass


@dataclass
class RunHooks:
    """What a run tells its caller: ``on_poll(status, elapsed_s)`` every poll of the session, ``on_score(record)``
    every poll of the score, ``on_folds(folds)`` every poll of a fan-out's fold kernels, ``say(line)`` each step."""

    on_poll: Callable[[KernelStatus, float], None] | None = None
    on_score: Callable[[LedgerRecord], None] | None = None
    on_folds: Callable[[list], None] | None = None
    say: Callable[[str], None] = _quiet


@dataclass
class KernelRun:
    """What ``run_kernel`` did: the kernel, its version, whether it pushed, and where it ended."""

    ref: str
    version: int | None
    pushed: bool  # False: picked up the version pushed before
    status: str
    out_dir: Path
    failure_message: str = ""
    files: list[Path] = field(default_factory=list)
    submission: Path | None = None  # the fetched submission.csv, validated when a sample was at hand
    validated: bool = False
    record: LedgerRecord | None = None  # the ledger row, with --submit
    log: list[str] = field(default_factory=list)  # tail of the log of a failed session

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETE"


def pick_up(folder: Path, ref: str, digest: str, timeout: float | None, say: Callable[[str], None]) -> dict | None:
    """The push record to pick up instead of pushing again, or None (push). Refuses a second session."""
    rec = read_last_push(folder)
    if not rec or rec.get("finished") or rec.get("ref") != ref:
        return None
    st = kernel_status(ref, timeout=timeout)
    same = rec.get("digest") in (None, digest)  # None: pushed by an older hcd, taken as the same
    lacking = rec.get("invalid_sources")
    if lacking:  # saved without some inputs: never picked up; pushed again only once it has ended
        if st.status in ACTIVE:
            raise ConfigError(
                f"version {rec.get('version')} of kernel {ref} was saved without {'; '.join(lacking)} and is still "
                f"{st.status} (it stops at its start without them): not pushing a second session; run again when "
                "it has ended (`hcd kernel status --name SLUG --wait`)"
            )
        say(f"version {rec.get('version')} of {ref} lacked some sources and ended {st.status}: pushing again")
        return None
    if st.status in ACTIVE and not same:
        raise ConfigError(
            f"version {rec.get('version')} of kernel {ref}, pushed with other options, is still {st.status}; "
            "not pushing a second session: pick it up with `hcd kernel run --attach`, or wait until it ends"
        )
    if same and (st.status in ACTIVE or st.ok):
        say(
            f"picking up {ref} version {rec.get('version')} ({st.status}), pushed {rec.get('time', '?')}: "
            "not pushing again"
        )
        return rec
    return None


def run_kernel(
    spec: KernelSpec,
    root: str | os.PathLike[str] = DEFAULT_ROOT,
    options: RunOptions | None = None,
    hooks: RunHooks | None = None,
) -> KernelRun:
    """Push ``spec`` (or pick up its pushed version), wait for it, fetch its output, check and submit it, as
    ``options`` say (``RunOptions``), telling ``hooks`` (``RunHooks``) how it goes. Returns a ``KernelRun``; a
    failed session is returned (``ok`` False, ``log``).

    Example: ``run_kernel(KernelSpec(fold="0", train_args="--no-pretrained"), "kernels",
    RunOptions(sample_csv=Path("data/sample_submission.csv"), message="r18 fold 0"))``
    """
    opt, hooks = options or RunOptions(), hooks or RunHooks()
    check_spec(spec)
    opt.check()
    root = Path(root)
    sample = Path(opt.sample_csv) if opt.sample_csv is not None else None
    timeout, transfer_timeout, say = opt.timeout, opt.transfer_timeout, hooks.say
    user = kaggle_api.username()
    ref = f"{user}/{spec.name}"
    folder = root / spec.name
    out = Path(opt.out_dir) if opt.out_dir is not None else folder / "output"
    if opt.attach:
        rec = read_last_push(folder)
        if rec is None:
            raise ConfigError(
                f"--attach: nothing was pushed from {folder} ({LAST_PUSH} is missing); "
                "run without --attach to push the kernel"
            )
        ref = str(rec.get("ref") or ref)
        say(f"attaching to {ref} version {rec.get('version')}, pushed {rec.get('time', '?')}")
    else:
        render_kernel(spec, user, root)
        digest = kernel_digest(folder)
        rec = pick_up(folder, ref, digest, timeout, say)
    pushed = rec is None
    slots = account_ledger(opt.max_sessions, timeout)  # a GPU session of the account's few, held until it ends
    if rec is None:
        res = push_in_slot(  # writes last_push.json: a rerun picks this version up
            folder,
            slots,
            timeout=timeout,
            session_timeout=opt.session_timeout,
            wait_timeout=opt.wait_timeout,
            poll=opt.poll,
            say=say,
        )
        rec = read_last_push(folder) or {}
        say(f"pushed {res.ref} version {res.version} asking for {res.machine_shape} {res.url}".rstrip())
    version = rec.get("version")
    slots.confirm(ref, version)
    run = KernelRun(ref, version, pushed, "", out)
    started = _started(rec)
    on_poll = hooks.on_poll
    st = poll_until(
        lambda: kernel_status(ref, timeout=timeout),
        lambda s: s.done,
        wait_timeout=opt.wait_timeout,
        poll=opt.poll,
        on_poll=(lambda s: on_poll(s, time.time() - started)) if on_poll else None,
        still=lambda s: (
            f"kernel {ref} version {version} still {s.status} after {opt.wait_timeout:g} s; it keeps "
            "running on Kaggle: pick it up later with `hcd kernel run --attach` (same options)"
        ),
    )
    run.status, run.failure_message = st.status, st.failure_message
    slots.release(ref)
    if not st.ok:
        run.log = failed_log_tail(ref, out, transfer_timeout, timeout)
        return run
    run.files = kernel_output(ref, out, transfer_timeout=transfer_timeout, timeout=timeout)
    mark_push(folder, fetched=utc_now())
    say(f"downloaded {len(run.files)} files of {ref} into {out}")
    sub = out / "submission.csv"
    if not sub.is_file():
        raise KaggleError(
            f"kernel {ref} version {version} completed without a submission.csv among its "
            f"{len(run.files)} files in {out}; see its log there"
        )
    run.submission = sub
    if sample is not None and sample.is_file():
        validate_submission(sub, sample)
        run.validated = True
    if opt.message is not None:
        run.record = _submit(folder, rec, run, opt.message, sample, spec.competition, opt.ledger, timeout, say)
        run.record = wait_for_score(
            run.record,
            ledger_path(opt.ledger),
            wait_timeout=opt.score_timeout,
            poll=opt.poll,
            on_poll=hooks.on_score,
            timeout=timeout,
        )
    mark_push(folder, finished=utc_now())
    return run


def _started(rec: dict) -> float:
    """When the version was pushed (epoch seconds), for the elapsed time; now if unknown."""
    try:
        return datetime.strptime(str(rec.get("time")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def failed_log_tail(ref: str, out: Path, transfer_timeout: float, timeout: float | None) -> list[str]:
    """Fetch what a failed session left and return the tail of its session log ``<slug>.log`` (the traceback;
    the client lists it last), else of the first other ``*.log`` that has lines (``run/train.log``...)."""
    try:
        files = kernel_output(ref, out, transfer_timeout=transfer_timeout, timeout=timeout)
    except KaggleError as exc:
        return [f"(its log could not be fetched: {exc})"]
    session = f"{ref.rstrip('/').rsplit('/', 1)[-1]}.log"
    logs = sorted((f for f in files if f.suffix == ".log"), key=lambda f: f.name != session)
    return next((tail for f in logs if (tail := log_tail(f))), ["(the session left no log)"])


def _submit(
    folder: Path,
    rec: dict,
    run: KernelRun,
    message: str,
    sample: Path | None,
    competition: str,
    ledger: str | os.PathLike[str] | None,
    timeout: float | None,
    say: Callable[[str], None],
) -> LedgerRecord:
    """Submit the fetched file once per kernel version; the ledger row names the kernel and version."""
    path = ledger_path(ledger)
    earlier = rec.get("submission_ref")
    if earlier:  # an interrupted run already submitted this version: wait for that one, spend no submission
        for r in read_ledger(path):
            if r.ref == earlier:
                say(f"version {run.version} was submitted before as ref {earlier}: not submitting again")
                return r
    record = submit_file(run.submission, message, sample, competition, path, timeout)
    mark_push(folder, submission_ref=record.ref)
    record.kernel, record.kernel_version = run.ref, run.version
    update_records(path, [record])
    say(f"submitted {run.submission} as ref {record.ref}; recorded in {path}")
    return record
