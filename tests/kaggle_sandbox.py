"""A Kaggle-like sandbox for running a rendered kernel script for real (tests/test_kernel_rehearsal.py).

- ``/kaggle/input``: ``Sandbox.input`` in the newer mount layout (``datasets/<owner>/<slug>``,
  ``competitions/<slug>``), chmod read-only and, where the machine allows it, also bind-mounted read-only
  inside the kernel's mount namespace (root ignores file modes; a read-only mount it cannot ignore).
- ``/kaggle/working`` and ``/kaggle/temp``: ``Sandbox.work`` (the saved output, also the kernel's cwd, as
  on Kaggle) and ``Sandbox.temp``, through ``HCD_KAGGLE_INPUT`` / ``HCD_KAGGLE_WORKING`` / ``HCD_KAGGLE_TEMP``.
- The image's Python: a fresh venv that sees this machine's site-packages (torch, timm, pandas... as Kaggle's
  image has them preinstalled) through a *filtered view* in which every trace of hcd_kit is left out. A plain
  ``venv --system-site-packages`` would not do: the editable install of this checkout lives in the system
  site-packages (an ``__editable__`` .pth finder, plus ``hcd_kit-*.dist-info``), so hcd_kit would be
  importable before the kernel's ``pip install``, and pip would even skip that install ("already installed
  with the same version as the provided wheel"). ``Sandbox.probe()`` says what the sandbox's Python sees.
- No network: the kernel runs under ``unshare -n`` (a network namespace with only a downed loopback).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_HIDDEN = ("hcd_kit", "hcd-kit", "hcd.kit", "__editable__.hcd_kit", "__editable___hcd_kit")


def unshare_problem() -> str | None:
    """Why the kernel cannot run without network here (``None``: ``unshare -n`` works)."""
    if not sys.platform.startswith("linux"):
        return f"runs the kernel under `unshare -n` (Linux only; this is {sys.platform})"
    if shutil.which("unshare") is None:
        return "runs the kernel under `unshare -n`, and `unshare` (util-linux) is not installed"
    p = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return f"runs the kernel under `unshare -n`, which fails here (needs root or user namespaces): {why}"
    return None


def _readonly_mount_works(probe: Path) -> bool:
    """Whether ``unshare -n -m`` may bind-mount a folder read-only (root in a container usually may)."""
    probe.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["unshare", "-n", "-m", "sh", "-c", _RO_MOUNT + ' && ! touch "$1/x" 2>/dev/null', "sh", str(probe)],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(probe)
    return p.returncode == 0


_RO_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"'


def _is_hcd(name: str) -> bool:
    return name.lower().startswith(_HIDDEN)


def _site_view(site_dir: Path, view: Path) -> None:
    """``view``: links to everything in ``site_dir`` except hcd_kit, and its .pth files minus hcd_kit's lines."""
    view.mkdir(parents=True)
    for entry in sorted(site_dir.iterdir()):
        if _is_hcd(entry.name) or entry.suffix == ".egg-link" and "hcd" in entry.name.lower():
            continue
        if entry.suffix == ".pth":  # a legacy editable install is a path line in some .pth (easy-install.pth)
            lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
            keep = [ln for ln in lines if "hcd_kit" not in ln and str(REPO) not in ln]
            (view / entry.name).write_text("\n".join(keep) + "\n", encoding="utf-8")
        else:
            (view / entry.name).symlink_to(entry)


def make_python(root: Path) -> Path:
    """A venv at ``root/venv`` that sees this machine's packages, except hcd_kit; returns its python."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip: from the view
    py = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    dirs = []
    for k, site_dir in enumerate(dict.fromkeys(site.getsitepackages())):
        if Path(site_dir).is_dir():
            _site_view(Path(site_dir), root / f"system-site-{k}")
            dirs.append(str(root / f"system-site-{k}"))
    # after the venv's own site-packages (where the kernel's pip install goes), like --system-site-packages
    (purelib / "zz_system_site.pth").write_text(f"import site; list(map(site.addsitedir, {dirs!r}))\n")
    return py


def make_readonly(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        if not stat.S_ISLNK(mode):
            p.chmod(0o555 if p.is_dir() else 0o444)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: a write into the input shows as a difference."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


_PROBE = """
import importlib.metadata as md, importlib.util, json, sys
spec = importlib.util.find_spec("hcd_kit")
dists = sorted(d.metadata["Name"] for d in md.distributions() if "hcd" in (d.metadata["Name"] or "").lower())
import timm, torch
print(json.dumps({"hcd_kit": spec.origin if spec else None, "dists": dists, "torch": torch.__version__,
                  "torch_file": torch.__file__, "prefix": sys.prefix}))
"""


@dataclass
class Sandbox:
    root: Path
    python: Path
    input: Path
    work: Path
    temp: Path
    readonly_mount: bool

    @classmethod
    def create(cls, root: Path) -> Sandbox:
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("input", "working", "temp", "home", "tmp"):
            (root / sub).mkdir()
        return cls(
            root,
            make_python(root),
            root / "input",
            root / "working",
            root / "temp",
            _readonly_mount_works(root / "ro-probe"),
        )

    def dataset(self, owner: str, slug: str) -> Path:
        """Where Kaggle mounts an attached dataset for kernels pushed from the client (the newer layout)."""
        path = self.input / "datasets" / owner / slug
        path.mkdir(parents=True)
        return path

    def competition(self, slug: str) -> Path:
        return self.input / "competitions" / slug

    @property
    def env(self) -> dict[str, str]:
        """A clean environment: nothing of this machine's KAGGLE_*/PYTHONPATH/VIRTUAL_ENV leaks in."""
        env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TERM")}
        env.update(
            PATH=f"{self.python.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            HOME=str(self.root / "home"),
            TMPDIR=str(self.root / "tmp"),
            PYTHONNOUSERSITE="1",
            HCD_KAGGLE_INPUT=str(self.input),
            HCD_KAGGLE_WORKING=str(self.work),
            HCD_KAGGLE_TEMP=str(self.temp),
        )
        return env

    def _offline(self, *cmd: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``cmd`` with no network (and, where possible, the input mounted read-only), cwd /kaggle/working."""
        if self.readonly_mount:
            wrapped = [
                "unshare",
                "-n",
                "-m",
                "sh",
                "-c",
                _RO_MOUNT + ' && shift && exec "$@"',
                "sh",
                str(self.input),
                *cmd,
            ]
        else:
            wrapped = ["unshare", "-n", *cmd]
        full = {**self.env, **(env or {})}
        return subprocess.run(wrapped, env=full, cwd=self.work, capture_output=True, text=True, timeout=timeout)

    def probe(self) -> dict:
        """What the sandbox's Python sees: hcd_kit's origin (or None), hcd dists, and where torch comes from."""
        p = self._offline(str(self.python), "-c", _PROBE, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    def run_kernel(
        self, script: Path, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run a rendered kernel script for real (no ``HCD_KERNEL_DRY_RUN``), offline, as Kaggle would; ``env``
        adds variables (e.g. ``HCD_KERNEL_FAKE_GPUS``, the GPUs the kernel's check sees)."""
        return self._offline(str(self.python), str(script), timeout=timeout, env=env)
