"""One writer per folder: a run folder, a packed store or a feature store is locked while a process writes it.

``hold(folder, "hcd train")`` takes an exclusive ``flock`` on ``FOLDER/.hcd.lock`` and writes the holder's
PID, host, command and start time into it. A second process asking for the same folder is refused at once
with a ``LockedError`` naming the holder. The kernel drops a lock when its process ends, however it ends
(kill -9 included), so a lock is never stale; a holder that ends cleanly removes the file, and the details
left in it by one that died are reported as a note when the next process takes the folder over. Whoever
takes a folder removes the ``.tmp-*`` files a killed writer left in it (``fsutil``'s atomic writes leave none
otherwise). Readers (``hcd cv``, ``hcd report``, ``hcd runs``) never lock, so they never wait.

Locks are re-entrant within a process (``hcd demo`` trains inside its own work folder), and a torchrun rank
other than 0 takes none: rank 0 holds the run folder for all of them. Where ``fcntl`` is missing (Windows),
folders are not locked.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hcd_kit.console import err_console
from hcd_kit.errors import LockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable)
LOCK_NAME = ".hcd.lock"
_held: dict[Path, int] = {}  # folder -> how many times this process holds it


def lock_path(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / LOCK_NAME


def _other_rank() -> bool:
    """A torchrun rank other than 0: rank 0 holds the folder for the whole job."""
    return os.environ.get("RANK", "0") != "0"


@contextlib.contextmanager
def hold(
    folder: str | os.PathLike[str], command: str, fix: str = "wait for it to finish, or stop it"
) -> Iterator[None]:
    """Hold ``folder`` for writing while the block runs; ``LockedError`` (one line) if another process holds it.

    A folder created for the lock alone is removed again if the block leaves nothing else in it (a command
    refused by its checks leaves no empty run folder behind).
    """
    key = Path(folder).resolve()  # one key per folder, however it is spelled (a symlink, ..)
    if fcntl is None or _other_rank() or key in _held:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    created = not key.exists()
    key.mkdir(parents=True, exist_ok=True)
    fd = _lock(key, fix)
    if fd is None:  # a file system without locks (some FUSE and network mounts): run unguarded, as hcd did before
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
        return
    try:
        previous = _read(fd)
        if previous.get("pid"):  # a holder that ended without releasing (kill -9, a power cut) left its details
            err_console.print(
                f"note: {key} was left locked by {_describe(previous)}, which is no longer running; taken over",
                soft_wrap=True,
                highlight=False,
            )
        _write(fd, command)
        for stale in key.rglob(".tmp-*"):  # half-written by a holder that was killed: never part of any output
            stale.unlink(missing_ok=True)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            lock_path(key).unlink(missing_ok=True)  # released cleanly: no file, no note for the next holder
    finally:
        os.close(fd)  # closing the descriptor drops the flock
        if created:
            with contextlib.suppress(OSError):
                key.rmdir()  # a folder made for the lock alone, left empty by a refused command


def _lock(folder: Path, fix: str) -> int | None:
    """An open descriptor of ``folder``'s lock file, exclusively locked; ``LockedError`` if another holds it;
    None, after a note, where the file system cannot lock."""
    path = lock_path(folder)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder (a Kaggle input): whoever writes there fails on its own writes
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            os.close(fd)
            raise LockedError(f"{folder} is in use by {_describe(info)}; {fix}") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            os.close(fd)
            path.unlink(missing_ok=True)
            err_console.print(
                f"note: the file system of {folder} cannot lock files: nothing stops a second command writing there",
                soft_wrap=True,
                highlight=False,
            )
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file between our open and our lock: lock the one there now


def holding(folder_of: Callable[[dict], str | os.PathLike[str]], command: str, fix: str) -> Callable[[F], F]:
    """Decorate a library function that writes one folder: ``folder_of(arguments)`` names it (the call's
    arguments by parameter name, defaults applied), and the call holds it (``hold``) while it runs::

        @holding(lambda a: a["out"], "hcd embed", "wait for it to finish, or write to another --out")
        def embed(data_dir, model, out, ...): ...
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            with hold(folder_of(bound.arguments), command, fix):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def hold_run(run_dir: str | os.PathLike[str]) -> contextlib.AbstractContextManager[None]:
    """``hcd train``'s hold on its run folder (taken by the CLI before torch loads, and again by the library)."""
    return hold(run_dir, "hcd train", "wait for it to finish (or stop it), or train into another --run-dir")


def holder(folder: str | os.PathLike[str]) -> dict | None:
    """Who holds ``folder`` now (pid, host, command, since), or None: for readers that want to say so."""
    path = lock_path(folder)
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"pid": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data) if data.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, command: str) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "argv": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv[:6])),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _describe(info: dict) -> str:
    if not info:
        return "another hcd process"
    what = info.get("command") or "hcd"
    return f"{what} (PID {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')})"
