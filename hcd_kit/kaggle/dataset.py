"""Kaggle datasets that carry hcd into offline kernels: the hcd_kit wheel, and optionally a run's weights.

``build_dataset`` fills a folder with the wheel (built with ``pip wheel`` from a clean temporary copy of
the package, or one you pass) and, for inference kernels, a run's ``config.toml`` plus each fold's
``best.pt`` and ``oof.csv`` flattened to ``fold{k}_best.pt`` / ``fold{k}_oof.csv`` (the client skips
sub-folders; the kernel template rebuilds ``RUN/fold{k}/``), then writes ``dataset-metadata.json``. ``push_dataset`` creates the dataset,
or adds a version when Kaggle already has it (GetDatasetStatus answering 404 means "create"), and checks
the ``status``/``error`` the ``kaggle`` command ignores. A create retried after a lost answer that is told
"slug already in use" succeeded if the dataset now exists. Kaggle processes a new version after the upload: the
push waits until it is READY (``sources.wait_dataset_ready``), so a kernel pushed next can attach it, and a new
version waits for the previous one (pushed meanwhile, Kaggle refuses it with a 403, explained as such).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hcd_kit.errors import ConfigError, DataError, KaggleError
from hcd_kit.fsutil import atomic_path, atomic_write_json
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.api import DEFAULT_TRANSFER_TIMEOUT
from hcd_kit.kaggle.sources import DATASET_POLL, DEFAULT_DATASET_WAIT, processing_refusal, wait_dataset_ready
from hcd_kit.layout import RunLayout

REPO_ROOT = Path(__file__).resolve().parents[2]
WHEEL_DATASET = "hcd-kit"
_IN_USE = re.compile(r"already in use|already exists", re.IGNORECASE)  # Kaggle/the client: the slug is taken


def check_slug(name: str) -> None:
    # the client refuses slugs outside 6..50 characters, after uploading nothing; say so before any work
    if not (6 <= len(name) <= 50) or not name.replace("-", "").isalnum() or name != name.lower():
        raise ConfigError(f"dataset name {name!r} must be 6-50 lowercase letters, digits or '-'")


# What the wheel is built from: the project's own files only. Building in the repository itself would
# write build/ and *.egg-info there, and setuptools reuses build/lib, so a module deleted from hcd_kit/ but
# left in build/lib would still ship to Kaggle.
_WHEEL_SOURCES = ("pyproject.toml", "README.md")
_WHEEL_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def build_wheel(dest: Path, repo: Path = REPO_ROOT) -> Path:
    """``pip wheel`` the hcd_kit project at ``repo`` into ``dest`` (no deps: Kaggle has them) and return it.

    The build runs in a fresh temporary copy of ``pyproject.toml``, ``README.md`` and ``hcd_kit/``, so
    nothing is written into ``repo`` and nothing stale from an earlier build gets into the wheel.
    """
    if not (repo / "pyproject.toml").is_file():
        raise DataError(f"no pyproject.toml in {repo}; run from the hcd repository or pass --wheel FILE")
    if not (repo / "hcd_kit").is_dir():
        raise DataError(f"no hcd_kit/ package in {repo}; run from the hcd repository or pass --wheel FILE")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("hcd_kit-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="hcd-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(repo / "hcd_kit", src / "hcd_kit", ignore=_WHEEL_JUNK)
        for name in _WHEEL_SOURCES:
            if (repo / name).is_file():
                shutil.copyfile(repo / name, src / name)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dest),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("hcd_kit-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"building the hcd_kit wheel failed: {last}")
    return wheels[-1]


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def add_run(folder: Path, run_dir: Path) -> list[str]:
    """Copy ``config.toml`` and every fold's ``best.pt`` / ``oof.csv`` from ``run_dir``, flattened."""
    run = RunLayout.of(run_dir)
    if not run.config.is_file():
        raise DataError(f"{run.config} not found; pass a run folder written by `hcd train`")
    folds = [k for k in run.folds_present() if run.best(k).is_file()]
    if not folds:
        raise DataError(f"no fold*/best.pt in {run_dir}; train at least one fold first")
    names = ["config.toml"]
    _copy(run.config, folder / "config.toml")
    for k in folds:
        _copy(run.best(k), folder / f"fold{k}_best.pt")
        names.append(f"fold{k}_best.pt")
        if run.oof(k).is_file():
            _copy(run.oof(k), folder / f"fold{k}_oof.csv")
            names.append(f"fold{k}_oof.csv")
    return names


def build_dataset(
    folder: str | os.PathLike[str],
    ref: str,
    wheel: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Fill ``folder`` (emptied first) for dataset ``ref`` (owner/slug); return the file names in it."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise DataError(f"wheel {wheel} not found; build one with `python -m pip wheel . --no-deps -w dist`")
        _copy(wheel, folder / wheel.name)
        names = [wheel.name]
    else:
        names = [build_wheel(folder).name]
    if run_dir is not None:
        names += add_run(folder, Path(run_dir))
    slug = ref.split("/")[1]
    meta = {"title": slug, "id": ref, "licenses": [{"name": "CC0-1.0"}]}
    atomic_write_json(folder / "dataset-metadata.json", meta)
    return names


@dataclass
class DatasetResult:
    ref: str
    url: str
    created: bool  # False: a new version of an existing dataset
    status: str = ""  # Kaggle's processing status when the push returned: "ready" unless not waited for


def _exists(api, ref: str) -> bool:
    from requests import HTTPError

    try:
        api.dataset_status(ref)
    except HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return False
        raise
    return True


def push_dataset(
    folder: str | os.PathLike[str],
    notes: str,
    transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT,
    timeout: float | None = None,
    wait_timeout: float | None = DEFAULT_DATASET_WAIT,
    on_status: Callable[[str], None] | None = None,
    poll: float = DATASET_POLL,
) -> DatasetResult:
    """Create the dataset in ``folder`` or, if Kaggle has it, add a version with ``notes``; then wait until Kaggle
    has processed it (READY), up to ``wait_timeout`` s (None: return at once), polling every ``poll`` s at first,
    ``on_status(status)`` on every poll.

    A version is pushed only once the previous one is processed (Kaggle refuses it with a 403 meanwhile: waited
    for, or explained as such). ``transfer_timeout`` bounds the whole upload (one call of the client); ``timeout``
    each other call.
    """
    folder = str(folder)
    ref = json.loads(Path(folder, "dataset-metadata.json").read_text(encoding="utf-8"))["id"]
    api = kaggle_api.get_api(timeout)
    exists = kaggle_api.call(f"check dataset '{ref}'", lambda: _exists(api, ref), timeout=timeout)
    if exists:
        if wait_timeout is not None:  # the previous version first: a version pushed while it is processed gets a 403
            wait_dataset_ready(ref, wait_timeout=wait_timeout, poll=poll, on_poll=on_status, timeout=timeout)
        what = f"add a version to dataset '{ref}'"
        try:
            resp = kaggle_api.call(
                what, lambda: api.dataset_create_version(folder, notes, quiet=True), timeout=transfer_timeout
            )
        except KaggleError as exc:
            response = getattr(exc.__cause__, "response", None)
            refusal = processing_refusal(ref, timeout) if getattr(response, "status_code", None) == 403 else None
            if refusal is not None:
                raise refusal from exc
            raise
    else:
        what = f"create dataset '{ref}'"
        try:
            resp = kaggle_api.check_reported(
                what,
                kaggle_api.call(what, lambda: api.dataset_create_new(folder, quiet=True), timeout=transfer_timeout),
            )
        except KaggleError as exc:
            # hcd retries a create whose answer was lost (a 5xx, a dropped connection); if the first try made the
            # dataset, the retry is told its slug is "already in use". It did not exist a moment ago, so if it
            # exists now, the create succeeded.
            if not (
                _IN_USE.search(str(exc))
                and kaggle_api.call(f"check dataset '{ref}'", lambda: _exists(api, ref), timeout=timeout)
            ):
                raise
            resp = None
    if resp is not None:
        kaggle_api.check_reported(what, resp)  # the `kaggle` command exits 0 on status "Error"
    url = (getattr(resp, "url", None) or "") if resp is not None else f"https://www.kaggle.com/datasets/{ref}"
    status = ""
    if wait_timeout is not None:
        status = wait_dataset_ready(ref, wait_timeout=wait_timeout, poll=poll, on_poll=on_status, timeout=timeout)
    return DatasetResult(ref=ref, url=url, created=not exists, status=status)
