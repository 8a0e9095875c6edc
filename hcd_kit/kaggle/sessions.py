"""The account's GPU sessions as this machine's hcd processes see them: a ledger of slots, and the quota.

Kaggle runs at most two GPU sessions per account at once and queues nothing beyond them: a third push is refused
inside an HTTP 200 (``Maximum batch GPU session count of 2 reached``) and no version is created. So every
`hcd kernel run` of one user on one machine shares ``STATE/gpu-sessions.json`` (STATE: ``$HCD_STATE_DIR``, else
``$XDG_STATE_HOME/hcd``, else ``~/.local/state/hcd``), read and written under an exclusive lock: a process takes a
slot (``reserve``) before it pushes, fills in the version after (``confirm``), and frees it when it sees the
session end (``release``). A slot whose process is gone (killed, or ended while its session goes on) is asked
about at the service and freed once its session has ended. A session started elsewhere (the web editor, another
machine) is not in the ledger: the service's refusal (``slot_refused``) says it holds a slot, and the caller
waits and tries again, never fights it.

``gpu_hours_left`` reads the weekly GPU quota (the client's ``quota_view``, kaggle >= 2.2.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from hcd_kit.errors import KaggleError
from hcd_kit.fsutil import atomic_write_json
from hcd_kit.kaggle import api as kaggle_api

ENV_STATE = "HCD_STATE_DIR"
MAX_SESSIONS = 2  # Kaggle's batch GPU sessions per account at once
SLOT_REFUSAL = "Maximum batch GPU session count"
QUOTA_REFUSAL = "Maximum weekly GPU quota"
LEDGER = "gpu-sessions.json"


def state_dir() -> Path:
    """hcd's per-user state folder: ``$HCD_STATE_DIR``, else ``$XDG_STATE_HOME/hcd``, else ``~/.local/state/hcd``."""
    if os.environ.get(ENV_STATE):
        return Path(os.environ[ENV_STATE])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "hcd"


def slot_refused(exc: BaseException) -> bool:
    """Whether a push failed because every GPU slot of the account is taken (no version was created)."""
    return SLOT_REFUSAL.lower() in str(exc).lower()


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process (a shared home folder): trust its entry
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class SessionLedger:
    """The GPU slots this machine's hcd processes hold (``STATE/gpu-sessions.json``), at most ``limit`` at once.

    ``is_live(ref)`` asks the service whether kernel ``ref``'s latest session is still queued or running; it is
    called only for the slots of processes that are gone (any error counts as ended: the service's own refusal
    is the last word)."""

    def __init__(
        self, limit: int = MAX_SESSIONS, is_live: Callable[[str], bool] | None = None, path: Path | None = None
    ) -> None:
        self.limit = limit
        self.is_live = is_live
        self.path = path or state_dir() / LEDGER

    def _read(self) -> list[dict]:
        try:  # damaged (cut short, garbage, another shape): no slots known here; the service's refusal still is
            entries = json.loads(self.path.read_text(encoding="utf-8")).get("sessions", [])
            return [e for e in entries if isinstance(e, dict) and e.get("ref")]
        except (OSError, ValueError, AttributeError, TypeError):
            return []

    def _write(self, entries: list[dict]) -> None:
        atomic_write_json(self.path, {"sessions": entries})

    def _still_held(self, entry: dict) -> bool:
        if _alive(int(entry.get("pid") or 0), str(entry.get("host") or "")):
            return True
        if self.is_live is None:
            return True
        try:
            return bool(self.is_live(str(entry["ref"])))
        except (KaggleError, OSError):
            return False

    def held(self) -> list[dict]:
        """The slots held now (those of gone processes checked with the service, and dropped once ended)."""
        with _locked(self.path):
            entries = [e for e in self._read() if self._still_held(e)]
            self._write(entries)
            return entries

    def reserve(self, ref: str) -> bool:
        """Take a slot for a push of kernel ``ref`` if one is free (True); False when all ``limit`` are held."""
        with _locked(self.path):
            entries = [e for e in self._read() if e["ref"] != ref and self._still_held(e)]
            ok = len(entries) < self.limit
            if ok:
                entries.append(self._entry(ref, None))
            self._write(entries)
            return ok

    def confirm(self, ref: str, version: int | None) -> None:
        """Kernel ``ref``'s session (``version``) holds a slot, owned by this process (a picked-up one too)."""
        with _locked(self.path):
            entries = [e for e in self._read() if e["ref"] != ref]
            self._write([*entries, self._entry(ref, version)])

    def release(self, ref: str) -> None:
        """Kernel ``ref``'s session has ended (or its push created none): free its slot."""
        with _locked(self.path):
            entries = self._read()
            if any(e["ref"] == ref for e in entries):
                self._write([e for e in entries if e["ref"] != ref])

    @staticmethod
    def _entry(ref: str, version: int | None) -> dict:
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"ref": ref, "version": version, "pid": os.getpid(), "host": socket.gethostname(), "since": since}


def account_ledger(limit: int = MAX_SESSIONS, timeout: float | None = None) -> SessionLedger:
    """The ledger of this user's GPU slots, asking the service about the slots of processes that are gone."""
    from hcd_kit.kaggle.kernel import kernel_status

    return SessionLedger(limit, lambda ref: not kernel_status(ref, timeout=timeout).done)


def gpu_hours_left(timeout: float | None = None) -> float | None:
    """The weekly GPU hours left (allowed - used - reserved by live sessions), or None when the service does
    not say (an older client or service: the caller goes on unchecked)."""
    api = kaggle_api.get_api()
    if not hasattr(api, "quota_view"):
        return None
    try:
        resp = kaggle_api.call("read the GPU quota", api.quota_view, timeout=timeout, retries=1)
    except KaggleError:
        return None
    quota = getattr(resp, "gpu_quota", None)
    total = getattr(quota, "total_time_allowed", None)
    if quota is None or total is None:
        return None
    spent = [getattr(quota, name, None) for name in ("time_used", "time_reserved")]
    hours = lambda d: d.total_seconds() / 3600 if d is not None else 0.0  # noqa: E731
    return max(0.0, hours(total) - sum(hours(d) for d in spent))
