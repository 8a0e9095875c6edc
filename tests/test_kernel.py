"""`hcd kernel push|status|output` and `hcd dataset push` with the real kaggle client against the stand-in."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder laid out like the repository root for kernels (kernels/templates/), so tests never write
    rendered kernels into the real repository."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "kernels" / "templates", root / "kernels" / "templates")
    return root


def test_kernel_push_from_project_root(kaggle_env, project):
    r = kaggle_env.run("kernel", "push", "--fold", "0", "--train-args", "--epochs 3 --model resnet18", cwd=project)
    assert r.returncode == 0, r.stderr
    save, = kaggle_env.server.calls("SaveKernel")
    body = save.body
    folder = project / "kernels" / "hcd-train-fold-0"
    script = folder / "hcd_train_fold_0.py"
    # the metadata as the server received it
    assert body["slug"] == "testuser/hcd-train-fold-0" and body["newTitle"] == "hcd train fold 0"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["isPrivate"] is True and body["enableGpu"] is True
    assert body.get("enableInternet", False) is False  # the client omits fields at their default
    assert body["machineShape"] == "NvidiaTeslaT4"
    assert body["competitionDataSources"] == ["histopathologic-cancer-detection"]
    assert body["datasetDataSources"] == ["testuser/hcd-kit"]
    assert body["text"] == script.read_text()
    assert 'FOLD = "0"' in body["text"] and 'TRAIN_ARGS = "--epochs 3 --model resnet18"' in body["text"]
    compile(body["text"], "kernel.py", "exec")  # the rendered script is valid Python
    assert "__HCD_" not in body["text"].split('"""', 2)[2]
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "testuser/hcd-train-fold-0" and meta["code_file"] == script.name
    pushed = json.loads((folder / "last_push.json").read_text())
    assert pushed["machine_shape"] == "NvidiaTeslaT4" and pushed["version"] == 1
    assert "asking for NvidiaTeslaT4" in r.stdout
    kaggle_env.assert_no_secret(r.stdout, r.stderr, json.dumps(body), paths=(project / "kernels",))


def test_kernel_push_options_and_inference_kernel(kaggle_env, project):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--weights-dataset", "hcd-weights-r18",
                          "--machine-shape", "NvidiaTeslaT4Highmem", "--internet", "--tta", "4",
                          "--dataset", "someone/timm-resnet18")
    assert r.exit_code == 0, r.stderr
    body = kaggle_env.server.calls("SaveKernel")[0].body
    assert body["slug"] == "testuser/hcd-predict"
    assert body["machineShape"] == "NvidiaTeslaT4Highmem" and body["enableInternet"] is True
    assert body["datasetDataSources"] == ["testuser/hcd-kit", "testuser/hcd-weights-r18", "someone/timm-resnet18"]
    assert 'MODE = "predict"' in body["text"] and 'TTA = "4"' in body["text"]
    assert 'WEIGHTS_DATASET = "testuser/hcd-weights-r18"' in body["text"]


def test_kernel_push_dry_run_and_bad_input(kaggle_env, project):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run")
    assert r.exit_code == 0 and (project / "kernels" / "hcd-train" / "hcd_train.py").is_file()
    assert kaggle_env.server.calls("SaveKernel") == []
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--name", "ab")
    assert r.exit_code == 2 and "kernel name 'ab'" in r.stderr
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--fold", "first")
    assert r.exit_code == 2 and "--fold 'first'" in r.stderr
    r = kaggle_env.invoke("kernel", "push", "--root", project / "nowhere")
    assert r.exit_code == 2 and "no kernel templates" in r.stderr
    assert kaggle_env.server.calls("SaveKernel") == []


def test_kernel_push_error_inside_200(kaggle_env, project):
    kaggle_env.server.kernel_push_error = "Maximum weekly GPU quota reached"
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels")
    assert r.exit_code == 1 and "Maximum weekly GPU quota reached" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (project / "kernels" / "hcd-train" / "last_push.json").exists()


@pytest.mark.parametrize("outcome", ["COMPLETE", "ERROR"])
def test_kernel_status_wait(kaggle_env, project, outcome):
    server = kaggle_env.server
    server.kernel_polls, server.kernel_outcome = 4, outcome
    server.kernel_failure = "CUDA out of memory in hcd train"
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels").exit_code == 0
    r = kaggle_env.invoke("kernel", "status", "--wait", "--poll-interval", "0.02")
    seen = [line.split(": ")[-1] for line in r.stdout.splitlines() if line.startswith("  testuser/hcd-train")]
    assert seen == ["QUEUED", "QUEUED", "RUNNING", "RUNNING", outcome]
    if outcome == "COMPLETE":
        assert r.exit_code == 0 and "testuser/hcd-train: COMPLETE" in r.stdout
    else:
        assert r.exit_code == 1 and "CUDA out of memory in hcd train" in r.stderr
    r = kaggle_env.invoke("kernel", "status", "--name", "no-such-kernel")
    assert r.exit_code == 1 and "no-such-kernel" in r.stderr and "404" in r.stderr


def test_kernel_output_all_pages(kaggle_env, project, tmp_path):
    server = kaggle_env.server
    server.kernel_outputs = {f"file{n}.txt": f"content {n}".encode() for n in range(5)}
    server.kernel_outputs["submission.csv"] = b"id,label\nabc,0.5\n"
    server.output_page_size = 2
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels").exit_code == 0
    out = tmp_path / "out"
    r = kaggle_env.invoke("kernel", "output", "--out", out)
    assert r.exit_code == 0, r.stderr
    for name, data in server.kernel_outputs.items():
        assert (out / name).read_bytes() == data
    assert (out / "hcd-train.log").is_file()
    assert len(server.calls("ListKernelSessionOutput")) == 3  # 6 files, 2 per page
    assert "downloaded 7 files" in r.stdout


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "runs" / "r18"
    for k in (0, 1):
        (run / f"fold{k}").mkdir(parents=True)
        (run / f"fold{k}" / "best.pt").write_bytes(bytes([k]) * 1000)
        (run / f"fold{k}" / "oof.csv").write_text("id,fold,prob,label\n")
    (run / "config.toml").write_text('model = "resnet18"\nimg_size = 96\n')
    return run


def test_dataset_create_then_version(kaggle_env, tmp_path, run_dir):
    wheel = tmp_path / "hcd_kit-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hcd_kit/__init__.py", "")
    folder = tmp_path / "ds"
    args = ("dataset", "push", "--run-dir", run_dir, "--name", "hcd-weights-r18", "--wheel", wheel, "--out", folder)
    r = kaggle_env.invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert "created dataset testuser/hcd-weights-r18" in r.stdout
    server = kaggle_env.server
    create, = server.calls("CreateDataset")
    assert create.body["ownerSlug"] == "testuser" and create.body["slug"] == "hcd-weights-r18"
    uploaded = {server.blobs[f["token"]].name: bytes(server.blobs[f["token"]].data) for f in create.body["files"]}
    assert uploaded == {
        wheel.name: wheel.read_bytes(),
        "config.toml": (run_dir / "config.toml").read_bytes(),
        "fold0_best.pt": (run_dir / "fold0" / "best.pt").read_bytes(),
        "fold1_best.pt": (run_dir / "fold1" / "best.pt").read_bytes(),
        "fold0_oof.csv": (run_dir / "fold0" / "oof.csv").read_bytes(),
        "fold1_oof.csv": (run_dir / "fold1" / "oof.csv").read_bytes(),
    }
    r = kaggle_env.invoke(*args, "--notes", "more epochs")
    assert r.exit_code == 0, r.stderr
    assert "new version of dataset testuser/hcd-weights-r18" in r.stdout
    version, = server.calls("CreateDatasetVersion")
    assert version.body["body"]["versionNotes"] == "more epochs" and len(version.body["body"]["files"]) == 6
    server.dataset_error = "The dataset is too large"
    r = kaggle_env.invoke(*args)
    assert r.exit_code == 1 and "The dataset is too large" in r.stderr
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(folder,))


def test_dataset_push_builds_the_wheel(kaggle_env, tmp_path):
    """The real path: `pip wheel` of this repository into the dataset folder (dry run: nothing uploaded)."""
    folder = tmp_path / "ds"
    r = kaggle_env.invoke("dataset", "push", "--out", folder, "--dry-run")
    assert r.exit_code == 0, r.stderr
    wheel, = folder.glob("hcd_kit-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "hcd_kit/kernel.py" in zf.namelist() and zf.testzip() is None
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta["id"] == "testuser/hcd-kit" and meta["licenses"] == [{"name": "CC0-1.0"}]
    assert kaggle_env.server.requests == []
    r = kaggle_env.invoke("dataset", "push", "--name", "hcd", "--dry-run")
    assert r.exit_code == 2 and "6-50" in r.stderr


def _fake_kaggle_input(root: Path) -> Path:
    """/kaggle/input as a session sees it: the competition and the hcd-kit / weights datasets, read-only."""
    comp = root / "histopathologic-cancer-detection"
    for sub in ("train", "test"):
        (comp / sub).mkdir(parents=True)
    (comp / "train_labels.csv").write_text("id,label\n")
    (comp / "sample_submission.csv").write_text("id,label\n")
    (root / "hcd-kit").mkdir()
    (root / "hcd-kit" / "hcd_kit-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    weights = root / "datasets" / "testuser" / "hcd-weights-r18"  # the newer nested mount layout
    weights.mkdir(parents=True)
    for name in ("config.toml", "fold0_best.pt", "fold0_oof.csv", "fold1_best.pt"):
        (weights / name).write_text(name)
    return root


def _fake_t4x2(bin_dir: Path) -> Path:
    """``nvidia-smi`` and a ``torch`` that report two T4s: the session a T4 x2 push should get."""
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-a)'\necho 'GPU 1: Tesla T4 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    (bin_dir / "torch.py").write_text(
        "__version__ = 'fake'\n"
        "class cuda:\n"
        "    device_count = staticmethod(lambda: 2)\n"
        "    get_device_name = staticmethod(lambda i: 'Tesla T4')\n"
    )
    return bin_dir


@pytest.mark.parametrize("mode", ["train", "predict"])
def test_rendered_kernel_rehearsal(kaggle_env, project, tmp_path, mode):
    """Run the rendered script locally against a fake /kaggle/input with its steps printed, not run."""
    import os
    import subprocess
    import sys

    extra = ["--weights-dataset", "hcd-weights-r18"] if mode == "predict" else ["--fold", "0,2"]
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run", *extra)
    assert r.exit_code == 0, r.stderr
    script, = (project / "kernels" / ("hcd-predict" if mode == "predict" else "hcd-train-fold-0-2")).glob("*.py")
    inp, work = _fake_kaggle_input(tmp_path / "input"), tmp_path / "working"
    fake = _fake_t4x2(tmp_path / "bin")
    env = dict(os.environ, HCD_KAGGLE_INPUT=str(inp), HCD_KAGGLE_WORKING=str(work), HCD_KERNEL_DRY_RUN="1",
               PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(fake))
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    steps = [line.split(" -m ", 1)[1] for line in p.stdout.splitlines() if line.startswith("+ ")]
    data, run = work / "data", work / "run"
    assert steps[0].startswith(f"pip install -q --no-index --find-links {inp / 'hcd-kit'}")
    predict = f"hcd_kit predict --data-dir {data} --run-dir {run} --tta 8 --out {work / 'submission.csv'}"
    if mode == "train":
        assert steps[1:] == [
            f"hcd_kit prepare --data-dir {data}", f"hcd_kit folds --data-dir {data}",
            f"hcd_kit train --data-dir {data} --fold 0,2 --run-dir {run}", f"hcd_kit cv --run-dir {run}", predict,
        ]
    else:
        assert steps[1:] == [predict]
        weights = inp / "datasets" / "testuser" / "hcd-weights-r18"
        assert (run / "fold0" / "best.pt").resolve() == weights / "fold0_best.pt"
        assert (run / "fold1" / "best.pt").is_file() and (run / "fold0" / "oof.csv").is_file()
        assert (run / "config.toml").read_text() == "config.toml"
    # a writable data folder whose entries point into the read-only input
    assert (data / "train").is_symlink()
    assert (data / "train").resolve() == inp / "histopathologic-cancer-detection" / "train"
    gpus = json.loads((work / "gpus.json").read_text())
    assert gpus["machine_shape_asked"] == "NvidiaTeslaT4"
    assert gpus["cuda_device_count"] == 2 and gpus["cuda_devices"] == ["Tesla T4", "Tesla T4"]
    assert gpus["nvidia_smi"] == ["GPU 0: Tesla T4 (UUID: GPU-a)", "GPU 1: Tesla T4 (UUID: GPU-b)"]
    assert "GPUS {" in p.stdout
