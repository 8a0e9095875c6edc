"""``hcd prepare``: decode every TIFF patch once into the packed store (format: ``hcd_kit.data.store``).

Planning and orchestration: which splits need packing (a fingerprint of the inputs in the manifest means
re-running on unchanged inputs does nothing, unless ``force`` or a packed file no longer holds what its
record says), in which order (the CSV's), decoding them (``data.decode``
over ``data.tiff``), and committing the store only when every split succeeded. Writes go to temporary files
in the output folder; ``manifest.json`` is removed first and written last, so an interrupted run never
looks complete. When bad inputs (corrupt, truncated, not 96x96, not RGB, missing, bad label rows) stop the
run, the one-line error names a few and ``DIR/prepare-problems.csv`` lists them all (a report, not part of
any store); with ``skip_bad`` they are left out and recorded in the manifest.

    summary = prepare("data/")                      # train + test, whatever exists
    summary = prepare("data/", splits=("test",))    # what `hcd predict` does when test is not packed
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hcd_kit.data.decode import decode_all, default_workers
from hcd_kit.data.labels import listed_ids, read_labels, read_sample_submission
from hcd_kit.data.problems import Problems, forget_report, report_note, write_report
from hcd_kit.data.store import (
    PackedStore,
    SplitRecord,
    commit_split,
    create_images,
    holds_split,
    mark_incomplete,
    open_store,
    read_manifest,
    remove_stale_temps,
    write_manifest,
)
from hcd_kit.errors import DataError
from hcd_kit.fsutil import check_free_space, sha256_file, temp_file_beside
from hcd_kit.layout import IMAGE_SHAPE, PREPARE_REPORT, SPLITS, DataLayout, Split, StoreLayout
from hcd_kit.locks import holding

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
    listed = {f"{i}.tif" for i in listed_ids(plan.csv)} if plan.csv is not None else names
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


def _is_current(out: Path, record: SplitRecord | None, plan: SplitPlan, skip_bad: bool) -> bool:
    if not record or record.fingerprint != plan.fingerprint or (record.skipped and not skip_bad):
        return False
    return holds_split(out, plan.split, record.count)


def _new_tmp(out: Path, target: Path, tmps: list[Path]) -> Path:
    tmp = temp_file_beside(target, out)
    tmps.append(tmp)
    return tmp


def _compact(out: Path, split: str, npy: Path, keep: np.ndarray, tmps: list[Path], block: int = 4096) -> Path:
    """Copy the rows in ``keep`` into a new temporary ``.npy``, a block at a time (memory stays bounded)."""
    src = np.load(npy, mmap_mode="r")
    dst_path = _new_tmp(out, StoreLayout(out).images(split), tmps)
    create_images(dst_path, len(keep))
    dst = np.load(dst_path, mmap_mode="r+")
    for s in range(0, len(keep), block):
        dst[s : s + block] = src[keep[s : s + block]]
    dst.flush()
    return dst_path


def _pack_split(out: Path, plan: SplitPlan, workers: int, tmps: list[Path]) -> tuple[Path, SplitResult]:
    """Decode one split into a temporary ``.npy``; bad images are added to ``plan.problems``."""
    npy = _new_tmp(out, StoreLayout(out).images(plan.split), tmps)
    n = len(plan.ids)
    create_images(npy, n)
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
        npy = _compact(out, plan.split, npy, keep, tmps)
        plan.ids = [plan.ids[i] for i in keep]
        plan.labels = None if plan.labels is None else plan.labels[keep]
    result = SplitResult(plan.split, len(plan.ids), {}, fast=fast, pil=pil, seconds=seconds)
    return npy, result


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


def _report(layout: DataLayout, out: Path, plans: list[SplitPlan]) -> str:
    """Write every problem of ``plans`` to ``DIR/prepare-problems.csv``; the clause naming it for the error."""
    found = {p.split: p.problems for p in plans if p.problems}
    # beside the data; beside the store when the data folder is read-only (a Kaggle input)
    return report_note(write_report(found, PREPARE_REPORT, layout.root, out.parent))


def _make_out(out: Path) -> bool:
    """Create (or reuse) the store folder, clear a killed run's leftovers; whether it was created now."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise DataError(
            f"cannot write the store to {out} ({exc.strerror}); pass --out DIR to write elsewhere"
        ) from None
    return created


def _commit(out: Path, plan: SplitPlan, npy: Path, result: SplitResult) -> SplitRecord:
    """Put one packed split in place; its manifest record."""
    commit_split(out, plan.split, npy, plan.ids, plan.labels)
    result.skipped = plan.problems.as_dict()
    return SplitRecord(
        count=result.count,
        source=str(plan.folder.resolve()),
        csv=None if plan.csv is None else plan.csv.name,
        fingerprint=plan.fingerprint,
        skipped=result.skipped,
        positives=None if plan.labels is None else int(np.sum(plan.labels)),
    )


@holding(
    lambda a: a["out_dir"] or DataLayout.of(a["data_dir"]).packed_dir,
    "hcd prepare",
    "wait for it to finish (or stop it), or pack into another --out-dir",
)
def prepare(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    splits=SPLITS,
    skip_bad: bool = False,
    workers: int | None = None,
    force: bool = False,
) -> PrepareSummary:
    """Pack ``data_dir``'s patches into ``out_dir`` (default ``data_dir/packed``); see the module docstring.

    ``force`` packs every requested split again, even one whose manifest record says it is up to date.

    Raises DataError listing every bad input by kind and name unless ``skip_bad``, in which case the bad
    ones are left out and recorded in the manifest (and in the returned summary).
    """
    layout = DataLayout.of(data_dir)
    out = Path(out_dir) if out_dir is not None else layout.packed_dir
    workers = default_workers() if not workers or workers < 1 else workers
    plans = [_plan(layout, s) for s in _requested(layout, splits)]
    records = read_manifest(out)
    results: dict[str, SplitResult] = {}
    todo = []
    for p in plans:
        record = records.get(p.split)
        if not force and _is_current(out, record, p, skip_bad):
            results[p.split] = SplitResult(p.split, record.count, record.skipped or {}, up_to_date=True)
        else:
            todo.append(p)
    if not todo:
        return PrepareSummary(out, results)

    for p in todo:
        _order(p)
        if not p.ids:
            why = f"{p.problems.summary()}; {_report(layout, out, [p])}" if p.problems else "no .tif files"
            raise DataError(f"nothing to pack in {p.folder} ({why}); check --data-dir")
    need = sum(len(p.ids) for p in todo) * int(np.prod(IMAGE_SHAPE))
    check_free_space(out, need, f"the packed {'/'.join(p.split for p in todo)} store", " or pass another --out-dir")
    created = _make_out(out)
    tmps: list[Path] = []
    try:
        packed = {}
        for p in todo:
            packed[p.split] = _pack_split(out, p, workers, tmps)
            if not p.ids:
                raise DataError(
                    f"no good image in {p.folder}: {p.problems.summary()}; "
                    f"{_report(layout, out, [p])}; check --data-dir"
                )
        bad = [p for p in todo if p.problems]
        if bad and not skip_bad:
            total = sum(len(p.problems) for p in bad)
            detail = " | ".join(f"{p.split}: {p.problems.summary()}" for p in bad)
            raise DataError(
                f"{total} bad input(s) in {layout.root}, no store written: {detail}; {_report(layout, out, bad)}; "
                "fix or remove them, or rerun with --skip-bad to pack the rest"
            )
        mark_incomplete(out)
        for p in todo:
            npy, results[p.split] = packed[p.split]
            records[p.split] = _commit(out, p, npy, results[p.split])
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
    # splits this run did not touch stay listed while their files are there
    write_manifest(out, {s: r for s, r in records.items() if s in results or StoreLayout(out).images(s).is_file()})
    forget_report(PREPARE_REPORT, layout.root, out.parent)
    return PrepareSummary(out, {s: results[s] for s in sorted(results, key=SPLITS.index)})


def open_split(data_dir: str | os.PathLike[str], split: Split) -> PackedStore:
    """One split of ``DIR``'s packed store, packing ``DIR/{split}`` first when it is not packed yet (or its packed
    files are damaged); without ``DIR/{split}``, a damaged store is its own one-line error."""
    layout = DataLayout.of(data_dir)
    try:
        return open_store(layout.packed_dir, split)
    except DataError:
        source = layout.train_dir if split == "train" else layout.test_dir
        if not source.is_dir():
            if layout.packed.images(split).is_file():  # a damaged store with nothing to re-pack it from
                raise
            raise DataError(
                f"no packed {split} store and no {source} folder; get the data with `hcd download`"
            ) from None
    if not os.access(layout.root, os.W_OK):
        csv = "sample_submission.csv" if split == "test" else "train_labels.csv"
        raise DataError(
            f"{layout.root} is read-only, so {split}/ cannot be packed there; link {split}/ and {csv} "
            "into a writable folder and pass that as --data-dir"
        )
    prepare(layout.root, splits=(split,))
    return open_store(layout.packed_dir, split)


def open_test_store(data_dir: str | os.PathLike[str]) -> PackedStore:
    """The packed test store of ``DIR``, packing ``DIR/test`` first when it is not packed yet."""
    return open_split(data_dir, "test")
