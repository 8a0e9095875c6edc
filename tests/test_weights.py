"""Issue 9 items 2 and 3: `dataset:OWNER/SLUG/FILE` references into a kernel, and `hcd weights push` +
`hcd kernel push --pretrained-from`, with the real kaggle client against the stand-in and the rendered kernel
script run locally (HCD_KERNEL_DRY_RUN=1) against a fake /kaggle/input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hub_snapshot, ready_datasets, ready_models

from hcd_kit.backbones import get_entry

MODEL = "test_resnet"  # a tiny timm model (0.5 M parameters); its "pretrained" weights are made here, no hub
SLUG = "timm-test-resnet"


@pytest.fixture
def pretrained(tmp_path) -> tuple[Path, dict]:
    """A state dict of MODEL (its full, 1000-class form) saved as a file: the weights a hub would have served."""
    import timm
    import torch

    torch.manual_seed(123)
    model = timm.create_model(MODEL)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "downloaded" / "test_resnet.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path, state


def fake_input(root: Path) -> Path:
    """/kaggle/input as a session sees it: the competition and the hcd-kit wheel dataset (older layout)."""
    comp = root / "competitions" / "histopathologic-cancer-detection"
    for sub in ("train", "test"):
        (comp / sub).mkdir(parents=True)
    (comp / "train_labels.csv").write_text("id,label\n")
    (comp / "sample_submission.csv").write_text("id,label\n")
    (root / "hcd-kit").mkdir()
    (root / "hcd-kit" / "hcd_kit-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    return root


def run_kernel(script: Path, inp: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The rendered script, its pip/hcd steps printed instead of run (the real torch reports its GPUs)."""
    env = dict(
        os.environ,
        HCD_KAGGLE_INPUT=str(inp),
        HCD_KAGGLE_WORKING=str(tmp_path / "working"),
        HCD_KAGGLE_TEMP=str(tmp_path / "kaggle-temp"),
        HCD_KERNEL_DRY_RUN="1",
    )
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def train_step(stdout: str) -> list[str]:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("+ ") and " hcd_kit train " in ln]
    return line.split()


def test_weights_push_then_a_kernel_trains_from_exactly_those_weights(kaggle_env, project, tmp_path, pretrained):
    from safetensors.torch import load_file

    from hcd_kit.model import create_model

    file, state = pretrained
    folder = tmp_path / "ds"
    r = kaggle_env.invoke("weights", "push", MODEL, "--from-file", file, "--out-dir", folder, "--poll-interval", "0.05")
    assert r.exit_code == 0, r.stderr
    assert f"created dataset testuser/{SLUG}" in r.stdout
    assert f'hcd kernel push --pretrained-from testuser/{SLUG} --train-args "--model {MODEL}"' in r.stdout
    server = kaggle_env.server
    (create,) = server.calls("CreateDataset")
    assert create.body["ownerSlug"] == "testuser" and create.body["slug"] == SLUG
    assert create.body["isPrivate"] is True
    uploaded = {server.blobs[f["token"]].name: bytes(server.blobs[f["token"]].data) for f in create.body["files"]}
    assert set(uploaded) == {"model.safetensors", "config.json", "hcd-weights.json"}
    assert uploaded["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert json.loads(uploaded["config.json"])["architecture"] == MODEL
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(folder,))

    # the dataset as a kernel pushed from the client sees it: what the server received, under the newer layout
    inp = fake_input(tmp_path / "input")
    mount = inp / "datasets" / "testuser" / SLUG
    mount.mkdir(parents=True)
    for name, data in uploaded.items():
        (mount / name).write_bytes(data)
    pushed = load_file(str(mount / "model.safetensors"))
    assert pushed.keys() == state.keys() and all(pushed[k].equal(state[k]) for k in state)

    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--fold",
        "0",
        "--dry-run",
        "--pretrained-from",
        SLUG,
        "--train-args",
        f"--epochs 1 --model {MODEL}",
    )
    assert r.exit_code == 0, r.stderr
    folder = project / "kernels" / "hcd-train-fold-0"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["testuser/hcd-kit", f"testuser/{SLUG}"]
    script = folder / "hcd_train_fold_0.py"
    ref = f"dataset:testuser/{SLUG}/model.safetensors"
    assert f'TRAIN_ARGS = ["--epochs", "1", "--model", "{MODEL}", "--weights", "{ref}"]' in script.read_text()

    p = run_kernel(script, inp, tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"input path {ref} -> {mount / 'model.safetensors'}" in p.stdout
    words = train_step(p.stdout)
    weights = words[words.index("--weights") + 1]
    assert weights == str(mount / "model.safetensors")
    assert words[words.index("--model") + 1] == MODEL

    # what `hcd train --model MODEL --weights FILE` builds (training.step: create_model(model, pretrained, weights))
    net = create_model(MODEL, pretrained=True, weights=weights)
    loaded = net.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert backbone and all(loaded[k].equal(state[k]) for k in backbone)
    assert loaded["fc.weight"].shape[0] == 1  # hcd's single-logit head, not the pushed 1000-class one
    # and the folder is one timm loads by itself, head included
    import timm

    local = timm.create_model(f"local-dir:{mount}", pretrained=True).state_dict()
    assert all(local[k].equal(state[k]) for k in state)


def test_weights_push_again_adds_a_version_and_dry_run_uploads_nothing(kaggle_env, tmp_path, pretrained):
    file, _ = pretrained
    args = ("weights", "push", MODEL, "--from-file", file, "--slug", "my-tiny-weights", "--out-dir", tmp_path / "ds")
    args += ("--poll-interval", "0.05")  # the stand-in processes each version for two status calls
    r = kaggle_env.invoke(*args, "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "ds" / "model.safetensors").is_file() and kaggle_env.server.requests == []
    assert kaggle_env.invoke(*args).exit_code == 0
    r = kaggle_env.invoke(*args, "--notes", "again")
    assert r.exit_code == 0, r.stderr
    assert "new version of dataset testuser/my-tiny-weights" in r.stdout
    (version,) = kaggle_env.server.calls("CreateDatasetVersion")
    assert version.body["body"]["versionNotes"] == "again" and len(version.body["body"]["files"]) == 3


def test_weights_push_without_the_hub_says_what_to_do_in_one_line(kaggle_env, tmp_path):
    hub = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    r = kaggle_env.run("weights", "push", "resnet18", "--out-dir", tmp_path / "ds", cwd=tmp_path, env=hub)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "could not get the pretrained weights of 'resnet18' from the Hugging Face hub" in line
    assert "HF_HUB_OFFLINE" in line and "where huggingface.co is reachable" in line and "--from-file FILE" in line
    assert not (tmp_path / "ds").exists() and kaggle_env.server.calls("CreateDataset") == []


def test_weights_push_refuses_bad_input_before_uploading(kaggle_env, tmp_path, pretrained):
    import timm
    import torch

    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), other)
    for args, says in [
        (("no_such_model_xyz",), "unknown model 'no_such_model_xyz'"),
        ((MODEL, "--from-file", other), f"not a state dict of timm model '{MODEL}'"),
        ((MODEL, "--from-file", tmp_path / "missing.pth"), "no such file"),
        ((MODEL, "--slug", "Bad_Slug"), "must be 6-50 lowercase"),
    ]:
        r = kaggle_env.invoke("weights", "push", *args, "--out-dir", tmp_path / "ds")
        assert r.exit_code == 2, (args, r.stdout)
        (line,) = r.stderr.strip().splitlines()
        assert says in line, line
    assert not (tmp_path / "ds").exists() and kaggle_env.server.calls("CreateDataset") == []


def test_dataset_references_are_attached_to_the_pushed_kernel(kaggle_env, project):
    ready_datasets(kaggle_env.server, "someone/timm-r34", "bob/extra-files", "someone/timm-r50")
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--dataset",
        "someone/timm-r34",
        "--train-args",
        "--model resnet34 --weights=dataset:someone/timm-r34/sub/m.pth",
        "--predict-args",
        "--extra dataset:bob/extra-files/x.csv",
    )
    assert r.exit_code == 0, r.stderr  # a dataset: reference counts as offline weights
    (body,) = [c.body for c in kaggle_env.server.calls("SaveKernel")]
    assert body["datasetDataSources"] == ["testuser/hcd-kit", "someone/timm-r34", "bob/extra-files"]
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--pretrained-from",
        "someone/timm-r50",
        "--train-args",
        "--model resnet50",
        "--name",
        "hcd-train-r50",
    )
    assert r.exit_code == 0, r.stderr
    body = kaggle_env.server.calls("SaveKernel")[-1].body
    assert body["datasetDataSources"] == ["testuser/hcd-kit", "someone/timm-r50"]
    assert (
        'TRAIN_ARGS = ["--model", "resnet50", "--weights", "dataset:someone/timm-r50/model.safetensors"]'
        in body["text"]
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ("--train-args", "--weights dataset:someone/timm-r34"),
            "'dataset:someone/timm-r34' is not a dataset reference",
        ),
        (
            ("--train-args", "--no-pretrained", "--predict-args", "--x dataset:/a//b"),
            "--predict-args: 'dataset:/a//b' is not a dataset reference",
        ),
        (
            ("--pretrained-from", "timm-r18", "--train-args", "--weights /kaggle/input/x/m.pth"),
            "--pretrained-from sets --weights itself",
        ),
        (
            ("--pretrained-from", "timm-r18", "--weights-dataset", "hcd-weights-r18"),
            "is for training and --probe kernels",
        ),
        (("--pretrained-from", "a/b/c"), "--pretrained-from 'a/b/c': use OWNER/SLUG"),
    ],
)
def test_bad_references_are_refused_before_rendering(kaggle_env, project, args, says):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert says in line, line
    assert not (project / "kernels").exists() and kaggle_env.server.calls("SaveKernel") == []


def test_the_offline_refusal_names_pretrained_from(kaggle_env, project):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--train-args", "--epochs 3")
    assert r.exit_code == 2
    assert "--pretrained-from OWNER/SLUG (made by `hcd weights push MODEL`)" in r.stderr
    assert "dataset:OWNER/SLUG/FILE" in r.stderr


@pytest.mark.parametrize("layout", ["datasets/someone/timm-r34", "timm-r34"])
def test_kernel_resolves_a_reference_in_either_mount_layout(kaggle_env, project, tmp_path, layout):
    ref = "dataset:someone/timm-r34/sub/model.pth"
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--dry-run",
        "--train-args",
        f"--weights={ref}",
        "--predict-args",
        "--note dataset:someone/timm-r34/x.txt",
    )
    assert r.exit_code == 0, r.stderr
    inp = fake_input(tmp_path / "input")
    mount = inp / layout
    (mount / "sub").mkdir(parents=True)
    (mount / "sub" / "model.pth").write_bytes(b"w")
    (mount / "x.txt").write_text("x")
    p = run_kernel(project / "kernels" / "hcd-train" / "hcd_train.py", inp, tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"--weights={mount / 'sub' / 'model.pth'}" in train_step(p.stdout)
    (predict,) = [ln for ln in p.stdout.splitlines() if " hcd_kit predict " in ln]
    assert predict.endswith(f"--note {mount / 'x.txt'}")


def test_kernel_stops_at_once_when_a_reference_is_missing(kaggle_env, project, tmp_path):
    ref = "dataset:someone/timm-r34/model.safetensors"
    assert (
        kaggle_env.invoke(
            "kernel", "push", "--root", project / "kernels", "--dry-run", "--train-args", f"--weights {ref}"
        ).exit_code
        == 0
    )
    script = project / "kernels" / "hcd-train" / "hcd_train.py"
    inp = fake_input(tmp_path / "input")
    p = run_kernel(script, inp, tmp_path)  # the dataset is not mounted at all
    assert p.returncode == 1 and "+ " not in p.stdout  # before installing or training anything
    (line,) = p.stderr.strip().splitlines()
    assert f"{ref}: dataset someone/timm-r34 is not mounted" in line and "hcd kernel push" in line
    mount = inp / "datasets" / "someone" / "timm-r34"
    mount.mkdir(parents=True)
    (mount / "model.pth").write_bytes(b"w")  # mounted, but the file has another name
    p = run_kernel(script, inp, tmp_path)
    assert p.returncode == 1 and "+ " not in p.stdout
    (line,) = p.stderr.strip().splitlines()
    assert line == (
        f"{ref}: no model.safetensors in dataset someone/timm-r34, which is mounted at {mount} (it holds: model.pth)"
    )


@pytest.mark.parametrize("width", [80, 120])
def test_weights_help_is_clean_and_ends_with_an_example(width):
    from typer.testing import CliRunner

    from hcd_kit.cli import app

    for args in (["weights"], ["weights", "push"]):
        res = CliRunner().invoke(
            app, [*args, "--help"], env={"COLUMNS": str(width), "TERMINAL_WIDTH": None, "NO_COLOR": "1"}
        )
        assert res.exit_code == 0, res.output
        for label in ("<bool>", "<str>", "<path>", "<float"):
            assert label not in res.output
        assert not [ln for ln in res.output.splitlines() if len(ln) > width]
        assert "Example: hcd weights push" in res.output.split("Options")[0]


MODEL_HANDLE = "someone/timm-r34/pyTorch/imagenet/3"  # owner/model/framework/variation/version


def test_model_references_are_attached_as_model_sources(kaggle_env, project):
    ready_models(kaggle_env.server, MODEL_HANDLE, "bob/extra/other/v1/1")  # checked before the push
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--train-args",
        f"--model resnet34 --weights=model:{MODEL_HANDLE}/sub/m.pth",
        "--predict-args",
        f"--x model:bob/extra/other/v1/1/x.csv --y model:{MODEL_HANDLE}/y.csv",
    )
    assert r.exit_code == 0, r.stderr  # a model: reference counts as offline weights
    (body,) = [c.body for c in kaggle_env.server.calls("SaveKernel")]
    assert body["modelDataSources"] == [MODEL_HANDLE, "bob/extra/other/v1/1"]
    assert body["datasetDataSources"] == ["testuser/hcd-kit"]
    meta = json.loads((project / "kernels" / "hcd-train" / "kernel-metadata.json").read_text())
    assert meta["model_sources"] == [MODEL_HANDLE, "bob/extra/other/v1/1"]


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ("--train-args", "--weights model:someone/timm-r34/pytorch/imagenet/3"),
            "'model:someone/timm-r34/pytorch/imagenet/3' is not a model reference",
        ),
        (("--train-args", "--weights=model:someone/timm-r34/pytorch/imagenet/latest/m.pth"), "with a version number"),
        (
            ("--train-args", "--no-pretrained", "--predict-args", "--x model:a//b/c/1/f"),
            "--predict-args: 'model:a//b/c/1/f' is not a model reference",
        ),
    ],
)
def test_bad_model_references_are_refused_before_rendering(kaggle_env, project, args, says):
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert says in line and "model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE" in line, line
    assert not (project / "kernels").exists() and kaggle_env.server.calls("SaveKernel") == []


@pytest.mark.parametrize("layout", ["models/someone/timm-r34/pyTorch/imagenet/3", "timm-r34/pytorch/imagenet/3"])
def test_kernel_resolves_a_model_reference_in_either_mount_layout(kaggle_env, project, tmp_path, layout):
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--dry-run",
        "--train-args",
        f"--weights=model:{MODEL_HANDLE}/sub/model.pth",
        "--predict-args",
        f"--note model:{MODEL_HANDLE}/x.txt",
    )
    assert r.exit_code == 0, r.stderr
    inp = fake_input(tmp_path / "input")
    mount = inp / layout
    (mount / "sub").mkdir(parents=True)
    (mount / "sub" / "model.pth").write_bytes(b"w")
    (mount / "x.txt").write_text("x")
    p = run_kernel(project / "kernels" / "hcd-train" / "hcd_train.py", inp, tmp_path)
    assert p.returncode == 0, p.stderr
    assert (
        f"input path --weights=model:{MODEL_HANDLE}/sub/model.pth -> --weights={mount / 'sub' / 'model.pth'}"
        in p.stdout
    )
    assert f"--weights={mount / 'sub' / 'model.pth'}" in train_step(p.stdout)
    (predict,) = [ln for ln in p.stdout.splitlines() if " hcd_kit predict " in ln]
    assert predict.endswith(f"--note {mount / 'x.txt'}")


def test_kernel_stops_at_once_when_a_model_reference_is_missing(kaggle_env, project, tmp_path):
    ref = f"model:{MODEL_HANDLE}/model.safetensors"
    assert (
        kaggle_env.invoke(
            "kernel", "push", "--root", project / "kernels", "--dry-run", "--train-args", f"--weights {ref}"
        ).exit_code
        == 0
    )
    script = project / "kernels" / "hcd-train" / "hcd_train.py"
    inp = fake_input(tmp_path / "input")
    (inp / "timm-r34" / "pytorch" / "imagenet" / "2").mkdir(parents=True)  # another version is no match
    p = run_kernel(script, inp, tmp_path)
    assert p.returncode == 1 and "+ " not in p.stdout  # before installing or training anything
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(
        f"{ref}: model {MODEL_HANDLE} is not mounted (no folder {inp}/timm-r34/pytorch/imagenet/3 "
        f"or {inp}/models/someone/timm-r34/pytorch/imagenet/3)"
    ), line
    assert "hcd kernel push" in line
    mount = inp / "models" / "someone" / "timm-r34" / "pyTorch" / "imagenet" / "3"
    mount.mkdir(parents=True)
    (mount / "model.pth").write_bytes(b"w")  # mounted, but the file has another name
    p = run_kernel(script, inp, tmp_path)
    assert p.returncode == 1 and "+ " not in p.stdout
    (line,) = p.stderr.strip().splitlines()
    assert line == (
        f"{ref}: no model.safetensors in model {MODEL_HANDLE}, which is mounted at {mount} (it holds: model.pth)"
    )


# ---- registry models (issue 11): the licence rule, the hub cache, and route B into a kernel -------------------
KAIKO = "kaiko-vits16"  # a real registry entry: non-commercial, not re-hostable, and small (ViT-S/16, 22 M)
KAIKO_HUB = "1aurent/vit_small_patch16_224.kaiko_ai_towards_large_pathology_fms"
KAIKO_LICENCE = get_entry(KAIKO).licence  # as registered in hcd_kit/assets/backbones.toml


@pytest.fixture
def kaiko_hub(tmp_path) -> tuple[Path, dict]:
    """HF_HOME with the hub cache as huggingface_hub leaves it after downloading kaiko-vits16 (random weights of the
    real shape, the repository's timm config.json); returns (HF_HOME, the state dict)."""
    import timm
    import torch
    from safetensors.torch import save_file

    snap = hub_snapshot(tmp_path / "hf", KAIKO_HUB)
    torch.manual_seed(7)
    net = timm.create_model("vit_small_patch16_224", num_classes=0, dynamic_img_size=True)
    state = {k: v.contiguous().clone() for k, v in net.state_dict().items()}
    save_file(state, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(
        json.dumps(
            {
                "architecture": "vit_small_patch16_224",
                "num_classes": 0,
                "num_features": 384,
                "global_pool": "token",
                "model_args": {"dynamic_img_size": True},
                "pretrained_cfg": {
                    "tag": "kaiko_ai_towards_large_pathology_fms",
                    "custom_load": False,
                    "input_size": [3, 224, 224],
                    "fixed_input_size": False,
                    "interpolation": "bicubic",
                    "crop_pct": 1.0,
                    "crop_mode": "center",
                    "mean": [0.5] * 3,
                    "std": [0.5] * 3,
                    "num_classes": 0,
                    "pool_size": None,
                    "first_conv": "patch_embed.proj",
                    "classifier": "head",
                },
            }
        )
    )
    return tmp_path / "hf", state


def hub_env(hf_home: Path) -> dict:
    return {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": None, "HF_TOKEN": None}


def test_a_registry_model_that_may_not_be_rehosted_is_refused_without_private_ok(kaggle_env, tmp_path):
    r = kaggle_env.invoke("weights", "push", KAIKO, "--out-dir", tmp_path / "ds")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"'{KAIKO}' is under {KAIKO_LICENCE}, which does not allow re-hosting its weights" in line
    assert "pass --private-ok" in line and "--hub-secret NAME" in line
    assert not (tmp_path / "ds").exists() and kaggle_env.server.requests == []


def test_registry_weights_pushed_privately_then_a_kernel_trains_from_them(kaggle_env, project, tmp_path, kaiko_hub):
    """Route B end to end: the hub cache -> `hcd weights push kaiko-vits16 --private-ok` (a private dataset whose
    description states the licence) -> `--pretrained-from` -> the kernel's `hcd train --model kaiko-vits16
    --weights FILE` builds the registry architecture offline from exactly those weights."""
    import torch

    from hcd_kit.model import create_model, input_normalisation

    hf_home, state = kaiko_hub
    folder = tmp_path / "ds"
    r = kaggle_env.run(
        "weights",
        "push",
        KAIKO,
        "--private-ok",
        "--out-dir",
        folder,
        "--poll-interval",
        "0.05",
        cwd=tmp_path,
        env=hub_env(hf_home),
    )
    assert r.returncode == 0, r.stderr
    slug = f"{KAIKO}-weights"
    assert f"created dataset testuser/{slug}" in r.stdout and "keep it private" in r.stdout
    assert f'hcd kernel push --pretrained-from testuser/{slug} --train-args "--model {KAIKO}"' in r.stdout
    assert f"hcd kernel push --probe {KAIKO} --pretrained-from testuser/{slug}" in r.stdout
    (create,) = kaggle_env.server.calls("CreateDataset")
    assert create.body["isPrivate"] is True and create.body["slug"] == slug
    assert f"licence {KAIKO_LICENCE}" in create.body["description"] and "PRIVATE copy" in create.body["description"]
    uploaded = {
        kaggle_env.server.blobs[f["token"]].name: bytes(kaggle_env.server.blobs[f["token"]].data)
        for f in create.body["files"]
    }
    assert set(uploaded) == {"model.safetensors", "config.json", "hcd-weights.json"}
    cfg = json.loads(uploaded["config.json"])
    assert cfg["architecture"] == "vit_small_patch16_224" and cfg["model_args"]["dynamic_img_size"] is True
    assert cfg["hcd"]["registry"] == KAIKO and cfg["hcd"]["licence"] == KAIKO_LICENCE
    assert cfg["pretrained_cfg"]["mean"] == [0.5] * 3 and cfg["pretrained_cfg"]["input_size"] == [3, 224, 224]
    assert json.loads(uploaded["hcd-weights.json"])["private_copy"] is True
    kaggle_env.assert_no_secret(r.stdout, r.stderr, paths=(folder,))

    inp = fake_input(tmp_path / "input")
    mount = inp / "datasets" / "testuser" / slug
    mount.mkdir(parents=True)
    for name, data in uploaded.items():
        (mount / name).write_bytes(data)
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--fold",
        "0",
        "--dry-run",
        "--pretrained-from",
        slug,
        "--train-args",
        f"--epochs 1 --model {KAIKO}",
    )
    assert r.exit_code == 0, r.stderr
    script = project / "kernels" / "hcd-train-fold-0" / "hcd_train_fold_0.py"
    p = run_kernel(script, inp, tmp_path)
    assert p.returncode == 0, p.stderr
    words = train_step(p.stdout)
    weights = words[words.index("--weights") + 1]
    assert weights == str(mount / "model.safetensors") and words[words.index("--model") + 1] == KAIKO

    net = create_model(KAIKO, pretrained=True, weights=weights)  # what `hcd train` builds in the kernel, offline
    loaded = net.state_dict()
    assert all(loaded[k].equal(state[k]) for k in state) and loaded["head.weight"].shape == (1, 384)
    assert input_normalisation(net) == ((0.5,) * 3, (0.5,) * 3)  # the weights' own normalisation, as on the hub
    # and as a local-dir: folder, the backbone as published (what `hcd embed --model local-dir:` takes)
    x = torch.randn(2, 3, 64, 64)
    local = create_model(f"local-dir:{mount}", pretrained=True, num_classes=0).eval()
    direct = create_model(KAIKO, weights=weights, num_classes=0).eval()
    with torch.no_grad():
        assert torch.equal(local(x), direct(x))


def test_registry_push_offline_without_the_cache_says_what_to_do(kaggle_env, tmp_path):
    r = kaggle_env.run(
        "weights",
        "push",
        "uni",
        "--private-ok",
        "--out-dir",
        tmp_path / "ds",
        cwd=tmp_path,
        env=hub_env(tmp_path / "empty-hf"),
    )
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "could not get the weights of 'uni' from the Hugging Face hub (MahmoodLab/uni)" in line
    assert "HF_HUB_OFFLINE is set" in line and "request access at https://huggingface.co/MahmoodLab/uni" in line
    assert "--from-file FILE" in line
    assert not (tmp_path / "ds").exists() and kaggle_env.server.calls("CreateDataset") == []


def test_registry_push_from_a_file(kaggle_env, tmp_path, kaiko_hub, pretrained):
    hf_home, state = kaiko_hub
    good = next(hf_home.rglob("model.safetensors"))
    r = kaggle_env.invoke(
        "weights", "push", KAIKO, "--private-ok", "--from-file", pretrained[0], "--out-dir", tmp_path / "ds"
    )
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"not a state dict of '{KAIKO}' (timm vit_small_patch16_224)" in line
    assert not (tmp_path / "ds").exists()
    r = kaggle_env.invoke(
        "weights", "push", KAIKO, "--private-ok", "--from-file", good, "--out-dir", tmp_path / "ds", "--dry-run"
    )
    assert r.exit_code == 0, r.stderr
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "ds" / "model.safetensors"))
    assert saved.keys() == state.keys() and all(saved[k].equal(state[k]) for k in state)
    meta = json.loads((tmp_path / "ds" / "dataset-metadata.json").read_text())
    assert meta["id"] == f"testuser/{KAIKO}-weights" and KAIKO_LICENCE in meta["description"]
    assert kaggle_env.server.calls("CreateDataset") == []
