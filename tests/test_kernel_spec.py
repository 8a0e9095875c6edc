"""The typed kernel spec: `hcd kernel push|run` read their options once (``KernelSpec``, ``RunOptions``),
--train-args is split once into words and read by the training layer's own parser (a bad one refused in one line
before anything is pushed), and the kernel script receives the words (it never splits text itself)."""

from __future__ import annotations

import inspect
import json
import runpy
import shlex
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hcd_kit"


@pytest.mark.parametrize(
    "train_args, says",
    [
        ("--epochz 3 --no-pretrained", "--train-args: '--epochz' is not a flag of `hcd train`"),
        ("--epochs three --no-pretrained", "--train-args: --epochs takes an integer, got 'three'"),
        ("--epochs 0 --no-pretrained", "--train-args: --epochs must be >= 1, got 0"),
        ("--no-pretrained --optimizer adam", "--train-args: --optimizer: 'adam' is not one of"),
        ("--no-pretrained --lr", "--train-args: --lr needs a value"),
        ("--no-pretrained resnet34", "--train-args: 'resnet34' is not a flag of `hcd train`"),
        ("--no-pretrained --weights 'a b", '--train-args "--no-pretrained --weights \'a b": No closing quotation'),
        ("--recipe t4x2-blend --no-pretrained", "--train-args: recipe 't4x2-blend' trains 2 runs, a kernel one"),
    ],
)
@pytest.mark.parametrize("command", ["push", "run"])
def test_a_bad_train_args_is_refused_in_one_line_before_any_push(kaggle_env, project, command, train_args, says):
    r = kaggle_env.invoke("kernel", command, "--root", project / "kernels", "--fold", "0", "--train-args", train_args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert says in line, line
    assert kaggle_env.server.calls("SaveKernel") == [] and not (project / "kernels").exists()


def test_train_args_are_split_once(kaggle_env, project, monkeypatch):
    """The text of --train-args is split once (``hcd_kit.argv.split``), then travels as words, to the script."""
    from hcd_kit import argv

    texts, split = [], argv.split

    def counted(text, flag):
        if isinstance(text, str):
            texts.append(text)
        return split(text, flag)

    monkeypatch.setattr(argv, "split", counted)
    typed = "--epochs 2 --weights '/kaggle/input/my weights/m.pth' --model=resnet34"
    r = kaggle_env.invoke(
        "kernel",
        "push",
        "--root",
        project / "kernels",
        "--fold",
        "each",
        "--n-folds",
        "2",
        "--folds-per-kernel",
        "1",
        "--dry-run",
        "--dataset",
        "someone/my-weights",
        "--train-args",
        typed,
    )
    assert r.exit_code == 0, r.stderr
    assert texts.count(typed) == 1, texts
    script = (project / "kernels" / "hcd-train-fold-1" / "hcd_train_fold_1.py").read_text()
    words = ["--epochs", "2", "--weights", "/kaggle/input/my weights/m.pth", "--model=resnet34"]
    # then the fan-out's own: the fold kernel's time budget
    assert f"TRAIN_ARGS = {json.dumps(words)[:-1]}, " in script and "shlex" not in script


def test_the_spec_carries_the_words_and_the_overrides(kaggle_env):
    from hcd_kit.kaggle import KernelSpec, kernel_spec
    from hcd_kit.training import parse_train_args

    train = parse_train_args("--epochs 3 --no-pretrained --model=resnet34 --recipe t4x2-fast")
    assert train.overrides == {"epochs": 3, "pretrained": False, "model": "resnet34"}
    assert train.options == {"recipe": "t4x2-fast"}
    spec = kernel_spec(folds=[0, 2], train_args=train.words, train_overrides=train.overrides, hub_secret=" HF_TOKEN ")
    assert (spec.name, spec.fold, spec.mode, spec.internet, spec.hub_secret) == (
        "hcd-train-fold-0-2",
        "0,2",
        "train",
        True,
        "HF_TOKEN",
    )
    assert spec.train_args == train.words and spec.train_overrides["epochs"] == 3
    assert KernelSpec(train_args="--epochs 3 --weights 'a b'").train_args == ["--epochs", "3", "--weights", "a b"]


def test_the_parser_knows_every_flag_of_hcd_train():
    """The training layer's parser and `hcd train`'s own options (generated from TrainConfig) cannot drift."""
    from typer.main import get_command

    from hcd_kit.cli import app
    from hcd_kit.training.train_args import train_flags

    train = get_command(app).commands["train"]
    flags = {o for p in train.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"}
    assert flags == set(train_flags())


def test_run_kernel_and_run_fanout_take_a_spec_and_few_parameters():
    from hcd_kit.kaggle import run_fanout, run_kernel

    for fn in (run_kernel, run_fanout):
        params = list(inspect.signature(fn).parameters)
        assert params[0] in ("spec", "base") and len(params) - 1 <= 5, params


def test_one_module_splits_words():
    """Free text is split (and words quoted) in hcd_kit/argv.py alone; the kernel script gets words."""
    users = sorted(
        str(p.relative_to(PKG))
        for p in PKG.rglob("*")
        if p.suffix in (".py", ".j2", ".json") and "shlex" in p.read_text(encoding="utf-8")
    )
    assert users == ["argv.py"]


@pytest.mark.parametrize(
    "word", ["plain", "", "with space", "it's", 'a"b', "/kaggle/input/x=1,y:2@3%+.-_", "é", "$HOME"]
)
def test_the_kernel_script_quotes_as_a_shell_would(kaggle_env, project, word):
    r = kaggle_env.invoke(
        "kernel", "push", "--root", project / "kernels", "--dry-run", "--train-args", "--no-pretrained"
    )
    assert r.exit_code == 0, r.stderr
    kernel = runpy.run_path(str(project / "kernels" / "hcd-train" / "hcd_train.py"), run_name="kernel")
    assert kernel["quoted"](word) == shlex.quote(word)


# ------------------------------------------------------------------------- the saved output within Kaggle's 20 GB


@pytest.mark.parametrize(
    "options",
    [
        ["--train-args", "--model vit_large_patch16_224 --no-pretrained"],  # a ViT-L fine-tune from timm's name
        ["--train-args", "--model uni", "--pretrained-from", "uni-weights"],  # UNI (a ViT-L), weights offline
    ],
    ids=["vit-l", "uni"],
)
def test_the_plan_of_five_vit_l_folds_says_the_output_fits(kaggle_env, project, options):
    """Five folds of a ViT-L fine-tune in one kernel: every fold's best.pt (1.2 GB: 303 M fp32 weights) and the
    last.pt of the fold in flight when the session might be stopped (weights + AdamW's two moments: 3.6 GB), sized
    on the meta device (nothing downloaded): under Kaggle's 20 GB."""
    r = kaggle_env.invoke("kernel", "push", "--root", project / "kernels", "--dry-run", "--fold", "all", *options)
    assert r.exit_code == 0, r.stderr
    line = "output: about 9.8 GB of Kaggle's 20 GB (5 x best.pt 1.2 GB, 1 last.pt in flight 3.6 GB)"
    assert line in r.stdout.splitlines()
    script = (project / "kernels" / "hcd-train" / "hcd_train.py").read_text()
    assert 'OUTPUT_LIMIT = "20000000000"' in script  # the kernel prints its output's size against the same limit


@pytest.mark.parametrize(
    "fold, says, with_lora",
    [  # UNI2-h (ViT-H, 681 M): best.pt 2.7 GB, last.pt 8.2 GB (with LoRA: the weights alone, 2.7 GB)
        (
            "all",
            "5 x best.pt 2.7 GB, 1 last.pt in flight 8.2 GB",
            "16.4 GB of Kaggle's 20 GB (5 x best.pt 2.7 GB, 1 last",
        ),
        # --fold each on T4 x2: two folds at once per kernel, one per GPU, each holding its last.pt
        (
            "each",
            "2 x best.pt 2.7 GB, 2 last.pt in flight 8.2 GB each",
            "11.0 GB of Kaggle's 20 GB (2 x best.pt 2.7 GB",
        ),
    ],
    ids=["one-kernel", "fold-each"],
)
def test_a_kernel_whose_output_cannot_fit_is_refused_in_one_line(kaggle_env, project, fold, says, with_lora):
    args = ["--root", project / "kernels", "--fold", fold, "--train-args", "--model uni2-h --no-pretrained"]
    r = kaggle_env.invoke("kernel", "push", "--dry-run", *args)
    assert r.exit_code == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: the kernel's saved output would be about 21.9 GB") and says in line, line
    assert "over the 18 GB hcd allows of Kaggle's 20 GB" in line
    assert "--folds-per-kernel 1" in line and "--lora 8" in line  # what fits
    assert not (project / "kernels").exists()
    r = kaggle_env.invoke("kernel", "run", *args)  # refused before any push
    assert r.exit_code == 2 and kaggle_env.server.calls("SaveKernel") == []
    r = kaggle_env.invoke("kernel", "push", "--dry-run", *args[:-1], "--model uni2-h --no-pretrained --lora 8")
    assert r.exit_code == 0, r.stderr  # LoRA: no optimiser state for the backbone's weights
    assert f"output: about {with_lora}" in r.stdout


def test_the_estimate_follows_the_folds_in_flight_and_an_unsized_model_is_unknown():
    from hcd_kit.kaggle import KernelSpec
    from hcd_kit.kaggle.fanout import fanout_specs
    from hcd_kit.kaggle.output import output_estimate, output_line
    from hcd_kit.layout import CheckpointSize

    fold = CheckpointSize(weights=10**9, optimizer=2 * 10**9, ema=10**9)  # last.pt 4 GB
    spec = KernelSpec(train_args="--no-pretrained", train_overrides={"pretrained": False}, fold_bytes=fold)
    assert (output_estimate(spec).folds, output_estimate(spec).in_flight) == (5, 1)
    parallel = KernelSpec(train_overrides={"strategy": "fold-parallel"}, fold_bytes=fold, train_args="--no-pretrained")
    assert output_estimate(parallel).in_flight == 2  # one fold per GPU of T4 x2
    folds, infer = fanout_specs(spec, 5, folds_per_kernel=2)
    assert [output_estimate(f).in_flight for f in folds] == [2, 2, 1]  # the fan-out trains its pairs fold-parallel
    assert output_estimate(infer) is None and output_line(infer) == ""  # predicting saves a submission
    unsized = KernelSpec(train_args="--no-pretrained")
    assert output_line(unsized).startswith("output: size unknown")
