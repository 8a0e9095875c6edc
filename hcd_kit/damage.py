"""One line for a damaged file hcd wrote itself: which file, what is wrong with it, and the command that fixes it.

hcd writes every file atomically (``fsutil``), so damage comes from outside: a copy cut short, a file of
another kind put in its place, a hand edit, a disk that lost blocks. The readers of hcd's own files go
through these helpers, which turn whatever the parser raises (json, pandas, numpy and torch each raise
several kinds) into one ``DataError`` line, ``PATH is damaged (WHAT); FIX``, and never a traceback::

    manifest = read_json(path, fix="run `hcd prepare --data-dir data --force`")
    table = read_csv(ids_path, fix, dtype={"id": str})
    images = open_npy(npy_path, fix, np.uint8, (96, 96, 3), rows=n)
    state = load_torch(best_pt, fix="delete runs/r18/fold0 and train it again: ...")

A missing file is not damage: ``FileNotFoundError`` passes through, for the caller to say what creates it.
Heavy libraries are imported on first use, so the command-line help never loads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hcd_kit.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def first_line(exc: BaseException, limit: int = 120) -> str:
    """The first non-empty line of ``exc``'s message (its type's name when it has none), at most ``limit`` long."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def damaged(path: str | os.PathLike[str], what: str, fix: str) -> DataError:
    """The one-line error for a damaged file: ``PATH is damaged (WHAT); FIX``."""
    return DataError(f"{path} is damaged ({what}); {fix}")


def _size(path: str | os.PathLike[str]) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def _what(path: str | os.PathLike[str], exc: BaseException, kind: str) -> str:
    """What is wrong with a text file ``kind`` (JSON, CSV) that failed to parse with ``exc``."""
    if _size(path) == 0:
        return "empty file"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid {kind}: {exc.msg} (line {exc.lineno})"
    return f"not valid {kind}: {first_line(exc)}"


def read_json(path: str | os.PathLike[str], fix: str, kind: type = dict) -> Any:
    """The JSON value in ``path``, which must be a ``kind`` (an object by default); ``damaged`` otherwise."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise damaged(path, _what(path, exc, "JSON"), fix) from None
    if not isinstance(value, kind):
        raise damaged(path, f"a JSON {type(value).__name__} where a {kind.__name__} belongs", fix)
    return value


def read_csv(path: str | os.PathLike[str], fix: str, columns: tuple[str, ...] = (), **kwargs):
    """``pandas.read_csv(path, **kwargs)``, with the ``columns`` it must have; ``damaged`` otherwise."""
    import pandas as pd

    try:
        table = pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:  # UnicodeDecodeError too
        raise damaged(path, _what(path, exc, "CSV"), fix) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise damaged(path, f"lacks column(s) {', '.join(missing)}", fix)
    return table


# --- .npy arrays ------------------------------------------------------------------------------------------


def npy_problem(
    path: str | os.PathLike[str], dtype=None, tail: tuple[int, ...] | None = None, rows: int | None = None
) -> str | None:
    """What is wrong with ``path`` as a C-order ``dtype`` array of shape ``(rows, *tail)``, from its header and
    size alone (nothing is mapped); None when nothing is. ``rows`` None: any number of rows; ``dtype`` and
    ``tail`` None: any array whose file holds every byte its header promises."""
    import numpy as np

    size = _size(path)
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, have = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, have = np.lib.format.read_array_header_2_0(fh)
            else:
                return f"a .npy file of format {version}, which hcd does not write"
            offset = fh.tell()
    except FileNotFoundError:
        raise
    except (ValueError, EOFError, SyntaxError, TypeError):  # numpy says "not a .npy file" in any of these
        return "not a .npy array"
    want = tuple(shape) if tail is None else (rows if rows is not None else shape[0] if shape else None, *tail)
    if (dtype is not None and have != np.dtype(dtype)) or fortran or tuple(shape) != want:
        label = "N" if rows is None else str(rows)
        return (
            f"holds a {have} array of shape {tuple(shape)}"
            f"{' (Fortran order)' if fortran else ''}; expected {np.dtype(dtype)} ({', '.join([label, *map(str, tail or ())])})"
        )
    expected = offset + int(np.prod(shape, dtype=np.int64)) * have.itemsize
    if size is not None and size < expected:
        return f"truncated: {size:,} of {expected:,} bytes"
    if size is not None and size > expected:
        return f"{size:,} bytes where its header promises {expected:,}"
    return None


def open_npy(path: str | os.PathLike[str], fix: str, dtype, tail: tuple[int, ...], rows: int | None = None):
    """``path`` memory-mapped read-only, after ``npy_problem`` found nothing wrong; ``damaged`` otherwise."""
    import numpy as np

    problem = npy_problem(path, dtype, tail, rows)
    if problem is None:
        try:
            return np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise
        except (ValueError, EOFError, OSError) as exc:  # changed under us between the check and the map
            problem = first_line(exc)
    raise damaged(path, problem, fix)


# --- torch files ------------------------------------------------------------------------------------------


def torch_problem(path: str | os.PathLike[str], exc: BaseException) -> str:
    """What is wrong with a ``.pt`` file that ``torch.load`` failed on with ``exc`` (it raises many kinds)."""
    if _size(path) == 0:
        return "empty file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
    except OSError:
        head = b""
    if head != ZIP_MAGIC:
        return "not a torch file"
    return f"truncated or corrupt: {first_line(exc).split('. ')[0]}"


def load_torch(path: str | os.PathLike[str], fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``damaged`` for whatever a damaged file makes torch
    raise (``RuntimeError``, ``UnpicklingError``, ``EOFError``, ``KeyError``, ``IndexError``, ...). An
    ``OSError`` (a file the system cannot read) passes through: the command reports it as such."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of a damaged file is the same user error
        raise damaged(path, torch_problem(path, exc), fix) from None
