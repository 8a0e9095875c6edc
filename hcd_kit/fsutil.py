"""Atomic file writes: a file hcd writes is either the old one or the complete new one, never half of it.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it over the target
(atomic on POSIX and Windows). An interrupted run leaves at most a ``.tmp-*`` file behind, which never
looks like a finished output.

A full disk is one line too (``DiskFullError``): a write that fails for want of space, whether the writer says
so (``OSError`` ENOSPC / EDQUOT / EFBIG) or not (torch's zip writer raises a bare RuntimeError "unexpected
pos"), names the file, the bytes it needed and the bytes free, and leaves no partial file. ``check_free_space``
is the pre-flight check long jobs run before they write anything.

Fault injection, for tests only: ``HCD_FAULT_ENOSPC=PATTERN`` makes every write through this module to a file
whose name matches the glob PATTERN (e.g. ``best.pt``, ``*.csv``, ``*``) fail with ENOSPC after writing half of
its bytes, as a disk that fills mid-write does. ``HCD_FAULT_KILL=PATTERN`` kills the process there instead
(SIGKILL: no handler and no clean-up runs, as with kill -9 or the OOM killer). ``HCD_FAULT_STALL=PATTERN``
stops the writer there until a signal ends the process, after creating the file ``HCD_FAULT_STALL_READY`` names,
so a test can signal it mid-write on any machine. ``HCD_FAULT_FREE_BYTES=N`` makes every disk look as if it had
at most N bytes free (for the pre-flight checks).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hcd_kit.errors import DiskFullError

UMASK = os.umask(0o022)  # read the process umask (the only way is to set it) ...
os.umask(UMASK)  # ... and put it back at once


def temp_file_beside(target: Path, folder: Path | None = None) -> Path:
    """A new empty ``.tmp-<name>.*`` file in ``folder`` (default: ``target``'s), with the usual permissions
    (mkstemp makes 0600 files, and hcd's outputs are data, not secrets)."""
    fd, name = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=folder or target.parent)
    os.fchmod(fd, 0o666 & ~UMASK)
    os.close(fd)
    return Path(name)


def replace_durably(tmp: Path, target: Path) -> None:
    """The commit step of every atomic write: fsync the finished ``tmp``, then rename it over ``target``.

    For a temporary file filled elsewhere (``temp_file_beside``), e.g. by worker processes.
    """
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Use it for writers that want a file name (``np.save``, ``torch.save``, ``zipfile``)::

        with atomic_path(run_dir / "best.pt", size=payload_bytes(state)) as tmp:
            torch.save(state, tmp)

    ``size``, the bytes the writer is about to write where known, goes into the message if the disk fills.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file_beside(target)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        if is_disk_full(exc):
            raise disk_full(target, size, cause=exc) from None
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from None
    try:
        yield tmp
        inject_faults(target, tmp)
        replace_durably(tmp, target)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)  # before measuring what is free: the partial file is not kept
        raise disk_full(target, size, written, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing that atomically becomes ``target`` when the block succeeds."""
    if not any(m in mode for m in "wx"):
        raise ValueError("atomic_open is for writing")
    with atomic_path(target) as tmp:
        with open(tmp, mode.replace("x", "w"), **kwargs) as fh:
            yield fh
            fh.flush()


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_open(target, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(target: str | os.PathLike[str], data: object) -> None:
    """``data`` as indented JSON and a final newline: readable by people and by ``json.load``."""
    atomic_write_text(target, json.dumps(data, indent=2) + "\n")


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def append_text(path: str | os.PathLike[str], text: str, sync: bool = False) -> None:
    """Append ``text`` to ``path`` (a log, a ledger) in one ``O_APPEND`` write, so that concurrent appends never
    interleave; ``sync`` waits until it is on the disk. A full disk is a ``DiskFullError``."""
    path = Path(path)
    data = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~UMASK)
        try:
            inject_faults(path, None)
            start = os.fstat(fd).st_size
            if os.write(fd, data) < len(data):  # the disk filled mid-line: take the half line back
                os.ftruncate(fd, start)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, len(data), cause=exc) from None
        raise


def reserve(path: str | os.PathLike[str], size: int) -> None:
    """Allocate ``size`` bytes of the file at ``path`` now (``posix_fallocate``), so that a memory-mapped writer
    cannot run out of space half way (a write to a memory map on a full disk is a SIGBUS, not an error).
    ``path`` may be a ``temp_file_beside`` file: errors name the file it will become."""
    path = Path(path)
    target = final_name(path)
    try:
        inject_faults(target, None)
        if not hasattr(os, "posix_fallocate") or not size:
            return
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError as exc:
        if is_disk_full(exc):
            path.unlink(missing_ok=True)
            raise disk_full(target, size, cause=exc) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        # this filesystem cannot reserve blocks: they are allocated while writing, after the free-space check


def final_name(path: Path) -> Path:
    """The file a ``temp_file_beside`` file becomes (``.tmp-NAME.xxxxxxxx`` -> ``NAME``); other paths as they are."""
    if not path.name.startswith(".tmp-"):
        return path
    return path.with_name(path.name.removeprefix(".tmp-").rsplit(".", 1)[0])


# --- a full disk ----------------------------------------------------------------------------------------

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# torch's zip writer reports a short write without its errno: "unexpected pos" / "failed writing file"
_SHORT_WRITE = ("unexpected pos", "failed writing file", "file write failed")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a write failed for want of space (or quota, or a file size limit)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _SHORT_WRITE)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free to this user on the disk that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    limit = os.environ.get("HCD_FAULT_FREE_BYTES")  # tests only (see the module doc)
    return min(free, int(limit)) if limit else free


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} TB"  # unreachable


def disk_full(target: Path, size: int | None, written: int = 0, cause: BaseException | None = None) -> DiskFullError:
    """The one line for a write to ``target`` that found no room; the fix is the same for every writer.

    ENOSPC is a full disk (or, with space left, a file system out of inodes); EDQUOT and EFBIG, or torch's
    errno-less short write with plenty of space left, are a quota or a file size limit."""
    free = free_bytes(target)
    if size:
        need = f"it needs {human_bytes(size)}"
    elif written:
        need = f"it needs more than the {human_bytes(written)} written before it failed"
    else:
        need = "it needs more room"
    code = getattr(cause, "errno", None)
    roomy = free > 2 * max(size or 0, written) + (64 << 20)
    if code in (errno.EDQUOT, errno.EFBIG) or (code is None and roomy):
        return DiskFullError(
            f"could not write {target}: the file system refused it although {human_bytes(free)} is free on the "
            f"disk ({need}); a disk quota or a file size limit (`ulimit -f`) is the likely cause: raise it, or "
            "write to another disk, and run the same command again: finished work is kept"
        )
    inodes = " (or out of inodes: `df -i`)" if roomy else ""
    return DiskFullError(
        f"disk full{inodes}: could not write {target}: {need}, and {human_bytes(free)} is free there; free some "
        "space (or write to another disk) and run the same command again: finished work is kept"
    )


def check_free_space(folder: str | os.PathLike[str], need: int, what: str, fix: str = "") -> None:
    """Pre-flight: refuse at once, in one line, when the disk under ``folder`` cannot hold ``need`` bytes."""
    free = free_bytes(folder)
    if need > free:
        raise DiskFullError(
            f"not enough disk space for {what}: about {human_bytes(need)} needed in {folder}, "
            f"{human_bytes(free)} free; free some space{fix or ' or choose another folder'}"
        )


def payload_bytes(obj: object) -> int:
    """Bytes of the arrays and tensors in a nested dict/list (what ``torch.save`` / ``np.save`` will write)."""
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return int(getattr(obj, "nbytes", 0) or 0)


def inject_faults(target: Path, tmp: Path | None) -> None:
    """Tests only: fail like a full disk (``HCD_FAULT_ENOSPC``), die like kill -9 (``HCD_FAULT_KILL``) or wait for a
    signal (``HCD_FAULT_STALL``) where the pattern matches ``target``'s name, half of the file written (module doc)."""
    enospc, kill = os.environ.get("HCD_FAULT_ENOSPC"), os.environ.get("HCD_FAULT_KILL")
    stall = os.environ.get("HCD_FAULT_STALL")
    hit_enospc = bool(enospc) and fnmatch.fnmatch(target.name, enospc)
    hit_kill = bool(kill) and fnmatch.fnmatch(target.name, kill)
    hit_stall = bool(stall) and fnmatch.fnmatch(target.name, stall)
    if not (hit_enospc or hit_kill or hit_stall):
        return
    if tmp is not None and tmp.exists():  # a disk that fills (a process killed) mid-write leaves half a file
        os.truncate(tmp, tmp.stat().st_size // 2)
    if hit_stall:
        if os.environ.get("HCD_FAULT_STALL_READY"):
            Path(os.environ["HCD_FAULT_STALL_READY"]).touch()
        while True:  # until a signal's handler raises here
            time.sleep(0.05)
    if hit_kill:
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, "No space left on device (HCD_FAULT_ENOSPC)", str(target))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
