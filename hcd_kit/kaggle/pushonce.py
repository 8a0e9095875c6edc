"""Push a kernel at most once, whatever came back: ask the service which version exists before and after.

A push whose answer never came (a time-out, a lost connection, a 5xx, or a process killed in the middle) may
still have created a version, and so started, and billed, a GPU session. ``push_once`` therefore reads the
kernel's latest version first (``latest_version``: the client's GetKernel, ``current_version_number``), marks the
push as under way in ``ROOT/<name>/last_push.json`` (``pushing``: the version before, the digest), pushes, and
after any error asks again: a newer version is the push, recorded as if its answer had come (and not pushed
again). A later ``push_once`` for the same folder, in this process or a rerun, finds the mark and asks first. An
error that says no version was created (a refusal inside the answer, such as the two-session limit) clears it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hcd_kit.errors import ConfigError, KaggleError
from hcd_kit.fsutil import atomic_write_json
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle import poll as _poll
from hcd_kit.kaggle.calls import MAX_BACKOFF
from hcd_kit.kaggle.kernel import PushResult, kernel_digest, push_kernel
from hcd_kit.kaggle.sessions import SessionLedger, slot_refused

LAST_PUSH = "last_push.json"  # run.LAST_PUSH: the push record of a kernel folder
PUSHING = "pushing"
# how calls.py words a failure whose outcome is unknown (no answer, a lost connection, a 5xx): the push may have
# created a version; any other error is the service's own answer (a refusal, saved with bad sources)
_UNANSWERED = ("no answer from Kaggle", "could not reach Kaggle", "Kaggle failed to", "could not push")


def latest_version(ref: str, timeout: float | None = None) -> int:
    """The number of kernel ``ref``'s latest version at the service; 0 when it has none (never pushed)."""
    api = kaggle_api.get_api()
    owner, slug = ref.split("/", 1)

    def fetch() -> int:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        request = ApiGetKernelRequest()
        request.user_name, request.kernel_slug = owner, slug
        try:
            with api.build_kaggle_client() as client:
                resp = client.kernels.kernels_api_client.get_kernel(request)
        except Exception as exc:
            # one's own kernel that does not exist: 404 (or, as for kernels_status, 403 "kernels.get denied")
            if getattr(getattr(exc, "response", None), "status_code", None) in (403, 404):
                return 0
            raise
        return int(getattr(getattr(resp, "metadata", None), "current_version_number", None) or 0)

    return kaggle_api.call(f"read the latest version of kernel '{ref}'", fetch, timeout=timeout)


def _record(folder: Path) -> dict:
    try:
        rec = json.loads((folder / LAST_PUSH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _mark(folder: Path, pending: dict | None) -> None:
    rec = _record(folder)
    if pending is None:
        if PUSHING not in rec:
            return
        rec.pop(PUSHING)
    else:
        rec[PUSHING] = pending
    atomic_write_json(folder / LAST_PUSH, rec)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created(folder: str | os.PathLike[str], timeout: float | None = None) -> PushResult | None:
    """The version an unanswered push from ``folder`` created, recorded as its push; None when the service has
    none newer than the version before that push (or no push was under way)."""
    folder = Path(folder)
    rec = _record(folder)
    pending = rec.get(PUSHING)
    if not isinstance(pending, dict):
        return None
    meta = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))
    ref = meta["id"]
    after = latest_version(ref, timeout)
    if after <= int(pending.get("before") or 0):
        return None
    if rec.get("ref") == ref and rec.get("version") == after:  # recorded already (e.g. saved with bad sources)
        _mark(folder, None)
        return None
    result = PushResult(ref=ref, url="", version=after, machine_shape=meta.get("machine_shape", ""))
    record = {
        "ref": ref,
        "url": "",
        "version": after,
        "machine_shape": result.machine_shape,
        "time": pending.get("time") or _now(),
        "digest": pending.get("digest"),
        "recovered": _now(),  # its answer never came: found at the service
    }
    atomic_write_json(folder / LAST_PUSH, record)
    if pending.get("digest") != kernel_digest(folder):
        raise ConfigError(
            f"an interrupted push of {ref} with other options created version {after}; it is recorded in "
            f"{folder / LAST_PUSH}: pick it up with `hcd kernel run --attach`, or wait until it ends and run again"
        )
    return result


def push_once(
    folder: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    session_timeout: float | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> PushResult:
    """Push the rendered kernel in ``folder`` unless an earlier push from it, whose answer never came, created a
    version (then that version). After an error, the service is asked whether the push created a version before
    the error is raised: a version it did create is returned, never pushed again.

    Example: ``push_once("kernels/hcd-train-fold-0", session_timeout=3 * 3600)``
    """
    folder = Path(folder)
    ref = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))["id"]
    found = created(folder, timeout)
    if found is not None:
        say(f"an earlier push of {ref} whose answer never came created version {found.version}: not pushing again")
        return found
    before = latest_version(ref, timeout)
    _mark(folder, {"before": before, "digest": kernel_digest(folder), "time": _now()})
    try:
        return push_kernel(folder, timeout=timeout, session_timeout=session_timeout, say=say)
    except KaggleError as exc:
        if not str(exc).startswith(_UNANSWERED):  # the service answered: nothing to find
            _mark(folder, None)
            raise
        try:
            found = created(folder, timeout)
        except KaggleError:
            found = None  # cannot tell now: the mark stays, and the next try asks first
        if found is None:
            raise KaggleError(
                f"{exc}; Kaggle may still create that version: run the same command again, it asks Kaggle "
                "before pushing and never pushes twice"
            ) from None
        say(f"the push of {ref} failed ({exc}), but Kaggle created version {found.version}: not pushing again")
        return found


def push_in_slot(
    folder: str | os.PathLike[str],
    ledger: SessionLedger,
    *,
    timeout: float | None = None,
    session_timeout: float | None = None,
    wait_timeout: float = 12 * 3600.0,
    poll: float = 10.0,
    say: Callable[[str], None] = lambda line: None,
) -> PushResult:
    """``push_once`` as soon as a GPU session is free: one of ``ledger``'s slots (this machine's hcd runs), and
    at the service (a session started elsewhere holds one: its refusal). Waits with backoff, saying why once;
    past ``wait_timeout`` s a ``KaggleError`` (nothing pushed). The slot is ``ledger``'s until ``release``."""
    folder = Path(folder)
    ref = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))["id"]
    clock = _poll.time  # the module's clock: tests put a fake one there
    deadline, delay, told = clock.monotonic() + wait_timeout, poll, False
    while True:
        if ledger.reserve(ref):
            try:
                res = push_once(folder, timeout=timeout, session_timeout=session_timeout, say=say)
            except KaggleError as exc:
                ledger.release(ref)
                if not slot_refused(exc):
                    raise
                why = "Kaggle says every GPU session of the account is taken (some by sessions started elsewhere?)"
            else:
                ledger.confirm(ref, _record(folder).get("version", res.version))
                return res
        else:
            held = ", ".join(str(e["ref"]) for e in ledger.held())
            why = f"hcd runs on this machine hold all {ledger.limit} GPU sessions ({held})"
        if not told:
            say(f"{ref} waits for a GPU session: {why}; trying again as sessions end")
            told = True
        if clock.monotonic() + delay > deadline:
            raise KaggleError(f"no GPU session free for {ref} after {wait_timeout:g} s ({why}); nothing was pushed")
        clock.sleep(delay)
        delay = min(delay * _poll.GROWTH, MAX_BACKOFF)
