"""``hcd download``: fetch the competition zip through the Kaggle gateway and unpack it safely and resumably.

Layout while working (all under the data folder, so every rename stays on one file system)::

    DIR/.hcd-download/<competition>.zip    the archive (the client resumes a partial one)
    DIR/.hcd-download/archive.json         written once the archive is complete: its size
    DIR/.hcd-download/staging/             members extracted here, each CRC-checked while streaming
    DIR/train/ DIR/test/ DIR/*.csv         moved into place from staging
    DIR/.hcd-download.json                 completion marker (members and sizes), written LAST

A tree without a valid marker is never taken as complete: a later run re-uses a complete archive, wipes
staging, and extracts again. The competition name must be a Kaggle slug (it becomes a file name) and is
checked before credentials or any write. Member names are checked before anything is extracted: absolute
paths, ``..`` components, symlinks, and top-level names hcd itself uses in DIR (``packed/``, ``folds.csv``,
the working folder, the marker, ...) are refused; installing those would delete hcd's own files. The
archive is never read into memory (the real one is ~6.3 GB with ~277k members).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from hcd_kit.console import err_console, progress
from hcd_kit.errors import ConfigError, DataError
from hcd_kit.fsutil import atomic_write_text
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.layout import COMPETITION, FOLDS_REPORT, PREPARE_REPORT, DataLayout

MARKER = ".hcd-download.json"
WORK = ".hcd-download"
EXPECTED = {COMPETITION: ("train", "test", "train_labels.csv", "sample_submission.csv")}
CHUNK = 1 << 20
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")  # Kaggle's competition slugs; no '/', '.' or '..' can pass
# what hcd itself keeps in DIR: an archive entry with one of these names would replace (or delete) it;
# compared case-folded, since on a case-insensitive file system "Packed" is "packed"
_LAYOUT = DataLayout(Path("."))
RESERVED = frozenset(
    n.casefold() for n in (WORK, MARKER, _LAYOUT.packed_dir.name, _LAYOUT.folds_csv.name, PREPARE_REPORT, FOLDS_REPORT)
)


@dataclass(frozen=True)
class DownloadResult:
    data_dir: Path
    competition: str
    skipped: bool  # True when a complete, verified download was already there
    entries: tuple[str, ...]  # top-level names installed in data_dir
    files: int
    archive_bytes: int


def download_competition(
    data_dir: str | Path,
    competition: str = COMPETITION,
    *,
    timeout: float | None = None,
    stall_timeout: float | None = None,
    retries: int | None = None,
) -> DownloadResult:
    """Make ``data_dir`` hold the competition's files, downloading and extracting only what is missing.

    ``timeout`` bounds each call (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s); ``stall_timeout`` (default:
    ``timeout``) the time the download may go without a new byte; ``retries`` is for HTTP 429/5xx answers.
    """
    check_competition(competition)
    root = Path(data_dir)
    done = read_marker(root, competition)
    if done is not None:
        shutil.rmtree(root / WORK, ignore_errors=True)  # leftovers of a run killed after its marker
        return done
    kaggle_api.get_api(timeout)  # credentials first: nothing is written or shown without them
    work = root / WORK
    work.mkdir(parents=True, exist_ok=True)
    stall = timeout if stall_timeout is None else stall_timeout
    archive = _fetch_archive(competition, work, stall, retries)
    members = _checked_members(archive, competition)
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _extract(archive, members, staging)
    except DataError:
        shutil.rmtree(staging, ignore_errors=True)
        _forget_archive(archive)  # corrupt: the next run must fetch it again
        raise
    entries = _install(staging, root, members)
    sizes = {m.filename: m.file_size for m in members if not m.is_dir()}
    marker = {
        "competition": competition,
        "archive_bytes": archive.stat().st_size,
        "entries": list(entries),
        "files": sizes,
    }
    atomic_write_text(root / MARKER, json.dumps(marker, separators=(",", ":")))
    shutil.rmtree(work, ignore_errors=True)
    return DownloadResult(root, competition, False, entries, len(sizes), marker["archive_bytes"])


def check_competition(competition: str) -> None:
    """ConfigError unless ``competition`` is a Kaggle slug: it names files (``<competition>.zip``), so a
    name like ``../x`` would write outside the data folder."""
    if not SLUG.fullmatch(competition):
        raise ConfigError(
            f"--competition {competition!r} is not a Kaggle competition slug (lowercase letters, "
            f"digits and hyphens, as in {COMPETITION}); copy it from the competition's URL"
        )


def read_marker(root: Path, competition: str) -> DownloadResult | None:
    """The recorded download if ``root`` holds it completely (every file present with its size), else None."""
    try:  # a damaged marker (cut short, garbage, another shape) means "not downloaded": it is fetched again
        marker = json.loads((root / MARKER).read_text())
        files: dict[str, int] = marker["files"]
        if marker["competition"] != competition:
            return None
        for name, size in files.items():
            if (root / name).stat().st_size != size:
                return None
        return DownloadResult(root, competition, True, tuple(marker["entries"]), len(files), marker["archive_bytes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------- download
def _fetch_archive(competition: str, work: Path, stall_timeout: float | None, retries: int | None) -> Path:
    archive = work / f"{competition}.zip"
    record = work / "archive.json"
    try:
        if json.loads(record.read_text())["bytes"] == archive.stat().st_size:
            err_console.print(f"re-using the complete archive {archive}", soft_wrap=True)
            return archive
    except (OSError, ValueError, KeyError, TypeError):
        pass
    record.unlink(missing_ok=True)
    with _bytes_progress() as bar:
        task = bar.add_task(f"download {competition}.zip", total=None)

        def on_bytes(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        kaggle_api.download_competition_archive(
            competition, work, on_bytes=on_bytes, stall_timeout=stall_timeout, retries=retries
        )
    atomic_write_text(record, json.dumps({"bytes": archive.stat().st_size}))
    return archive


def _bytes_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
    )


def _forget_archive(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    (archive.parent / "archive.json").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- extraction
def _checked_members(archive: Path, competition: str) -> list[zipfile.ZipInfo]:
    """The archive's members, after refusing any that could write outside the target folder."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        _forget_archive(archive)
        raise DataError(
            f"the downloaded archive {archive.name} is not a valid zip ({exc}); it was deleted, "
            "run `hcd download` again"
        ) from None
    for info in members:
        problem = _unsafe(info)
        if problem:
            raise DataError(
                f"refusing to extract {archive}: member {info.filename!r} {problem}; nothing was "
                "extracted, delete the archive if it is not a genuine Kaggle download"
            )
    tops = {PurePosixPath(m.filename).parts[0] for m in members if m.filename.strip("/")}
    clash = sorted(t for t in tops if t.casefold() in RESERVED)
    if clash:
        raise DataError(
            f"refusing to extract {archive}: top-level entry {clash[0]!r} is a name hcd uses in the "
            "data folder; nothing was extracted, delete the archive if it is not a genuine Kaggle "
            "download"
        )
    missing = [e for e in EXPECTED.get(competition, ()) if e not in tops]
    if missing:
        raise DataError(f"the archive {archive} lacks {', '.join(missing)}; is --competition right?")
    return members


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if not name.strip("/"):
        return "has an empty name"
    return None


def _extract(archive: Path, members: list[zipfile.ZipInfo], staging: Path) -> None:
    """Stream every member into ``staging``; zipfile checks each CRC when a member is read to its end."""
    files = [m for m in members if not m.is_dir()]
    made: set[Path] = set()
    with zipfile.ZipFile(archive) as zf, progress("files") as bar:
        task = bar.add_task("extract", total=len(files))
        for info in files:
            target = staging / info.filename
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DataError(
                    f"the downloaded archive {archive.name} is corrupt ({info.filename}: {exc}); "
                    "it was deleted and nothing was extracted, run `hcd download` again"
                ) from None
            bar.advance(task)


def _install(staging: Path, root: Path, members: list[zipfile.ZipInfo]) -> tuple[str, ...]:
    """Move the extracted top-level entries into ``root``, replacing stale copies; the marker comes after.

    ``_checked_members`` refused any entry named like hcd's own files, so what is replaced here is only a
    stale copy of the competition's own entries.
    """
    (root / MARKER).unlink(missing_ok=True)
    entries = sorted({PurePosixPath(m.filename).parts[0] for m in members})
    for name in entries:
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        (staging / name).replace(target)
    return tuple(entries)
