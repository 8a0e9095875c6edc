"""`hcd kernel push|status|output` and `hcd dataset push` with the real kaggle client against the stand-in."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import ready_datasets

REPO = Path(__file__).resolve().parents[1]
# An offline training kernel must say where pretrained weights come from (the hub is out of reach).
NO_HUB = ("--train-args", "--no-pretrained")


def test_kernel_push_from_project_root(kaggle_env, project):
    r = kaggle_env.run(
        "kernel", "push", "--fold", "0", "--train-args", "--epochs 3 --model resnet18 --no-pretrained", cwd=project
    )
    assert r.returncode == 0, r.stderr
    (save,) = kaggle_env.server.calls("SaveKernel")
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
    assert (
        'FOLD = "0"' in body["text"]
        and 'TRAIN_ARGS = ["--epochs", "3", "--model", "resnet18", "--no-pretrained"]' in body["text"]
    )
    compile(body["text"], "kernel.py", "exec")  # the rendered script is valid Python
    assert "__HCD_" not in body["text"].split('"""', 2)[2]
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "testuser/hcd-train-fold-0" and meta["code_file"] == script.name
    pushed = json.loads((folder / "last_push.json").read_text())
    assert pushed["machine_shape"] == "NvidiaTeslaT4" and pushed["version"] == 1
    assert "asking for NvidiaTeslaT4" in r.stdout
    kaggle_env.assert_no_secret(r.stdout, r.stderr, json.dumps(body), paths=(project / "kernels",))


def test_kernel_push_options_and_inference_kernel(kaggle_env, project):
    ready_datasets(kaggle_env.server, "testuser/hcd-weights-r18", "someone/timm-resnet18")
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--weights-dataset",
        "hcd-weights-r18",
        "--machine-shape",
        "NvidiaL4",
        "--internet",
        "--tta",
        "4",
        "--dataset",
        "someone/timm-resnet18",
    )
    assert r.exit_code == 0, r.stderr
    body = kaggle_env.server.calls("SaveKernel")[0].body
    assert body["slug"] == "testuser/hcd-predict"
    assert body["machineShape"] == "NvidiaL4" and body["enableInternet"] is True
    assert 'MIN_GPUS = "1"' in body["text"] and 'ALLOW_OTHER_GPUS = ""' in body["text"]
    assert body["datasetDataSources"] == ["testuser/hcd-kit", "testuser/hcd-weights-r18", "someone/timm-resnet18"]
    assert 'MODE = "predict"' in body["text"] and 'TTA = "4"' in body["text"]
    assert 'WEIGHTS_DATASET = "testuser/hcd-weights-r18"' in body["text"]


def test_kernel_push_dry_run_and_bad_input(kaggle_env, project):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run", *NO_HUB)
    assert r.exit_code == 0 and (project / "kernels" / "hcd-train" / "hcd_train.py").is_file()
    assert kaggle_env.server.calls("SaveKernel") == []
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--name", "ab")
    assert r.exit_code == 2 and "kernel name 'ab'" in r.stderr
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--fold", "first")
    assert r.exit_code == 2 and "--fold" in r.stderr and "'first'" in r.stderr
    (project / "custom" / "templates").mkdir(parents=True)  # customised templates, one file missing
    (project / "custom" / "templates" / "kernel-metadata.json").write_text("{}")
    r = kaggle_env.invoke("kernel", "push", "--root", project / "custom", *NO_HUB)
    assert r.exit_code == 2 and "custom/templates lack kernel.py" in r.stderr
    assert kaggle_env.server.calls("SaveKernel") == []


@pytest.mark.parametrize("train_args", ["", "--epochs 3", "--pretrained --model resnet34"])
def test_offline_training_kernel_without_local_weights_is_refused(kaggle_env, project, train_args):
    """Offline, `hcd train`'s default hub download would fail on Kaggle after queueing: refuse it up front."""
    args = ("kernel", "push", "--fold", "0", "--train-args", train_args, "--dry-run")
    r = kaggle_env.run(*args, cwd=project)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "no internet" in line and "pretrained weights" in line
    assert '--train-args "--weights /kaggle/input/' in line and '"--no-pretrained"' in line and "--internet" in line
    assert not (project / "kernels" / "hcd-train-fold-0").exists()  # nothing rendered
    r = kaggle_env.run(*args[:-1], cwd=project)  # and certainly nothing pushed
    assert r.returncode == 2 and kaggle_env.server.calls("SaveKernel") == []


@pytest.mark.parametrize(
    "extra",
    [
        ("--train-args", "--epochs 3 --no-pretrained"),
        ("--dataset", "someone/timm-r34", "--train-args", "--model resnet34 --weights /kaggle/input/timm-r34/m.pth"),
        ("--train-args", "--weights=/kaggle/input/timm-r34/m.pth"),
        ("--internet",),
    ],
)
def test_training_kernel_with_weights_or_internet_is_pushed(kaggle_env, project, extra):
    ready_datasets(kaggle_env.server, "someone/timm-r34")
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *extra)
    assert r.exit_code == 0, r.stderr
    assert len(kaggle_env.server.calls("SaveKernel")) == 1


def test_kernel_push_dry_run_without_credentials(kaggle_env, project):
    """A dry run only renders: it works without an account, with a placeholder owner it names."""
    no_creds = {"KAGGLE_USERNAME": None, "KAGGLE_KEY": None}
    r = kaggle_env.run("kernel", "push", "--dry-run", *NO_HUB, cwd=project, env=no_creds)
    assert r.returncode == 0, r.stderr
    assert "no Kaggle credentials" in r.stderr and "<your-kaggle-username>" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    folder = project / "kernels" / "hcd-train"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "<your-kaggle-username>/hcd-train"
    assert meta["dataset_sources"] == ["<your-kaggle-username>/hcd-kit"]
    compile((folder / "hcd_train.py").read_text(), "hcd_train.py", "exec")
    # a real push still needs the credentials
    r = kaggle_env.run("kernel", "push", *NO_HUB, cwd=project, env=no_creds)
    assert r.returncode == 1 and "no Kaggle credentials" in r.stderr
    assert kaggle_env.server.calls("SaveKernel") == []


def test_kernel_push_error_inside_200(kaggle_env, project):
    kaggle_env.server.kernel_push_error = "Maximum weekly GPU quota reached"
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB)
    assert r.exit_code == 1 and "Maximum weekly GPU quota reached" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (project / "kernels" / "hcd-train" / "last_push.json").exists()


def test_kernel_push_with_unattachable_sources_fails(kaggle_env, project):
    """Kaggle saves a kernel whose sources it cannot attach and only lists them: a failed push, named source
    by source, not a success that fails after the GPU queue."""
    kaggle_env.server.kernel_invalid_sources = {
        "dataset": ["testuser/hcd-kti"],
        "competition": ["histopathologic-cancer-detection"],
        "kernel": ["someone/gone-kernel"],
        "model": ["someone/m/pytorch/default/1"],
    }
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB)
    assert r.exit_code == 1, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert "testuser/hcd-train" in line and "pushed" not in r.stdout
    assert "dataset 'testuser/hcd-kti' (check the owner/slug" in line
    assert (
        "competition 'histopathologic-cancer-detection' (check the name and accept the competition rules at "
        "https://www.kaggle.com/c/histopathologic-cancer-detection/rules" in line
    )
    assert "kernel 'someone/gone-kernel'" in line and "model 'someone/m/pytorch/default/1'" in line
    assert "that version runs without them" in line and "run `hcd kernel run` again" in line
    # that version was saved (and started): recorded, so a rerun knows it and never pushes blindly
    rec = json.loads((project / "kernels" / "hcd-train" / "last_push.json").read_text())
    assert rec["version"] == 1 and len(rec["invalid_sources"]) == 4
    assert rec["invalid_sources"][0].startswith("dataset 'testuser/hcd-kti'")


@pytest.mark.parametrize("status", [401, 403])
def test_kernel_status_and_output_denied(kaggle_env, project, tmp_path, status):
    """kaggle >= 2.0.2 turns a 401/403 there into a ValueError about benchmark_task_slug; hcd says what to do."""
    server = kaggle_env.server
    for endpoint, args in [
        ("GetKernelSessionStatus", ("kernel", "status", "--name", "someone/private-kernel")),
        (
            "ListKernelSessionOutput",
            ("kernel", "output", "--name", "someone/private-kernel", "--out-dir", tmp_path / "out"),
        ),
    ]:
        server.fail(endpoint, status=status, message="Permission 'kernels.get' was denied")
        r = kaggle_env.invoke(*args)
        assert r.exit_code == 1
        (line,) = r.stderr.strip().splitlines()
        assert "benchmark" not in line and f"HTTP {status}" in line and "someone/private-kernel" in line
        assert ("KAGGLE_USERNAME" in line) if status == 401 else ("has access to kernel" in line)


@pytest.mark.parametrize("outcome", ["COMPLETE", "ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED"])
def test_kernel_status_wait(kaggle_env, project, outcome, poll_clock):
    server = kaggle_env.server
    server.kernel_polls, server.kernel_outcome = 4, outcome
    server.kernel_failure = "CUDA out of memory in hcd train"
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB).exit_code == 0
    # a bounded wait (5 s of backed-off polls on the fake clock, taking no real time): a status that is never
    # taken as final must fail the test, not hang it for 12 h
    r = kaggle_env.invoke("kernel", "status", "--wait", "--poll-interval", "0.02", "--wait-timeout", "5")
    seen = [line.split(": ")[-1] for line in r.stdout.splitlines() if line.startswith("  testuser/hcd-train")]
    assert seen == ["QUEUED", "QUEUED", "RUNNING", "RUNNING", outcome]
    if outcome == "COMPLETE":
        assert r.exit_code == 0 and "testuser/hcd-train: COMPLETE" in r.stdout
    elif outcome == "ERROR":
        assert r.exit_code == 1 and "CUDA out of memory in hcd train" in r.stderr
    else:  # cancelled: no output will come, so a script chaining `hcd kernel output` must stop here
        assert r.exit_code == 1 and f"kernel testuser/hcd-train ended {outcome}" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = kaggle_env.invoke("kernel", "status", "--name", "no-such-kernel")
    assert r.exit_code == 1 and "no-such-kernel" in r.stderr and "404" in r.stderr


def test_kernel_output_all_pages(kaggle_env, project, tmp_path):
    server = kaggle_env.server
    server.kernel_outputs = {f"file{n}.txt": f"content {n}".encode() for n in range(5)}
    server.kernel_outputs["submission.csv"] = b"id,label\nabc,0.5\n"
    server.output_page_size = 2
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB).exit_code == 0
    out = tmp_path / "out"
    r = kaggle_env.invoke("kernel", "output", "--out-dir", out)
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
    args = ("dataset", "push", "--run-dir", run_dir, "--name", "hcd-weights-r18", "--wheel", wheel, "--out-dir", folder)
    args += ("--poll-interval", "0.05")  # the stand-in processes each version for two status calls
    r = kaggle_env.invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert "created dataset testuser/hcd-weights-r18" in r.stdout
    server = kaggle_env.server
    (create,) = server.calls("CreateDataset")
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
    (version,) = server.calls("CreateDatasetVersion")
    assert version.body["body"]["versionNotes"] == "more epochs" and len(version.body["body"]["files"]) == 6
    server.dataset_error = "The dataset is too large"
    r = kaggle_env.invoke(*args)
    assert r.exit_code == 1 and "The dataset is too large" in r.stderr
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(folder,))


def test_dataset_create_retried_after_a_lost_answer(kaggle_env, tmp_path):
    """The first create made the dataset but its answer was a 5xx; the retry's "slug already in use" is that
    same dataset, so the push succeeded."""
    wheel = tmp_path / "hcd_kit-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hcd_kit/__init__.py", "")
    server = kaggle_env.server
    server.dataset_lost_answers = 1
    r = kaggle_env.invoke("dataset", "push", "--name", "hcd-kit-lost", "--wheel", wheel, "--out-dir", tmp_path / "ds")
    assert r.exit_code == 0, r.stderr
    assert "created dataset testuser/hcd-kit-lost" in r.stdout
    assert len(server.calls("CreateDataset")) == 1 and "testuser/hcd-kit-lost" in server.datasets
    # "already in use" with no dataset of ours to show for it stays an error
    server.datasets.pop("testuser/hcd-kit-lost")
    server.fail_in_body("CreateDataset", code=409, message='The requested slug "hcd-kit-lost" is already in use')
    r = kaggle_env.invoke("dataset", "push", "--name", "hcd-kit-lost", "--wheel", wheel, "--out-dir", tmp_path / "ds")
    assert r.exit_code == 1 and "already in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time: any write shows up as a difference."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file()
    }


def _foreign(names: list[str]) -> list[str]:
    """Wheel entries that are neither hcd_kit sources/assets nor its dist-info metadata."""
    return [
        n
        for n in names
        if not (n.startswith("hcd_kit/") or n.split("/")[0].endswith(".dist-info"))
        or "__pycache__" in n
        or n.endswith(".pyc")
    ]


def test_dataset_push_builds_the_wheel(kaggle_env, tmp_path):
    """The real path: `pip wheel` of this repository into the dataset folder (dry run: nothing uploaded)."""
    folder = tmp_path / "ds"
    build_outputs = (REPO / "build", REPO / "hcd_kit.egg-info")
    before = _tree(*build_outputs)
    r = kaggle_env.invoke("dataset", "push", "--out-dir", folder, "--dry-run")
    assert r.exit_code == 0, r.stderr
    (wheel,) = folder.glob("hcd_kit-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "hcd_kit/kaggle/kernel.py" in zf.namelist() and zf.testzip() is None
        assert _foreign(zf.namelist()) == []
    assert _tree(*build_outputs) == before  # the build wrote nothing into the repository
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta["id"] == "testuser/hcd-kit" and meta["licenses"] == [{"name": "CC0-1.0"}]
    assert kaggle_env.server.requests == []
    r = kaggle_env.invoke("dataset", "push", "--name", "hcd", "--dry-run")
    assert r.exit_code == 2 and "6-50" in r.stderr


def test_wheel_is_built_from_a_clean_copy(tmp_path):
    """Stale build/lib files and __pycache__ never reach Kaggle, and the repository gets no build/ output."""
    from hcd_kit.kaggle import build_wheel

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "hcd_kit", repo / "hcd_kit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, repo / name)
    (repo / "hcd_kit" / "__pycache__").mkdir()
    (repo / "hcd_kit" / "__pycache__" / "kernel.cpython-311.pyc").write_bytes(b"stale bytecode")
    # what an earlier in-tree build leaves behind: a module since deleted from hcd_kit/
    (repo / "build" / "lib" / "hcd_kit").mkdir(parents=True)
    (repo / "build" / "lib" / "hcd_kit" / "removed_module.py").write_text("raise ImportError('stale')\n")
    before = _tree(repo)
    wheel = build_wheel(tmp_path / "dest", repo)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert (
        "hcd_kit/kaggle/kernel.py" in names and "hcd_kit/cli/kaggle.py" in names and "hcd_kit/assets/demo.zip" in names
    )
    assert "hcd_kit/removed_module.py" not in names
    assert _foreign(names) == []
    assert _tree(repo) == before  # no build/bdist.*, no build/lib refresh, no hcd_kit.egg-info
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "build", "hcd_kit", "pyproject.toml"]


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

    extra = ["--weights-dataset", "hcd-weights-r18"] if mode == "predict" else ["--fold", "0,2", *NO_HUB]
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run", *extra)
    assert r.exit_code == 0, r.stderr
    (script,) = (project / "kernels" / ("hcd-predict" if mode == "predict" else "hcd-train-fold-0-2")).glob("*.py")
    inp, work, temp = _fake_kaggle_input(tmp_path / "input"), tmp_path / "working", tmp_path / "kaggle-temp"
    fake = _fake_t4x2(tmp_path / "bin")
    env = dict(
        os.environ,
        HCD_KAGGLE_INPUT=str(inp),
        HCD_KAGGLE_WORKING=str(work),
        HCD_KAGGLE_TEMP=str(temp),
        HCD_KERNEL_DRY_RUN="1",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(fake),
    )
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    steps = [line.split(" -m ", 1)[1] for line in p.stdout.splitlines() if line.startswith("+ ")]
    # the data folder (and the ~8 GB packed store hcd prepare writes there) is scratch, not saved output
    data, run = temp / "data", work / "run"
    assert steps[0].startswith(f"pip install -q --no-index --find-links {inp / 'hcd-kit'}")
    predict = f"hcd_kit predict --data-dir {data} --run-dir {run} --tta 8 --out {work / 'submission.csv'}"
    if mode == "train":
        assert steps[1:] == [
            f"hcd_kit prepare --data-dir {data}",
            f"hcd_kit folds --data-dir {data} --n-folds 5",
            f"hcd_kit train --time-budget 11h --data-dir {data} --fold 0,2 --run-dir {run} --no-pretrained",
            f"hcd_kit cv --run-dir {run}",
            predict,
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
    assert {p.name for p in work.iterdir()} <= {"run", "gpus.json", "submission.csv", "submission.csv.json"}


def test_rendered_kernel_data_falls_back_to_a_temp_dir(kaggle_env, project, tmp_path):
    """Where /kaggle/temp is missing, the data folder goes to the system temp dir, still not /kaggle/working."""
    import os
    import subprocess
    import sys

    if Path("/kaggle/temp").is_dir():
        pytest.skip("/kaggle/temp exists here, so the fallback is not taken")
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run", *NO_HUB).exit_code == 0
    script = project / "kernels" / "hcd-train" / "hcd_train.py"
    inp, work, tmp = _fake_kaggle_input(tmp_path / "input"), tmp_path / "working", tmp_path / "tmp"
    tmp.mkdir()
    fake = _fake_t4x2(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k != "HCD_KAGGLE_TEMP"}
    env.update(
        HCD_KAGGLE_INPUT=str(inp),
        HCD_KAGGLE_WORKING=str(work),
        HCD_KERNEL_DRY_RUN="1",
        TMPDIR=str(tmp),
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(fake),
    )
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"hcd_kit prepare --data-dir {tmp / 'hcd' / 'data'}" in p.stdout
    assert (tmp / "hcd" / "data" / "train").is_symlink() and not (work / "data").exists()


def test_kernel_status_wait_gives_up_after_wait_timeout(kaggle_env, project, poll_clock):
    kaggle_env.server.kernel_polls = 10_000  # queued for good
    assert kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *NO_HUB).exit_code == 0
    r = kaggle_env.invoke("kernel", "status", "--wait", "--poll-interval", "0.02", "--wait-timeout", "0.2")
    assert r.exit_code == 1
    assert "kernel testuser/hcd-train still QUEUED after 0.2 s; check later with hcd kernel status" in r.stderr
    # backed off instead of hammering the server: waits of 0.02, 0.03, 0.045 and 0.0675 s (x 1.5 each) after the
    # first four polls end at 0.1625 s; the next wait (0.10125 s) would end past 0.2 s, so the fifth poll is the last
    assert poll_clock.sleeps == pytest.approx([0.02, 0.03, 0.045, 0.0675])
    assert len(kaggle_env.server.calls("GetKernelSessionStatus")) == 5
