"""``hcd prepare``: decode every TIFF patch once into the packed store (format: ``hcd_kit.data.store``).

All competition patches share one uncompressed TIFF layout (27,935 bytes, pixels at a fixed offset), so
the fast path parses the first file's header properly, checks that it decodes exactly as PIL decodes it,
and then for every file only checks the size and the header bytes that describe the layout before copying
the pixel bytes straight into the output memory map. Any file that differs goes through a full PIL decode
and validation, so a file written by another tool still packs pixel-exactly, and a bad one (corrupt,
truncated, not 96x96, not RGB, missing) is reported by name. Work is split into chunks over processes,
each writing its rows into the shared ``.npy`` memmap, so peak memory does not grow with the data set.

Writes go to temporary files in the output folder and are renamed into place only when every split
succeeded; ``manifest.json`` (removed first, written last) marks a complete store and holds a fingerprint
of the inputs, so re-running on unchanged inputs does nothing. When bad inputs stop the run, the one-line
error names a few and ``DIR/prepare-problems.csv`` lists them all (a report, not part of any store).

    summary = prepare("data/")                      # train + test, whatever exists
    summary = prepare("data/", splits=("test",))    # what `hcd predict` does when test is not packed
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import multiprocessing as mp
import os
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hcd_kit.console import progress
from hcd_kit.errors import DataError
from hcd_kit.fsutil import atomic_write_text, sha256_file, temp_file_beside
from hcd_kit.data.labels import Problems, forget_report, read_labels, read_sample_submission, report_note, write_report
from hcd_kit.layout import IMAGE_SHAPE, DataLayout
from hcd_kit.data.store import ids_path, images_path, manifest_path

SPLITS = ("train", "test")
FORMAT_VERSION = 1
REPORT = "prepare-problems.csv"  # every bad input of the last failed `hcd prepare`, beside the data
PIXELS = int(np.prod(IMAGE_SHAPE))

# --- TIFF layout -----------------------------------------------------------------------------------------

# type id -> (bytes per value, struct code, codes per value); ASCII (2) is handled as text
_TYPES = {1: (1, "B", 1), 2: (1, "s", 1), 3: (2, "H", 1), 4: (4, "I", 1), 5: (8, "I", 2), 6: (1, "b", 1),
          7: (1, "B", 1), 8: (2, "h", 1), 9: (4, "i", 1), 10: (8, "i", 2), 11: (4, "f", 1), 12: (8, "d", 1)}
# tiles, extra samples, colour map, YCbCr: present means "not a plain chunky RGB strip image"
_UNSUPPORTED_TAGS = {320, 322, 323, 324, 325, 338, 530, 531}


@dataclass(frozen=True)
class TiffLayout:
    """Where the pixels of every file sharing this layout are, and which bytes define the layout."""

    size: int  # exact file size in bytes
    checks: tuple[tuple[int, int, bytes], ...]  # (start, stop, reference bytes) that must match
    strips: tuple[tuple[int, int], ...]  # (offset, nbytes) of the pixel strips, in row order


def _read_ifd(data: bytes, order: str, ifd: int) -> tuple[dict[int, tuple], list[tuple[int, int]]]:
    """Numeric tag values of the first IFD, and the byte ranges that hold them."""
    (n,) = struct.unpack_from(order + "H", data, ifd)
    ranges = [(0, 8), (ifd, ifd + 2 + 12 * n + 4)]
    tags: dict[int, tuple] = {}
    for k in range(n):
        tag, typ, count, raw = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * k)
        if typ not in _TYPES:
            raise ValueError(f"TIFF type {typ}")
        size, code, per = _TYPES[typ]
        nbytes = size * count
        start = struct.unpack_from(order + "I", raw)[0] if nbytes > 4 else None
        if typ == 2:  # description, software, date: text that varies per file and never affects pixels
            continue
        blob = raw[:nbytes] if start is None else data[start : start + nbytes]
        if len(blob) != nbytes:
            raise ValueError("tag data past end of file")
        if start is not None:
            ranges.append((start, start + nbytes))
        tags[tag] = struct.unpack(f"{order}{count * per}{code}", blob)
    return tags, ranges


def _is_plain_rgb(tags: dict[int, tuple]) -> bool:
    def value(tag: int, default: int) -> tuple:
        return tags.get(tag, (default,))

    return (
        value(256, 0) == (96,) and value(257, 0) == (96,) and value(277, 1) == (3,)
        and value(258, 1) == (8, 8, 8) and value(259, 1) == (1,) and value(262, -1) == (2,)
        and value(284, 1) == (1,) and value(266, 1) == (1,) and value(317, 1) == (1,)
        and all(v == 1 for v in value(339, 1)) and not _UNSUPPORTED_TAGS & tags.keys()
    )


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def parse_layout(data: bytes) -> TiffLayout | None:
    """The layout of a baseline uncompressed 96x96 8-bit chunky RGB TIFF, or None if ``data`` is not one."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    try:
        if order is None or struct.unpack_from(order + "H", data, 2)[0] != 42:
            return None
        tags, ranges = _read_ifd(data, order, struct.unpack_from(order + "I", data, 4)[0])
    except (struct.error, ValueError):
        return None
    offsets, counts = tags.get(273), tags.get(279)
    if not _is_plain_rgb(tags) or not offsets or not counts or len(offsets) != len(counts):
        return None
    if sum(counts) != PIXELS or any(o + c > len(data) for o, c in zip(offsets, counts)):
        return None
    checks = tuple((a, b, bytes(data[a:b])) for a, b in _merge(ranges))
    return TiffLayout(size=len(data), checks=checks, strips=tuple(zip(offsets, counts)))


# --- decoding one file -----------------------------------------------------------------------------------


class Decoder:
    """Decodes patches into rows of an output array: fast path when the layout matches, PIL otherwise."""

    def __init__(self, layout: TiffLayout | None) -> None:
        self.layout = layout
        self.buf = bytearray(layout.size + 1 if layout else 0)  # +1 byte: detect files that are too long
        self.fast = 0
        self.pil = 0

    def decode_into(self, path: str, row: np.ndarray) -> str | None:
        """Write the pixels of ``path`` into ``row`` (uint8, 96x96x3); return a problem kind or None."""
        if self.layout is not None:
            try:
                with open(path, "rb", buffering=0) as fh:
                    n = fh.readinto(self.buf)
            except FileNotFoundError:
                return "missing"
            except OSError:
                return "unreadable"
            if n == self.layout.size and all(self.buf[a:b] == ref for a, b, ref in self.layout.checks):
                flat = row.reshape(-1)
                pos = 0
                for off, cnt in self.layout.strips:
                    flat[pos : pos + cnt] = np.frombuffer(self.buf, np.uint8, cnt, off)
                    pos += cnt
                self.fast += 1
                return None
        self.pil += 1
        return self._decode_pil(path, row)

    def _decode_pil(self, path: str, row: np.ndarray) -> str | None:
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns about odd tags; we report the outcome instead
                with Image.open(path) as im:
                    if im.size != IMAGE_SHAPE[1::-1]:
                        return "not 96x96"
                    if im.mode != "RGB":
                        return "not RGB"
                    row[...] = np.asarray(im)
            return None
        except FileNotFoundError:
            return "missing"
        except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            return "truncated" if "truncat" in str(exc).lower() or self._cut_short(path) else "corrupt"

    def _cut_short(self, path: str) -> bool:
        """Empty, or a TIFF header followed by less data than the usual layout holds."""
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = os.path.getsize(path)
        tiff = head in (b"II*\x00", b"MM\x00*")
        return size == 0 or (tiff and self.layout is not None and size < self.layout.size)


def find_layout(paths: list[str]) -> TiffLayout | None:
    """The layout most of ``paths`` share, if it decodes exactly as PIL does (None: decode all with PIL).

    Voting over a sample, rather than trusting the first file, keeps one odd file from sending all the
    others down the slow path.
    """
    found: dict[TiffLayout, list[str]] = {}
    for path in paths:
        try:
            layout = parse_layout(Path(path).read_bytes())
        except OSError:
            continue
        if layout is not None:
            found.setdefault(layout, []).append(path)
    for layout, members in sorted(found.items(), key=lambda kv: -len(kv[1])):
        path = members[0]
        fast, slow = np.zeros(IMAGE_SHAPE, np.uint8), np.zeros(IMAGE_SHAPE, np.uint8)
        dec = Decoder(layout)
        if dec.decode_into(path, fast) is None and dec.fast == 1 and Decoder(None)._decode_pil(path, slow) is None:
            if np.array_equal(fast, slow):
                return layout
    return None


# --- decoding many files in parallel ---------------------------------------------------------------------

_WORKER: dict = {}


def _open_rows(npy: str | Path) -> np.ndarray:
    # a plain ndarray view: slicing an np.memmap builds a memmap object per row, which costs more than a row
    return np.load(npy, mmap_mode="r+").view(np.ndarray)


def _init_worker(npy: str, layout: TiffLayout | None) -> None:
    _WORKER["out"] = _open_rows(npy)
    _WORKER["decoder"] = Decoder(layout)


def _decode_chunk(out: np.ndarray, decoder: Decoder, folder: str, ids: list[str], start: int) -> list:
    bad = []
    for k, i in enumerate(ids):
        kind = decoder.decode_into(os.path.join(folder, i + ".tif"), out[start + k])
        if kind is not None:
            bad.append((start + k, kind))
    return bad


def _work(job: tuple[str, list[str], int]) -> tuple[int, list, int, int]:
    dec = _WORKER["decoder"]
    fast, pil = dec.fast, dec.pil
    bad = _decode_chunk(_WORKER["out"], dec, *job)
    return len(job[1]), bad, dec.fast - fast, dec.pil - pil


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_all(npy: Path, folder: Path, ids: list[str], workers: int, label: str) -> tuple[list, int, int]:
    """Decode ``folder/<id>.tif`` into rows of the ``.npy`` at ``npy``; (bad (row, kind) pairs, fast, pil)."""
    sample = ids[:: max(1, len(ids) // 16)][:16]
    layout = find_layout([os.path.join(folder, f"{i}.tif") for i in sample])
    chunk = int(np.clip(len(ids) // (workers * 8) + 1, 64, 2048))
    jobs = [(str(folder), ids[s : s + chunk], s) for s in range(0, len(ids), chunk)]
    if workers <= 1 or len(jobs) <= 1:
        out, dec = _open_rows(npy), Decoder(layout)
        with progress("img") as bar:
            task = bar.add_task(f"packing {label}", total=len(ids))
            bad = []
            for job in jobs:
                bad += _decode_chunk(out, dec, *job)
                bar.advance(task, len(job[1]))
        return bad, dec.fast, dec.pil
    # fork starts workers in milliseconds (they need nothing but this module); fork before the progress
    # bar starts its refresh thread, since forking a multi-threaded process is unsafe
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    bad, fast, pil = [], 0, 0
    with ctx.Pool(min(workers, len(jobs)), _init_worker, (str(npy), layout)) as pool, progress("img") as bar:
        task = bar.add_task(f"packing {label}", total=len(ids))
        for n, b, f, p in pool.imap_unordered(_work, jobs):
            bad += b
            fast, pil = fast + f, pil + p
            bar.advance(task, n)
    return bad, fast, pil


# --- planning: what to pack, from what -------------------------------------------------------------------


@dataclass
class SplitPlan:
    split: str
    folder: Path
    csv: Path | None  # labels / sample submission the order comes from
    files: dict[str, tuple[int, int]]  # file name -> (size, mtime_ns)
    fingerprint: str
    ids: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    problems: Problems = field(default_factory=Problems)


def _scan(folder: Path) -> dict[str, tuple[int, int]]:
    files = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.endswith(".tif") and entry.is_file():
                st = entry.stat()
                files[entry.name] = (st.st_size, st.st_mtime_ns)
    return files


def _fingerprint(files: dict[str, tuple[int, int]], csv: Path | None) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        size, mtime = files[name]
        h.update(f"{name}\t{size}\t{mtime}\n".encode())
    h.update((sha256_file(csv) if csv is not None and csv.is_file() else "no csv").encode())
    return h.hexdigest()


def _plan(layout: DataLayout, split: str) -> SplitPlan:
    folder = layout.train_dir if split == "train" else layout.test_dir
    csv = layout.train_labels if split == "train" else layout.sample_submission
    if split == "train" and not csv.is_file():
        raise DataError(f"{csv} not found; train images need their labels (run `hcd download`)")
    csv = csv if csv.is_file() else None
    files = _scan(folder)
    return SplitPlan(split, folder, csv, files, _fingerprint(files, csv))


def _listed_ids(csv: Path) -> set[str]:
    """Every id the CSV names, bad rows included (their images are not "unlisted", their rows are bad)."""
    return set(pd.read_csv(csv, usecols=["id"], dtype=str, keep_default_na=False)["id"].str.strip())


def _order(plan: SplitPlan) -> None:
    """Fill ``plan.ids``/``labels`` in the CSV's order; file the CSV and file-set problems."""
    names = set(plan.files)
    if plan.split == "train":
        table = read_labels(plan.csv, plan.problems)
    elif plan.csv is not None:
        table = read_sample_submission(plan.csv, plan.problems)
    else:  # no sample submission: a stable order is all that matters
        table = {"id": np.array(sorted(n[:-4] for n in names), dtype=str)}
    ids = np.asarray(table["id"], dtype=str)
    present = np.array([f"{i}.tif" in names for i in ids], dtype=bool)
    plan.problems.extend("missing", (f"{i}.tif" for i in ids[~present]))
    listed = {f"{i}.tif" for i in _listed_ids(plan.csv)} if plan.csv is not None else names
    extra = "not in train_labels.csv" if plan.split == "train" else "not in sample_submission.csv"
    plan.problems.extend(extra, sorted(names - listed))
    plan.ids = ids[present].tolist()
    plan.labels = np.asarray(table["label"])[present] if plan.split == "train" else None


# --- the command -----------------------------------------------------------------------------------------


@dataclass
class SplitResult:
    split: str
    count: int
    skipped: dict[str, list[str]]
    up_to_date: bool = False
    fast: int = 0  # files read by the fast path
    pil: int = 0  # files decoded by PIL
    seconds: float = 0.0  # decoding time

    @property
    def images_per_s(self) -> float:
        return (self.fast + self.pil) / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class PrepareSummary:
    out: Path
    splits: dict[str, SplitResult]

    @property
    def up_to_date(self) -> bool:
        return all(r.up_to_date for r in self.splits.values())


def _load_manifest(out: Path) -> dict:
    try:
        return json.loads(manifest_path(out).read_text())
    except (OSError, ValueError):
        return {}


def _is_current(out: Path, entry: dict | None, plan: SplitPlan, skip_bad: bool) -> bool:
    if not entry or entry.get("fingerprint") != plan.fingerprint or (entry.get("skipped") and not skip_bad):
        return False
    img, ids = images_path(out, plan.split), ids_path(out, plan.split)
    if not (img.is_file() and ids.is_file()):
        return False
    try:
        return np.load(img, mmap_mode="r").shape == (entry.get("count"), *IMAGE_SHAPE)
    except (OSError, ValueError):
        return False


def _new_tmp(out: Path, target: Path, tmps: list[Path]) -> Path:
    tmp = temp_file_beside(target, out)
    tmps.append(tmp)
    return tmp


def _compact(out: Path, npy: Path, keep: np.ndarray, tmps: list[Path], block: int = 4096) -> Path:
    """Copy the rows in ``keep`` into a new ``.npy``, a block at a time (memory stays bounded)."""
    src = np.load(npy, mmap_mode="r")
    dst_path = _new_tmp(out, npy, tmps)
    dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=(len(keep), *IMAGE_SHAPE))
    for s in range(0, len(keep), block):
        dst[s : s + block] = src[keep[s : s + block]]
    dst.flush()
    return dst_path


def _allocate(npy: Path, n: int) -> None:
    """Create the ``.npy`` for ``n`` patches with its blocks reserved up front.

    Filling a sparse file makes the filesystem allocate blocks page by page as workers write, which on a
    VM costs more than the decoding; one fallocate call makes writing about twice as fast.
    """
    arr = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE))
    size = arr.offset + arr.nbytes
    del arr
    if hasattr(os, "posix_fallocate") and size:
        fd = os.open(npy, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # not supported by this filesystem: blocks get allocated while writing instead
            pass
        finally:
            os.close(fd)


def _pack_split(out: Path, plan: SplitPlan, workers: int, tmps: list[Path]) -> tuple[Path, SplitResult]:
    """Decode one split into a temporary ``.npy``; bad images are added to ``plan.problems``."""
    npy = _new_tmp(out, images_path(out, plan.split), tmps)
    n = len(plan.ids)
    _allocate(npy, n)
    t0 = time.perf_counter()
    bad, fast, pil = decode_all(npy, plan.folder, plan.ids, workers, plan.split)
    seconds = time.perf_counter() - t0
    for row, kind in sorted(bad):
        plan.problems.add(kind, f"{plan.ids[row]}.tif")
    if len(bad) == n:  # nothing to keep; the caller reports it (with the full list)
        plan.ids = []
        return npy, SplitResult(plan.split, 0, {}, fast=fast, pil=pil, seconds=seconds)
    if bad:
        keep = np.setdiff1d(np.arange(n), [r for r, _ in bad])
        npy = _compact(out, npy, keep, tmps)
        plan.ids = [plan.ids[i] for i in keep]
        plan.labels = None if plan.labels is None else plan.labels[keep]
    result = SplitResult(plan.split, len(plan.ids), {}, fast=fast, pil=pil, seconds=seconds)
    return npy, result


def _ids_csv(plan: SplitPlan) -> str:
    if plan.labels is None:
        return "id\n" + "".join(f"{i}\n" for i in plan.ids)
    return "id,label\n" + "".join(f"{i},{int(y)}\n" for i, y in zip(plan.ids, plan.labels))


def _commit(tmp: Path, target: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _requested(layout: DataLayout, splits) -> list[str]:
    splits = list(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown split {unknown[0]!r}; use train, test or all")
    if set(splits) == set(SPLITS):  # "all": whatever has inputs
        have = [s for s in SPLITS if (layout.root / s).is_dir()]
        if not have:
            raise DataError(f"no train/ or test/ folder in {layout.root}; run `hcd download` or pass --data-dir")
        return have
    for s in splits:
        if not (layout.root / s).is_dir():
            raise DataError(f"no {s}/ folder in {layout.root}; run `hcd download` or pass --data-dir")
    return splits


def _clean_stale(out: Path) -> None:
    """Remove temporary files a killed run left behind (they are never part of a finished store)."""
    for name in ("images.npy", "ids.csv"):
        for s in SPLITS:
            for p in out.glob(f".tmp-{s}_{name}.*"):
                p.unlink(missing_ok=True)


def _report(layout: DataLayout, out: Path, plans: list[SplitPlan]) -> str:
    """Write every problem of ``plans`` to ``DIR/prepare-problems.csv``; the clause naming it for the error."""
    found = {p.split: p.problems for p in plans if p.problems}
    # beside the data; beside the store when the data folder is read-only (a Kaggle input)
    return report_note(write_report(found, REPORT, layout.root, out.parent))


def prepare(
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    splits=SPLITS,
    skip_bad: bool = False,
    workers: int | None = None,
) -> PrepareSummary:
    """Pack ``data_dir``'s patches into ``out`` (default ``data_dir/packed``); see the module docstring.

    Raises DataError listing every bad input by kind and name unless ``skip_bad``, in which case the bad
    ones are left out and recorded in the manifest (and in the returned summary).
    """
    layout = DataLayout.of(data_dir)
    out = Path(out) if out is not None else layout.packed_dir
    workers = default_workers() if not workers or workers < 1 else workers
    plans = [_plan(layout, s) for s in _requested(layout, splits)]
    manifest = _load_manifest(out)
    entries = manifest.get("splits", {}) if manifest.get("format") == FORMAT_VERSION else {}
    results: dict[str, SplitResult] = {}
    todo = []
    for p in plans:
        entry = entries.get(p.split)
        if _is_current(out, entry, p, skip_bad):
            results[p.split] = SplitResult(p.split, entry["count"], entry.get("skipped", {}), up_to_date=True)
        else:
            todo.append(p)
    if not todo:
        return PrepareSummary(out, results)

    for p in todo:
        _order(p)
        if not p.ids:
            why = f"{p.problems.summary()}; {_report(layout, out, [p])}" if p.problems else "no .tif files"
            raise DataError(f"nothing to pack in {p.folder} ({why}); check --data-dir")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clean_stale(out)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise DataError(f"cannot write the store to {out} ({exc.strerror}); pass --out DIR to write elsewhere") from None
    tmps: list[Path] = []
    try:
        packed = {}
        for p in todo:
            packed[p.split] = _pack_split(out, p, workers, tmps)
            if not p.ids:
                raise DataError(f"no good image in {p.folder}: {p.problems.summary()}; "
                                f"{_report(layout, out, [p])}; check --data-dir")
        bad = [p for p in todo if p.problems]
        if bad and not skip_bad:
            total = sum(len(p.problems) for p in bad)
            detail = " | ".join(f"{p.split}: {p.problems.summary()}" for p in bad)
            raise DataError(
                f"{total} bad input(s) in {layout.root}, no store written: {detail}; {_report(layout, out, bad)}; "
                "fix or remove them, or rerun with --skip-bad to pack the rest"
            )
        manifest_path(out).unlink(missing_ok=True)  # from here on the store must not look complete
        for p in todo:
            npy, result = packed[p.split]
            _commit(npy, images_path(out, p.split))
            atomic_write_text(ids_path(out, p.split), _ids_csv(p))
            result.skipped = p.problems.as_dict()
            results[p.split] = result
    except BaseException:
        if created:  # a failed first run leaves no empty store folder behind
            for t in tmps:
                t.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    write_manifest(out, layout, plans, results, entries)
    forget_report(REPORT, layout.root, out.parent)
    return PrepareSummary(out, {s: results[s] for s in sorted(results, key=SPLITS.index)})


def write_manifest(out: Path, layout: DataLayout, plans: list[SplitPlan], results: dict, old: dict) -> None:
    """Write ``manifest.json`` last: it is what makes the store complete (``open_store`` checks it)."""
    splits = {s: e for s, e in old.items() if s not in results and images_path(out, s).is_file()}
    for p in plans:
        r = results[p.split]
        if r.up_to_date:
            splits[p.split] = old[p.split]
            continue
        splits[p.split] = {
            "count": r.count,
            "source": str(p.folder.resolve()),
            "csv": None if p.csv is None else p.csv.name,
            "fingerprint": p.fingerprint,
            "skipped": r.skipped,
            "positives": None if p.labels is None else int(np.sum(p.labels)),
        }
    manifest = {
        "format": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "image_shape": list(IMAGE_SHAPE),
        "splits": {s: splits[s] for s in SPLITS if s in splits},
    }
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=2) + "\n")
