"""The kernel templates: shipped inside the package (a pip-installed hcd renders kernels anywhere), and the
rendered script's relocation of /kaggle/input paths to where Kaggle really mounted each dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ("hcd_kit/kaggle/templates/kernel.py", "hcd_kit/kaggle/templates/kernel-metadata.json")


def test_wheel_ships_the_templates_and_renders_a_kernel_outside_a_clone(kaggle_env, tmp_path, checkout_wheel):
    """`pip install hcd-kit` (here: the wheel built from this checkout, unpacked onto PYTHONPATH), then
    `hcd kernel push --dry-run` in an empty folder: a kernel is rendered with no repository around."""
    with zipfile.ZipFile(checkout_wheel) as zf:
        names = zf.namelist()
        assert set(TEMPLATES) <= set(names), names
        site = tmp_path / "site"
        zf.extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(kaggle_env.env, PYTHONPATH=str(site))
    where = subprocess.run(
        [sys.executable, "-c", "import hcd_kit; print(hcd_kit.__file__)"],
        env=env,
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site)  # the installed copy, not the checkout
    cmd = [
        sys.executable,
        "-m",
        "hcd_kit",
        "kernel",
        "push",
        "--dry-run",
        "--fold",
        "0",
        "--train-args",
        "--epochs 3 --no-pretrained",
    ]
    p = subprocess.run(cmd, env=env, cwd=empty, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    folder = empty / "kernels" / "hcd-train-fold-0"
    assert "rendered kernels/hcd-train-fold-0/" in p.stdout
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "testuser/hcd-train-fold-0" and meta["code_file"] == "hcd_train_fold_0.py"
    assert meta["enable_gpu"] is True and meta["competition_sources"] == ["histopathologic-cancer-detection"]
    script = (folder / "hcd_train_fold_0.py").read_text()
    compile(script, "hcd_train_fold_0.py", "exec")
    assert 'FOLD = "0"' in script and 'TRAIN_ARGS = ["--epochs", "3", "--no-pretrained"]' in script
    assert sorted(p.name for p in empty.rglob("*") if p.is_file()) == ["hcd_train_fold_0.py", "kernel-metadata.json"]
    assert kaggle_env.server.calls("SaveKernel") == []


def test_customised_templates_replace_the_packaged_ones(kaggle_env, tmp_path):
    custom = tmp_path / "mine" / "templates"
    custom.mkdir(parents=True)
    for name in TEMPLATES:
        (custom / Path(name).name).write_text((REPO / name).read_text())
    with (custom / "kernel.py").open("a") as f:
        f.write("# customised by me\n")
    r = kaggle_env.invoke("kernel", "push", "--root", tmp_path / "mine", "--dry-run", "--train-args", "--no-pretrained")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "mine" / "hcd-train" / "hcd_train.py").read_text().endswith("# customised by me\n")


# --- /kaggle/input paths in --train-args ---------------------------------------------------------------------


def _mount(inp: Path, layout: str, owner: str, slug: str, competition: bool = False) -> Path:
    """A folder where Kaggle mounts ``owner/slug``: ``old`` /kaggle/input/<slug>, ``new`` the nested layout."""
    if layout == "old":
        folder = inp / slug
    else:
        folder = inp / ("competitions" if competition else "datasets") / ("" if competition else owner) / slug
    folder.mkdir(parents=True)
    return folder


def _session(inp: Path, layout: str) -> None:
    """The competition and the hcd-kit wheel dataset, mounted the ``layout`` way."""
    comp = _mount(inp, layout, "", "histopathologic-cancer-detection", competition=True)
    for sub in ("train", "test"):
        (comp / sub).mkdir()
    (comp / "train_labels.csv").write_text("id,label\n")
    (comp / "sample_submission.csv").write_text("id,label\n")
    (_mount(inp, layout, "testuser", "hcd-kit") / "hcd_kit-0.1.0-py3-none-any.whl").write_bytes(b"wheel")


def _fake_gpu(bin_dir: Path) -> Path:
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-a)'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    (bin_dir / "torch.py").write_text(
        "__version__ = 'fake'\nclass cuda:\n    device_count = staticmethod(lambda: 1)\n"
        "    get_device_name = staticmethod(lambda i: 'Tesla T4')\n"
    )
    return bin_dir


def _rehearse(kaggle_env, tmp_path: Path, train_args: str) -> subprocess.CompletedProcess:
    """Render a training kernel with ``train_args`` and run it (steps printed, not run) on ``tmp_path/input``."""
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        tmp_path / "kernels",
        "--dry-run",
        "--fold",
        "0",
        "--dataset",
        "someone/timm-r34",
        "--train-args",
        train_args,
    )
    assert r.exit_code == 0, r.stderr
    fake = _fake_gpu(tmp_path / "bin")
    env = dict(
        os.environ,
        HCD_KAGGLE_INPUT=str(tmp_path / "input"),
        HCD_KAGGLE_WORKING=str(tmp_path / "working"),
        HCD_KAGGLE_TEMP=str(tmp_path / "temp"),
        HCD_KERNEL_DRY_RUN="1",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(fake),
    )
    script = tmp_path / "kernels" / "hcd-train-fold-0" / "hcd_train_fold_0.py"
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("layout", ["old", "new"])
@pytest.mark.parametrize(
    "typed",
    [
        "--weights /kaggle/input/timm-r34/m.pth",
        "--weights /kaggle/input/datasets/someone/timm-r34/m.pth",
        "--weights=/kaggle/input/timm-r34/m.pth",
    ],
)
def test_weights_path_follows_the_real_mount(kaggle_env, tmp_path, layout, typed):
    """The README's `--weights /kaggle/input/SLUG/FILE` reaches `hcd train` as the file's real place, whichever
    mount layout the session has and whichever layout the user typed."""
    inp = tmp_path / "input"
    _session(inp, layout)
    weights = _mount(inp, layout, "someone", "timm-r34") / "m.pth"
    weights.write_bytes(b"weights")
    p = _rehearse(kaggle_env, tmp_path, f"--model resnet34 {typed}")
    assert p.returncode == 0, p.stderr
    (train,) = [line for line in p.stdout.splitlines() if line.startswith("+ ") and " hcd_kit train " in line]
    sep = "=" if "=" in typed else " "
    assert train.endswith(f"--fold 0 --run-dir {tmp_path / 'working' / 'run'} --model resnet34 --weights{sep}{weights}")


@pytest.mark.parametrize("case", ["file-missing", "not-attached"])
def test_weights_path_found_nowhere_stops_the_kernel_at_once(kaggle_env, tmp_path, case):
    inp = tmp_path / "input"
    _session(inp, "new")
    if case == "file-missing":
        folder = _mount(inp, "new", "someone", "timm-r34")
        (folder / "model.safetensors").write_bytes(b"weights")
    p = _rehearse(kaggle_env, tmp_path, "--weights /kaggle/input/timm-r34/m.pth")
    assert p.returncode != 0
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("/kaggle/input/timm-r34/m.pth: ")
    if case == "file-missing":
        assert f"mounted at {inp / 'datasets' / 'someone' / 'timm-r34'}" in line and "model.safetensors" in line
    else:
        assert "timm-r34 is not attached" in line and "--dataset OWNER/timm-r34" in line
    # stopped before installing or running anything (not after hours of training)
    assert not [out for out in p.stdout.splitlines() if out.startswith("+ ")]
