"""Atomic file writes: a file hcd writes is either the old one or the complete new one, never half of it.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it over the target
(atomic on POSIX and Windows). An interrupted run leaves at most a ``.tmp-*`` file behind, which never
looks like a finished output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Use it for writers that want a file name (``np.save``, ``torch.save``, ``zipfile``)::

        with atomic_path(run_dir / "best.pt") as tmp:
            torch.save(state, tmp)
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_file_beside(target)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror}") from None
    try:
        yield tmp
        replace_durably(tmp, target)
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


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
