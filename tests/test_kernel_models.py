"""Kernels that use registry models (`hcd models`): route A (`--hub-secret NAME`: internet on, HF_TOKEN from a Kaggle
secret, the token never in anything hcd writes or pushes), route B (`--pretrained-from` a dataset of the weights),
the refusal naming both, and probe kernels (`--probe MODEL`: hcd embed + hcd probe), with the real kaggle client
against the stand-in and the rendered script run locally (HCD_KERNEL_DRY_RUN=1, or imported)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import ready_datasets
from test_weights import fake_input, run_kernel

FAKE_HF_TOKEN = "hf_FakeTokenForTestsOnly0123456789abcdef"  # searched for in everything hcd writes or pushes


def push(kaggle_env, project, *args):
    return kaggle_env.invoke("kernel", "push", "--root", project / "kernels", *map(str, args))


def steps(stdout: str) -> list[str]:
    return [line.split(" -m ", 1)[1] for line in stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize(
    "args, model, private",
    [
        (("--train-args", "--model uni --epochs 2"), "uni", " --private-ok"),
        (("--train-args", "--model=virchow2", "--internet"), "virchow2", " --private-ok"),  # internet is not a token
        (("--train-args", "--model hf-hub:MahmoodLab/UNI2-h"), "uni2-h", " --private-ok"),
        (("--train-args", "--model h-optimus-0"), "h-optimus-0", ""),  # its licence allows re-hosting
        (("--probe", "kaiko-vits16"), "kaiko-vits16", " --private-ok"),
        (("--probe", "uni", "--internet"), "uni", " --private-ok"),
    ],
)
def test_a_registry_model_without_a_route_is_refused_naming_both(kaggle_env, project, args, model, private):
    r = push(kaggle_env, project, *args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert f"names '{model}'" in line
    assert f"`hcd weights push {model}{private}`, then --pretrained-from OWNER/{model}-weights" in line
    assert "--hub-secret HF_TOKEN" in line and "Kaggle secret" in line
    assert not (project / "kernels").exists() and kaggle_env.server.calls("SaveKernel") == []


@pytest.mark.parametrize(
    "args",
    [
        ("--train-args", "--model uni --no-pretrained"),  # random weights need neither route
        ("--train-args", "--model uni --weights dataset:me/my-uni/model.safetensors"),  # a dataset the user made
        ("--train-args", "--model uni", "--pretrained-from", "me/uni-weights"),
        ("--train-args", "--model uni", "--hub-secret", "HF_TOKEN"),
        ("--probe", "uni", "--hub-secret", "MY_HF-token"),
    ],
)
def test_either_route_is_accepted(kaggle_env, project, args):
    r = push(kaggle_env, project, "--dry-run", *args)
    assert r.exit_code == 0, r.stderr


def test_route_a_pushes_the_secret_name_and_never_the_token(kaggle_env, project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)  # the user's own token here must not travel into the kernel
    r = push(kaggle_env, project, "--fold", "0", "--hub-secret", "HF_TOKEN", "--train-args", "--model uni --epochs 1")
    assert r.exit_code == 0, r.stderr
    assert "internet on" in r.stdout and "Add-ons > Secrets" in r.stdout
    (body,) = [c.body for c in kaggle_env.server.calls("SaveKernel")]
    assert body["enableInternet"] is True
    assert (
        'HUB_SECRET = "HF_TOKEN"' in body["text"] and 'TRAIN_ARGS = ["--model", "uni", "--epochs", "1"]' in body["text"]
    )
    assert body["datasetDataSources"] == ["testuser/hcd-kit"]  # no weights dataset: the hub serves them
    requests = kaggle_env.server.requests  # every byte the client sent: bodies and headers
    assert requests and all(FAKE_HF_TOKEN.encode() not in q.data for q in requests)
    pushed = json.dumps([[q.path, q.headers, q.body] for q in requests])
    for text in (pushed, r.stdout, r.stderr):
        assert FAKE_HF_TOKEN not in text
    for f in (project / "kernels").rglob("*"):
        if f.is_file():
            assert FAKE_HF_TOKEN.encode() not in f.read_bytes(), f
    kaggle_env.assert_no_secret(r.stdout, r.stderr, pushed, paths=(project / "kernels",))


@pytest.mark.parametrize(
    "name, says",
    [
        (FAKE_HF_TOKEN, "takes the NAME of a Kaggle secret, not the token itself"),
        ("my secret", "use the name of a Kaggle secret"),
    ],
)
def test_a_token_or_a_bad_name_as_hub_secret_is_refused_without_echoing_it(kaggle_env, project, name, says):
    r = push(kaggle_env, project, "--hub-secret", name, "--train-args", "--model uni")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert says in line and FAKE_HF_TOKEN not in line
    assert kaggle_env.server.calls("SaveKernel") == []


def fake_secrets(folder: Path, body: str) -> Path:
    """A ``kaggle_secrets`` module as Kaggle's image has it, on a PYTHONPATH folder."""
    folder.mkdir(exist_ok=True)
    (folder / "kaggle_secrets.py").write_text(
        "class BackendError(Exception):\n    pass\n\n"
        "class UserSecretsClient:\n"
        "    def get_secret(self, label):\n" + "".join(f"        {ln}\n" for ln in body.splitlines())
    )
    return folder


@pytest.fixture
def hub_kernel(kaggle_env, project) -> Path:
    r = push(
        kaggle_env,
        project,
        "--dry-run",
        "--fold",
        "0",
        "--hub-secret",
        "HF_TOKEN",
        "--train-args",
        "--model uni --epochs 1",
    )
    assert r.exit_code == 0, r.stderr
    return project / "kernels" / "hcd-train-fold-0" / "hcd_train_fold_0.py"


def run_with(script: Path, tmp_path: Path, secrets: Path | None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HCD_KAGGLE_INPUT=str(fake_input(tmp_path / "input")),
        HCD_KERNEL_DRY_RUN="1",
        HCD_KAGGLE_WORKING=str(tmp_path / "working"),
        HCD_KAGGLE_TEMP=str(tmp_path / "kaggle-temp"),
    )
    env.pop("HF_TOKEN", None)
    if secrets is not None:
        env["PYTHONPATH"] = str(secrets)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


def test_the_kernel_sets_hf_token_from_the_secret_without_showing_it(hub_kernel, tmp_path, monkeypatch, capsys):
    secrets = fake_secrets(tmp_path / "secrets", f"assert label == 'HF_TOKEN', label\nreturn {FAKE_HF_TOKEN!r}")
    p = run_with(hub_kernel, tmp_path, secrets)
    assert p.returncode == 0, p.stderr
    assert "HF_TOKEN set from the Kaggle secret HF_TOKEN (not shown)" in p.stdout
    assert steps(p.stdout)[-3].startswith("hcd_kit train ") and steps(p.stdout)[-3].endswith(" --model uni --epochs 1")
    assert FAKE_HF_TOKEN not in p.stdout + p.stderr
    for f in (tmp_path / "working").rglob("*"):  # gpus.json and whatever else the session saves
        assert not f.is_file() or FAKE_HF_TOKEN.encode() not in f.read_bytes(), f
    # the secret-loading part itself: HF_TOKEN is in the environment every later hcd step inherits
    monkeypatch.syspath_prepend(str(secrets))
    monkeypatch.delitem(sys.modules, "kaggle_secrets", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kernel = runpy.run_path(str(hub_kernel), run_name="kernel")
    kernel["hub_token"]()
    assert os.environ["HF_TOKEN"] == FAKE_HF_TOKEN and "HF_HUB_OFFLINE" not in os.environ
    assert FAKE_HF_TOKEN not in capsys.readouterr().out


@pytest.mark.parametrize(
    "body, error",
    [
        ("raise BackendError('No user secrets exist for kernel id 123 and label HF_TOKEN')", "BackendError"),
        ("return ''", None),
        (None, "ModuleNotFoundError"),  # outside a Kaggle session
    ],
)
def test_an_unattached_secret_stops_the_kernel_in_one_line(hub_kernel, tmp_path, body, error):
    secrets = fake_secrets(tmp_path / "secrets", body) if body is not None else None
    p = run_with(hub_kernel, tmp_path, secrets)
    assert p.returncode == 1 and "+ " not in p.stdout  # before installing or training anything
    (line,) = p.stderr.strip().splitlines()
    if error:
        assert line.startswith(f"the Kaggle secret HF_TOKEN could not be read ({error}): ")
    else:
        assert line.startswith("the Kaggle secret HF_TOKEN is empty: ")
    assert "attach it in the notebook's web editor (Add-ons > Secrets" in line and "under the name HF_TOKEN" in line
    assert "the API cannot attach secrets" in line and "`hcd kernel run --attach`" in line


def test_probe_kernel_from_a_weights_dataset(kaggle_env, project, tmp_path):
    ready_datasets(kaggle_env.server, "someone/uni-weights")
    r = push(kaggle_env, project, "--probe", "uni", "--pretrained-from", "someone/uni-weights", "--tta", "2")
    assert r.exit_code == 0, r.stderr
    (body,) = [c.body for c in kaggle_env.server.calls("SaveKernel")]
    assert body["slug"] == "testuser/hcd-probe" and body.get("enableInternet", False) is False
    assert body["datasetDataSources"] == ["testuser/hcd-kit", "someone/uni-weights"]
    text = body["text"]
    assert 'MODE = "probe"' in text and 'PROBE_MODEL = "uni"' in text and 'TTA = "2"' in text
    assert 'EMBED_ARGS = ["--weights", "dataset:someone/uni-weights/model.safetensors"]' in text
    assert 'HUB_SECRET = ""' in text and "TRAIN_ARGS = []" in text

    inp = fake_input(tmp_path / "input")
    mount = inp / "datasets" / "someone" / "uni-weights"
    mount.mkdir(parents=True)
    (mount / "model.safetensors").write_bytes(b"w")
    p = run_kernel(project / "kernels" / "hcd-probe" / "hcd_probe.py", inp, tmp_path)
    assert p.returncode == 0, p.stderr
    data, run, temp = tmp_path / "kaggle-temp" / "data", tmp_path / "working" / "run", tmp_path / "kaggle-temp"
    assert steps(p.stdout)[1:] == [
        f"hcd_kit prepare --data-dir {data}",
        f"hcd_kit folds --data-dir {data} --n-folds 5",
        f"hcd_kit embed --data-dir {data} --model uni --tta 2 --out {temp / 'features'} "
        f"--weights {mount / 'model.safetensors'}",
        f"hcd_kit probe --features {temp / 'features'} --data-dir {data} --run-dir {run}",
    ]
    assert "hcd_kit train" not in p.stdout and "hcd_kit predict" not in p.stdout


def test_probe_kernel_through_the_hub(kaggle_env, project):
    r = push(kaggle_env, project, "--probe", "uni", "--hub-secret", "HF_TOKEN", "--name", "uni-probe")
    assert r.exit_code == 0, r.stderr
    (body,) = [c.body for c in kaggle_env.server.calls("SaveKernel")]
    assert body["slug"] == "testuser/uni-probe" and body["enableInternet"] is True
    assert "EMBED_ARGS = []" in body["text"] and 'HUB_SECRET = "HF_TOKEN"' in body["text"]


@pytest.mark.parametrize(
    "args, says",
    [
        (("--probe", "uni", "--hub-secret", "HF_TOKEN", "--fold", "0"), "drop --fold"),
        (("--probe", "uni", "--hub-secret", "HF_TOKEN", "--fold", "each"), "drop --fold"),
        (("--probe", "uni", "--hub-secret", "HF_TOKEN", "--train-args", "--epochs 1"), "--train-args does not apply"),
        (("--probe", "uni", "--hub-secret", "HF_TOKEN", "--weights-dataset", "hcd-weights"), "drop one of them"),
        (("--probe", "resnet18"), "cannot download the weights of 'resnet18'"),
    ],
)
def test_probe_refusals_come_before_any_push(kaggle_env, project, args, says):
    r = push(kaggle_env, project, *args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert says in line, line
    assert kaggle_env.server.calls("SaveKernel") == []


def test_an_old_customised_template_is_refused_for_the_new_options(kaggle_env, tmp_path):
    from hcd_kit.kaggle.kernel import read_templates

    custom = tmp_path / "mine" / "templates"
    custom.mkdir(parents=True)
    meta, script = read_templates(tmp_path / "nothing-here")
    (custom / "kernel-metadata.json").write_text(meta)
    (custom / "kernel.py").write_text(script.replace('HUB_SECRET = "__HCD_HUB_SECRET__"', 'HUB_SECRET = ""'))
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        tmp_path / "mine",
        "--dry-run",
        "--hub-secret",
        "HF_TOKEN",
        "--train-args",
        "--model uni",
    )
    assert r.exit_code == 2 and "has no __HCD_HUB_SECRET__ constant" in r.stderr
    r = kaggle_env.invoke("kernel", "push", "--root", tmp_path / "mine", "--dry-run", "--train-args", "--no-pretrained")
    assert r.exit_code == 0, r.stderr  # without the option, the old template still renders


def test_the_kernel_script_module_imports_without_running(hub_kernel):
    kernel = runpy.run_path(str(hub_kernel), run_name="kernel")
    assert isinstance(kernel["hub_token"], types.FunctionType) and kernel["HUB_SECRET"] == "HF_TOKEN"


def test_fold_each_with_route_b_renders_every_kernel(kaggle_env, project):
    r = push(
        kaggle_env,
        project,
        "--dry-run",
        "--fold",
        "each",
        "--n-folds",
        "2",
        "--folds-per-kernel",
        "1",
        "--pretrained-from",
        "me/uni-weights",
        "--train-args",
        "--model uni --epochs 1",
    )
    assert r.exit_code == 0, r.stderr
    for k in (0, 1):
        script = (project / "kernels" / f"hcd-train-fold-{k}" / f"hcd_train_fold_{k}.py").read_text()
        line = next(ln for ln in script.splitlines() if ln.startswith("TRAIN_ARGS = "))
        words = json.loads(line.split("=", 1)[1].split("#")[0])
        assert words[:4] == ["--model", "uni", "--epochs", "1"]
        assert words[words.index("--weights") + 1] == "dataset:me/uni-weights/model.safetensors"
    meta = json.loads((project / "kernels" / "hcd-predict-folds" / "kernel-metadata.json").read_text())
    assert meta["dataset_sources"] == ["testuser/hcd-kit"]  # it rebuilds fine-tuned folds: no pretrained weights
    assert meta["enable_internet"] is False
