"""SLOW (about 1 min): the rendered Kaggle kernels run for real, offline, in a Kaggle-like sandbox.

Not the dry run of tests/test_kernel.py: the training kernel (``render_kernel``, as ``hcd kernel push``
renders it) really installs the wheel built from this checkout with ``pip install --no-index`` into a Python
where hcd_kit was not importable before, then packs, folds, trains two folds of a tiny timm model, runs cv and
predicts, on real patches, with no network (``unshare -n``) and the competition mounted read-only under
``/kaggle/input/competitions/...`` (the newer layout). Then the inference-only kernel does the same from the
files of ``hcd dataset push --run-dir RUN --dry-run`` attached as a weights dataset. See tests/kaggle_sandbox.py.
Where ``unshare -n`` is unavailable these tests are skipped, and pytest (-rs) prints why.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAKE_KAGGLE_USER, STUB_COMPETITION, make_subset
from kaggle_sandbox import Sandbox, make_readonly, tree, unshare_problem

USER = FAKE_KAGGLE_USER
# two folds of a tiny timm model at 32 px, one epoch, from scratch (no hub offline): seconds on a CPU
TRAIN_ARGS = "--model test_resnet --no-pretrained --epochs 1 --img-size 32 --batch-size 32 --threads 2"
SAVED = {"run", "gpus.json", "submission.csv", "submission.csv.json"}  # all a kernel may leave in its output


@pytest.fixture(scope="module")
def offline():
    why = unshare_problem()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def wheel(offline, checkout_wheel) -> Path:
    return checkout_wheel


def kaggle_like(root: Path, wheel: Path, data: Path) -> Sandbox:
    """A fresh sandbox with ``<you>/hcd-kit`` (the wheel) and the competition attached, both read-only."""
    box = Sandbox.create(root)
    shutil.copyfile(wheel, box.dataset(USER, "hcd-kit") / wheel.name)
    shutil.copytree(data, box.competition(STUB_COMPETITION))
    return box


def check_clean(box: Sandbox) -> None:
    """Before the kernel: hcd_kit is neither importable nor installed, but the 'image' has torch and timm."""
    seen = box.probe()
    assert seen["hcd_kit"] is None and seen["dists"] == [], f"hcd_kit is visible in the sandbox: {seen}"
    assert seen["prefix"] == str(box.python.parents[1])


def check_kernel(box: Sandbox, proc, sample_csv: Path, before: dict) -> pd.DataFrame:
    """What every kernel must do: exit 0, install the wheel offline, save only its outputs, log its GPUs."""
    import torch

    from hcd_kit.runs import validate_submission

    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    wheels = box.input / "datasets" / USER / "hcd-kit"
    assert f"pip install -q --no-index --find-links {wheels}" in proc.stdout
    assert "--no-deps" not in log  # the wheel's dependencies resolved against the preinstalled packages
    seen = box.probe()  # hcd_kit now comes from the wheel, installed into the sandbox's own site-packages
    assert seen["hcd_kit"] and Path(seen["hcd_kit"]).is_relative_to(box.python.parents[1]), seen
    assert seen["dists"] == ["hcd-kit"]
    # the saved output holds only what it should: the packed store stayed in scratch (/kaggle/temp)
    assert {p.name for p in box.work.iterdir()} == SAVED
    assert not [p for p in box.work.rglob("*") if p.suffix == ".npy" or p.name == "packed"]
    # no optimiser state it will not use: every fold finished, so none kept its last.pt; the size is printed last
    assert not list(box.work.rglob("last.pt"))
    files = [p for p in box.work.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files) / 1e9
    assert f"output: {len(files)} files, {size:.2f} GB of 20 GB in {box.work}" in proc.stdout.splitlines()[-1]
    assert tree(box.input) == before, "the kernel wrote into /kaggle/input"
    sub = validate_submission(box.work / "submission.csv", sample_csv)
    assert len(sub) == len(pd.read_csv(sample_csv)) and sub["label"].between(0, 1).all()
    gpus = json.loads((box.work / "gpus.json").read_text())
    assert "GPUS {" in proc.stdout
    assert gpus["machine_shape_asked"] == "NvidiaTeslaT4"
    assert gpus["torch"] == torch.__version__  # the preinstalled torch, not one pip fetched
    n = torch.cuda.device_count()
    assert gpus["cuda_device_count"] == n and len(gpus["cuda_devices"]) == n  # no GPU here: 0 and []
    if not shutil.which("nvidia-smi"):
        assert gpus["nvidia_smi"][0].startswith("nvidia-smi unavailable")
    return sub


@dataclass
class Trained:
    box: Sandbox
    proc: object
    data: Path
    before: dict


@pytest.fixture(scope="module")
def trained(wheel, sample_root, tmp_path_factory) -> Trained:
    """The training kernel (folds 0,1), rendered by the library and run once for real in a fresh sandbox."""
    from hcd_kit.kaggle import KernelSpec, render_kernel

    tmp = tmp_path_factory.mktemp("rehearsal-train")
    data = make_subset(sample_root, tmp / "data", n_train=64, n_test=16)  # real shipped patches
    box = kaggle_like(tmp / "kaggle", wheel, data)
    # a CPU machine has no GPU: the kernel asked for T4 x2 goes on because --allow-other-gpus says so
    spec = KernelSpec(fold="0,1", tta=2, train_args=TRAIN_ARGS, allow_other_gpus=True)
    folder = render_kernel(spec, USER, tmp / "kernels")
    make_readonly(box.input)
    before = tree(box.input)
    check_clean(box)
    return Trained(box, box.run_kernel(folder / "hcd_train.py"), data, before)


def test_training_kernel_runs_for_real_offline(trained):
    """SLOW: install the wheel offline, prepare, folds, train folds 0 and 1, cv, predict; a valid submission."""
    box, proc = trained.box, trained.proc
    sub = check_kernel(box, proc, trained.data / "sample_submission.csv", trained.before)
    assert (box.temp / "data" / "packed" / "manifest.json").is_file()  # hcd prepare packed into scratch
    run = box.work / "run"
    assert [p.parent.name for p in sorted(run.glob("fold*/best.pt"))] == ["fold0", "fold1"]
    assert all(json.loads((run / f"fold{k}" / "state.json").read_text())["finished"] for k in (0, 1))
    assert 'model = "test_resnet"' in (run / "config.toml").read_text()
    assert set(sub["id"]) == set(pd.read_csv(trained.data / "sample_submission.csv", dtype={"id": str})["id"])
    assert "hcd_kit prepare" in proc.stdout and "hcd_kit cv" in proc.stdout


def test_inference_kernel_from_weights_dataset_runs_for_real(trained, wheel, kaggle_env, tmp_path):
    """SLOW: `hcd dataset push --run-dir RUN --dry-run`'s files attached as a weights dataset; predict mode.

    The training kernel's saved run/ is what a user downloads with `hcd kernel output`; the inference
    kernel rebuilt from it must predict exactly what the training kernel predicted with the same TTA.
    """
    ds = tmp_path / "hcd-weights-rehearsal"
    r = kaggle_env.invoke(
        "dataset",
        "push",
        "--run-dir",
        trained.box.work / "run",
        "--name",
        ds.name,
        "--wheel",
        wheel,
        "--out-dir",
        ds,
        "--dry-run",
    )
    assert r.exit_code == 0, r.output
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        tmp_path / "kernels",
        "--weights-dataset",
        ds.name,
        "--tta",
        "2",
        "--dry-run",
        "--allow-other-gpus",
    )
    assert r.exit_code == 0, r.output
    box = kaggle_like(tmp_path / "kaggle", wheel, trained.data)
    weights = box.dataset(USER, ds.name)
    for f in ds.iterdir():  # the client uploads the folder's files; Kaggle mounts them, not the metadata
        if f.name != "dataset-metadata.json":
            shutil.copyfile(f, weights / f.name)
    assert {"config.toml", "fold0_best.pt", "fold1_best.pt"} <= {f.name for f in weights.iterdir()}
    make_readonly(box.input)
    before = tree(box.input)
    check_clean(box)
    proc = box.run_kernel(tmp_path / "kernels" / "hcd-predict" / "hcd_predict.py")
    sub = check_kernel(box, proc, trained.data / "sample_submission.csv", before)
    assert "hcd_kit prepare" not in proc.stdout and "hcd_kit train" not in proc.stdout
    assert (box.work / "run" / "fold1" / "best.pt").resolve() == weights / "fold1_best.pt"
    trained_sub = pd.read_csv(trained.box.work / "submission.csv", dtype={"id": str}).set_index("id")["label"]
    assert sub.set_index("id")["label"].loc[trained_sub.index].to_numpy() == pytest.approx(
        trained_sub.to_numpy(), abs=1e-4
    )


def test_fanout_inference_kernel_reads_fold_kernel_outputs_for_real(trained, wheel, tmp_path):
    """SLOW: the inference kernel of `hcd kernel run --fold each`, rendered by the library, gathers run/foldK from
    two fold kernels' outputs attached as kernel sources (one in the older layout /kaggle/input/<slug>, one in
    the inferred newer /kaggle/input/notebooks/<owner>/<slug>) and predicts what the two-fold run predicted."""
    from hcd_kit.kaggle import KernelSpec, render_kernel
    from hcd_kit.kaggle.fanout import fanout_specs

    folds, infer = fanout_specs(KernelSpec(train_args=TRAIN_ARGS, tta=2, allow_other_gpus=True), 2)
    infer.fold_kernels = [f"{USER}/{s.name}@1" for s in folds]
    folder = render_kernel(infer, USER, tmp_path / "kernels")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [f"{USER}/hcd-train-fold-0", f"{USER}/hcd-train-fold-1"]
    box = kaggle_like(tmp_path / "kaggle", wheel, trained.data)
    mounts = [box.input / "hcd-train-fold-0", box.input / "notebooks" / USER / "hcd-train-fold-1"]
    run = trained.box.work / "run"
    for k, mount in enumerate(mounts):  # what fold kernel k saved: run/config.toml and run/foldK/ (+ the rest)
        (mount / "run").mkdir(parents=True)
        shutil.copyfile(run / "config.toml", mount / "run" / "config.toml")
        shutil.copytree(run / f"fold{k}", mount / "run" / f"fold{k}")
        shutil.copyfile(trained.box.work / "gpus.json", mount / "gpus.json")
    make_readonly(box.input)
    before = tree(box.input)
    check_clean(box)
    proc = box.run_kernel(folder / "hcd_predict_folds.py")
    sub = check_kernel(box, proc, trained.data / "sample_submission.csv", before)
    assert "hcd_kit train" not in proc.stdout and "fold1 from kernel" in proc.stdout
    for k, mount in enumerate(mounts):
        assert (box.work / "run" / f"fold{k}" / "best.pt").resolve() == mount / "run" / f"fold{k}" / "best.pt"
    trained_sub = pd.read_csv(trained.box.work / "submission.csv", dtype={"id": str}).set_index("id")["label"]
    assert sub.set_index("id")["label"].loc[trained_sub.index].to_numpy() == pytest.approx(
        trained_sub.to_numpy(), abs=1e-4
    )


def test_probe_kernel_runs_for_real_offline(wheel, sample_root, kaggle_env, tmp_path):
    """SLOW: a --probe kernel (route B: --pretrained-from a dataset of `hcd weights push MODEL --dry-run`), offline:
    install, prepare, folds, `hcd embed` with the dataset's weights, `hcd probe`; a valid submission.csv."""
    import timm
    import torch

    from hcd_kit.kaggle import KernelSpec, render_kernel

    torch.manual_seed(0)
    state = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), state)
    ds = tmp_path / "timm-test-resnet"
    r = kaggle_env.invoke("weights", "push", "test_resnet", "--from-file", state, "--out-dir", ds, "--dry-run")
    assert r.exit_code == 0, r.output
    data = make_subset(sample_root, tmp_path / "data", n_train=64, n_test=16)
    box = kaggle_like(tmp_path / "kaggle", wheel, data)
    weights = box.dataset(USER, ds.name)
    for f in ds.iterdir():
        if f.name != "dataset-metadata.json":
            shutil.copyfile(f, weights / f.name)
    spec = KernelSpec(
        name="hcd-probe", mode="probe", probe="test_resnet", pretrained_from=ds.name, tta=2, allow_other_gpus=True
    )
    folder = render_kernel(spec, USER, tmp_path / "kernels")
    make_readonly(box.input)
    before = tree(box.input)
    check_clean(box)
    proc = box.run_kernel(folder / "hcd_probe.py")
    sub = check_kernel(box, proc, data / "sample_submission.csv", before)
    assert f"--weights {weights / 'model.safetensors'}" in proc.stdout  # the dataset reference, resolved
    assert "hcd_kit embed" in proc.stdout and "hcd_kit probe" in proc.stdout and "hcd_kit train" not in proc.stdout
    assert (box.temp / "features").is_dir() and not (box.work / "features").exists()  # GBs stay in scratch
    assert (box.work / "run" / "submission.csv").read_bytes() == (box.work / "submission.csv").read_bytes()
    assert sub["label"].nunique() > 1


# what the kernel's GPU check sees, faked (HCD_KERNEL_FAKE_GPUS, ..._ARCHS): this machine's torch may have no CUDA
CU128 = "sm_75,sm_80,sm_86,sm_90,sm_100,sm_120"  # the archs of the Kaggle image's torch 2.10 cu128 (no sm_60)


@pytest.mark.parametrize(
    ("gpus", "allow", "why"),
    [
        (None, False, "asked for NvidiaTeslaT4 (2 GPU(s)) but the session got 0: no CUDA device"),
        ("Tesla T4@7.5", False, "asked for NvidiaTeslaT4 (2 GPU(s)) but the session got 1: Tesla T4"),
        ("Tesla P100-PCIE-16GB@6.0,Tesla P100-PCIE-16GB@6.0", False, "(compute capability 6.0) cannot run"),
        ("Tesla T4@7.5,Tesla T4@7.5", False, ""),
        ("Tesla T4@7.5", True, "asked for NvidiaTeslaT4 (2 GPU(s)) but the session got 1: Tesla T4"),
    ],
)
def test_a_t4x2_kernel_on_the_wrong_gpus_stops_before_installing(offline, tmp_path, gpus, allow, why):
    """The training kernel asked for T4 x2 and got one GPU, none, or GPUs its torch cannot run: it stops in its first
    seconds with one line (gpus.json written), before pip or any hcd step; --allow-other-gpus goes on."""
    import time

    from hcd_kit.kaggle import KernelSpec, render_kernel

    spec = KernelSpec(fold="0", train_args=TRAIN_ARGS, allow_other_gpus=allow)
    folder = render_kernel(spec, USER, tmp_path / "kernels")
    box = Sandbox.create(tmp_path / "kaggle")  # nothing attached: a kernel that goes on stops at its install
    env = (
        {"CUDA_VISIBLE_DEVICES": ""} if gpus is None else {"HCD_KERNEL_FAKE_GPUS": gpus, "HCD_KERNEL_FAKE_ARCHS": CU128}
    )
    start = time.monotonic()
    proc = box.run_kernel(folder / "hcd_train.py", timeout=120, env=env)
    assert time.monotonic() - start < 60
    gpus_json = json.loads((box.work / "gpus.json").read_text())
    assert gpus_json["machine_shape_asked"] == "NvidiaTeslaT4"
    assert why in gpus_json["gpu_check"] if why else gpus_json["gpu_check"] == "ok"
    if why and not allow:
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("hcd stopped the session before installing anything: ") and why in line
        assert "pass --allow-other-gpus" in line and "pip install" not in proc.stdout
        return
    # it went on to the install (the wheel dataset is not attached in this sandbox, so that is where it stops)
    assert "hcd-kit is not attached" in proc.stderr
    if allow:
        assert f"GPU check: {why}; going on (--allow-other-gpus)" in proc.stdout
