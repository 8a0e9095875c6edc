"""The GPU check: every CUDA path of hcd, run once on a real GPU, with its figures.

No CI machine has a GPU, so this script is what a session with one runs (in one call, a few minutes). It
builds a scratch competition folder from the real patches shipped in the package (the 240 labelled ones,
repeated under new ids to get batches worth timing; the 40 test ones as they are), then runs, each step as
its own process so one failure does not hide the others:

1. ``hcd prepare`` + ``hcd folds`` on that folder;
2. ``benchmarks/train.py``: hcd's training step against the fastest bare timm step (fp32 / fp16, NCHW /
   channels-last: ``hcd_over_bare``, target >= 0.95) and fed from device memory vs from the packed-store loader
   (``overhead_pct``, target <= 5 %), under the precision hcd picks (fp16 with GradScaler on CUDA);
3. ``hcd train`` on all five folds (one epoch) (precision auto: fp16 + GradScaler on CUDA, channels-last, cuDNN benchmark, pinned-memory loader);
4. ``hcd train --resume`` of that run (a no-op that must say the folds are finished);
5. ``hcd train --precision bf16`` (one fold, one epoch) where the GPU supports bfloat16;
6. ``hcd train --strategy fold-parallel`` (one worker per GPU, spawned processes holding CUDA);
7. ``torchrun --nproc_per_node N -m hcd_kit train --strategy ddp`` (nccl; N = GPUs visible);
8. ``hcd predict --tta 8`` with the fold ensemble, and ``hcd cv``;
9. ``benchmarks/predict.py``: what TTA x2/x4/x8 costs against one view on this GPU;
10. ``hcd embed`` with registry foundation models (random weights, full size: kaiko-vitb16 and uni's ViT-L)
    and a LoRA fine-tuning fold of kaiko-vits16, under fp16;
11. per recipe backbone at its input size (run right after step 2, so a run cut short still has them):
    training images/s (fp16 + channels-last, loader-fed vs device-resident, and hcd / bare) and TTA x8
    prediction images/s, the figures ``hcd recipes --figures REPORT`` turns into cost estimates;
12. ``pytest -m gpu``: the tests of CUDA-only paths (skipped on every CPU-only machine).

With ``--out`` the JSON report is rewritten after every step, so a run stopped by its caller keeps its figures.

Every step's exit code, wall time, key output lines and figures go into one JSON report.

    python benchmarks/gpu.py --json --out gpu-report.json          # on the GPU machine
    python benchmarks/gpu.py --device cpu --quick                  # a dry run of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a plain checkout too, as on a lent GPU machine without `pip install`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu for a dry run")
    p.add_argument("--repeat", type=int, default=20, help="copies of each shipped training patch (240 x N images)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per fold in the training steps")
    p.add_argument("--models", default="resnet18,efficientnet_b0", help="models for the throughput step")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--recipes",
        default="all",
        help="recipes whose backbones get a training and TTA x8 figure "
        "at their input size (comma-separated, 'all', or 'none')",
    )
    p.add_argument("--work", type=Path, default=None, help="scratch folder [default: a temp folder]")
    p.add_argument("--step-timeout", type=float, default=300, help="seconds any one step may take")
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script, not the GPU")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report to this file")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.epochs, args.models, args.batch_size = 2, 1, "resnet10t", 64
    return args


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    try:
        import timm

        env["timm"] = timm.__version__
    except ImportError as exc:  # the report says so instead of failing
        env["timm"] = f"missing: {exc}"
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env


def scratch_data(root: Path, repeat: int) -> Path:
    """A competition-layout folder of real patches: the shipped sample, its training patches ``repeat`` times."""
    import pandas as pd

    from hcd_kit.data import materialise

    sample = materialise(root / "sample").root
    data = root / "data"
    (data / "train").mkdir(parents=True, exist_ok=True)
    shutil.copytree(sample / "test", data / "test", dirs_exist_ok=True)
    shutil.copyfile(sample / "sample_submission.csv", data / "sample_submission.csv")
    labels = pd.read_csv(sample / "train_labels.csv", dtype={"id": str})
    rows = []
    for r in range(repeat):
        for pid, label in zip(labels["id"], labels["label"]):
            new = f"{pid[:-4]}{r:04d}"  # same length as a real id, unique per copy
            shutil.copyfile(sample / "train" / f"{pid}.tif", data / "train" / f"{new}.tif")
            rows.append((new, label))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(data / "train_labels.csv", index=False)
    return data


def recipe_steps(args: argparse.Namespace, data: Path, py: str) -> list[tuple[str, list[str]]]:
    """Per recipe backbone at its input size: training images/s (device-resident vs loader-fed, fp16 +
    channels-last on CUDA) and TTA x8 prediction images/s: the figures `hcd recipes` turns into costs."""
    from hcd_kit.training.recipes import list_recipes

    if args.recipes == "none":
        return []
    wanted = None if args.recipes == "all" else set(args.recipes.split(","))
    seen, steps = set(), []
    for r in list_recipes():
        if r.is_blend or (wanted is not None and r.name not in wanted):
            continue
        cfg = r.config()
        key = (cfg.model, cfg.img_size, cfg.batch_size)
        if key in seen:
            continue
        seen.add(key)
        model, size = ("resnet10t", 96) if args.quick else (cfg.model, cfg.img_size)
        steps.append(
            (
                f"recipe-train:{r.name}",
                [
                    py,
                    "benchmarks/train.py",
                    "--data-dir",
                    str(data),
                    "--models",
                    model,
                    "--img-size",
                    str(size),
                    "--batch-size",
                    str(cfg.batch_size),
                    "--device",
                    args.device,
                    "--steps",
                    "2" if args.quick else "12",
                    "--repeats",
                    "1",
                    "--json",
                ],
            )
        )
        steps.append(
            (
                f"recipe-tta:{r.name}",
                [
                    py,
                    "benchmarks/predict.py",
                    "--model",
                    model,
                    "--img-size",
                    str(size),
                    "--device",
                    args.device,
                    "--n",
                    "128" if args.quick else "1024",
                    "--tta-sizes",
                    "1,8",
                    "--json",
                ],
            )
        )
    return steps


def run_step(name: str, cmd: list[str], timeout: float, env: dict) -> dict:
    """Run one step as a process; keep its exit code, time, the last lines it printed and, when its standard
    output is JSON (a benchmark run with --json), the figures."""
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        code, stdout, out = p.returncode, p.stdout or "", (p.stdout or "") + (p.stderr or "")
    except subprocess.TimeoutExpired as exc:
        code, stdout, out = 124, "", f"timed out after {timeout:.0f} s\n{exc.stdout or ''}"
    lines = [ln.rstrip() for ln in out.splitlines() if ln.strip() and "━" not in ln]  # no progress bars
    res = {
        "step": name,
        "cmd": " ".join(cmd[1:] if cmd[0] == sys.executable else cmd),
        "exit": code,
        "seconds": round(time.perf_counter() - start, 1),
        "tail": lines[-12:],
    }
    try:
        res["figures"] = json.loads(stdout)
    except ValueError:
        pass
    for ln in lines:
        m = re.search(r"CV AUC[^:]*:\s*([0-9.]+)", ln)
        if m:
            res["cv_auc"] = float(m.group(1))
    return res


def write_report(path: Path, report: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="160", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    py, hcd = sys.executable, [sys.executable, "-m", "hcd_kit"]
    work = args.work or Path(tempfile.mkdtemp(prefix="hcd-gpu-"))
    report: dict = {"environment": environment(), "steps": []}
    import torch

    n_gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    data = scratch_data(work, args.repeat)
    run = work / "run"
    ep, dev = str(args.epochs), args.device
    train = [*hcd, "train", "--data-dir", str(data), "--model", "resnet18", "--no-pretrained", "--device", dev]
    steps = [
        ("prepare", [*hcd, "prepare", "--data-dir", str(data)]),
        ("folds", [*hcd, "folds", "--data-dir", str(data), "--n-folds", "5"]),
        (
            "throughput",
            [
                py,
                "benchmarks/train.py",
                "--data-dir",
                str(data),
                "--models",
                args.models,
                "--batch-size",
                str(args.batch_size),
                "--device",
                dev,
                "--json",
            ],
        ),
        (
            "train",
            [*train, "--fold", "all", "--epochs", ep, "--batch-size", str(args.batch_size), "--run-dir", str(run)],
        ),
        ("resume-finished", [*train, "--run-dir", str(run), "--resume"]),
        ("cv", [*hcd, "cv", "--run-dir", str(run)]),
        (
            "predict-tta8",
            [
                *hcd,
                "predict",
                "--data-dir",
                str(data),
                "--run-dir",
                str(run),
                "--tta",
                "8",
                "--out",
                str(work / "submission.csv"),
            ],
        ),
    ]
    steps[3:3] = recipe_steps(args, data, py)  # right after the throughput step: the figures `hcd recipes` uses
    if dev == "cpu" or report["environment"].get("bf16_supported"):
        steps.append(
            (
                "train-bf16",
                [*train, "--fold", "0", "--epochs", "1", "--precision", "bf16", "--run-dir", str(work / "run-bf16")],
            )
        )
    steps.append(
        (
            "fold-parallel",
            [
                *train,
                "--fold",
                "0,1",
                "--epochs",
                "1",
                "--strategy",
                "fold-parallel",
                "--run-dir",
                str(work / "run-fp"),
            ],
        )
    )
    if n_gpus >= 1:
        torchrun = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}"]
        steps.append(
            (
                "ddp",
                [
                    *torchrun,
                    "-m",
                    "hcd_kit",
                    "train",
                    "--data-dir",
                    str(data),
                    "--model",
                    "resnet18",
                    "--no-pretrained",
                    "--fold",
                    "0",
                    "--epochs",
                    "1",
                    "--strategy",
                    "ddp",
                    "--run-dir",
                    str(work / "run-ddp"),
                ],
            )
        )
    # foundation models (issue 11), random weights at full size: the same compute as the real ones
    for fm in ["kaiko-vits16"] if args.quick else ["kaiko-vitb16", "uni"]:
        steps.append(
            (
                f"embed:{fm}",
                [
                    *hcd,
                    "embed",
                    "--data-dir",
                    str(data),
                    "--model",
                    fm,
                    "--no-pretrained",
                    "--tta",
                    "1",
                    "--split",
                    "train",
                    "--device",
                    dev,
                    "--out",
                    str(work / f"features-{fm}"),
                ],
            )
        )
    steps.append(
        (
            "finetune-lora",
            [
                *hcd,
                "train",
                "--data-dir",
                str(data),
                "--model",
                "kaiko-vits16",
                "--no-pretrained",
                "--lora",
                "8",
                "--fold",
                "0",
                "--epochs",
                "1",
                "--device",
                dev,
                "--run-dir",
                str(work / "run-lora"),
            ],
        )
    )
    tta = ["--n", "256", "--model", "resnet10t"] if args.quick else []
    steps.append(("tta-cost", [py, "benchmarks/predict.py", "--device", dev, *tta, "--json"]))
    steps.append(("gpu-tests", [py, "-m", "pytest", "-m", "gpu", "-n", "0", "-q", "-p", "no:cacheprovider", "tests"]))
    for name, cmd in steps:
        res = run_step(name, cmd, args.step_timeout, env)
        report["steps"].append(res)
        ratios = ", ".join(
            f"{m} hcd/bare {r['hcd_over_bare']:.3f} loader {r['overhead_pct']:.1f} %"
            for m, r in ((res.get("figures") or {}).get("models") or {}).items()
            if "hcd_over_bare" in r
        )
        line = f"{name:<16} exit {res['exit']:>3}  {res['seconds']:>7.1f} s  {ratios or (res['tail'][-1] if res['tail'] else '')}"
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
        report["passed"] = all(s["exit"] == 0 for s in report["steps"])
        if args.out:  # after every step: a run cut short by its caller still leaves the figures it has
            write_report(args.out, report)
    text = json.dumps(report, indent=1)
    if args.json:
        print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
