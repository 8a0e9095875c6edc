"""hcd on a Kaggle GPU: install hcd_kit offline, then train and/or predict, failing loudly on any error.

Rendered by `hcd kernel push` (which fills in the constants below) from hcd_kit/kaggle/templates/kernel.py and
its parts kernel_{install,data,train,predict}.py (or customised copies in ROOT/templates/); edit the templates,
not a rendered copy. Modes:
  train    prepare -> folds -> train (FOLD) -> cv report -> predict (TTA x8) -> /kaggle/working/submission.csv
  predict  rebuild the run folder from a weights dataset (`hcd dataset push --run-dir RUN`), or from the
           outputs of the fold kernels of `hcd kernel run --fold each` (FOLD_KERNELS, attached as kernel
           sources: each left run/foldK/ and run/config.toml) -> predict (the folds ensembled, TTA)
  probe    prepare -> folds -> embed (PROBE_MODEL, frozen, TTA views) -> probe (a linear probe) -> submission.csv
With HUB_SECRET (`--hub-secret NAME`), HF_TOKEN is set from that Kaggle secret first (never printed).
The session's real GPUs are logged first (and saved to gpus.json): Kaggle may not give the machine shape
that was asked for, so fewer CUDA devices than MACHINE_SHAPE has (one or none for a T4 x2), or a GPU the installed
torch was not built for (a P100 with torch cu128), stops the session at once in one line, unless ALLOW_OTHER_GPUS.
Only run/, submission.csv (+ its .json), gpus.json and the log land in /kaggle/working (the saved output); the
data folder with the packed store lives in /kaggle/temp, which is not saved. A finished fold keeps best.pt, not
last.pt (the optimiser state), and the kernel ends by printing the size of its output against Kaggle's limit.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODE = "__HCD_MODE__"  # "train", "predict" or "probe"
FOLD = "__HCD_FOLD__"  # a fold number, a list like "0,2", or "all"
TRAIN_ARGS = "__HCD_TRAIN_WORDS__"  # extra `hcd train` flags as words, e.g. ["--epochs", "8"]
PREDICT_ARGS = "__HCD_PREDICT_WORDS__"  # extra `hcd predict` flags as words
TTA = "__HCD_TTA__"
COMPETITION = "__HCD_COMPETITION__"
WHEEL_DATASET = "__HCD_WHEEL_DATASET__"  # owner/slug of the dataset holding the hcd_kit wheel
WEIGHTS_DATASET = "__HCD_WEIGHTS_DATASET__"  # owner/slug of a weights dataset (predict mode), or ""
MACHINE_SHAPE = "__HCD_MACHINE_SHAPE__"  # what the push asked for; compare with the GPUs logged below
MIN_GPUS = "__HCD_MIN_GPUS__"  # CUDA devices MACHINE_SHAPE has ("2": T4 x2); fewer stop the session at its start
ALLOW_OTHER_GPUS = "__HCD_ALLOW_OTHER_GPUS__"  # "yes" (--allow-other-gpus): go on whatever GPUs came
N_FOLDS = "__HCD_N_FOLDS__"  # `hcd folds --n-folds` (train mode)
FOLD_KERNELS = "__HCD_FOLD_KERNELS__"  # "owner/slug@version,..." of fold kernels to gather (predict), or ""
HUB_SECRET = "__HCD_HUB_SECRET__"  # name of the Kaggle secret holding a Hugging Face token, or ""
PROBE_MODEL = "__HCD_PROBE_MODEL__"  # probe mode: the model `hcd embed` uses
EMBED_ARGS = "__HCD_EMBED_WORDS__"  # probe mode: extra `hcd embed` flags as words (--weights dataset:...)
OUTPUT_LIMIT = "__HCD_OUTPUT_LIMIT__"  # bytes Kaggle saves from /kaggle/working (hcd_kit.kaggle.output)
# Kaggle stops a session at 12 h: unless TRAIN_ARGS sets --time-budget (or a --config), training + the TTA x8
# prediction are planned to end within 11 h of training's start, leaving time for install, prepare, cv and the output
DEFAULT_TIME_BUDGET = "11h"


def scratch() -> Path:
    """Kaggle's scratch folder: /kaggle/temp is writable but, unlike /kaggle/working, not saved as output."""
    if os.environ.get("HCD_KAGGLE_TEMP"):
        return Path(os.environ["HCD_KAGGLE_TEMP"])
    kaggle_temp = Path("/kaggle/temp")
    return kaggle_temp if kaggle_temp.is_dir() else Path(tempfile.gettempdir()) / "hcd"


# Overridable only to rehearse the kernel locally (tests/test_kernel.py does, with HCD_KERNEL_DRY_RUN=1).
INPUT = Path(os.environ.get("HCD_KAGGLE_INPUT", "/kaggle/input"))
WORK = Path(os.environ.get("HCD_KAGGLE_WORKING", "/kaggle/working"))  # saved: run/, submission.csv, gpus.json
DRY_RUN = os.environ.get("HCD_KERNEL_DRY_RUN") == "1"  # print the pip/hcd steps instead of running them
# /kaggle/input is read-only and hcd writes its ~8 GB packed store and folds beside the data: in /kaggle/working
# that store would become the kernel's output (and `hcd kernel output` would download it), so it goes to scratch
DATA = scratch() / "data"
RUN = WORK / "run"


def quoted(word: str) -> str:
    """``word`` as a POSIX shell reads it back: bare when it is safe so, else in single quotes."""
    if word and all(c.isascii() and (c.isalnum() or c in "_@%+=:,./-") for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def sh(*cmd: str) -> None:
    """Run a command, echoing it; any failure stops the kernel with its exit code (the session shows ERROR)."""
    print("+", " ".join(quoted(c) for c in cmd), flush=True)
    if DRY_RUN:
        return
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"FAILED (exit {rc}): {' '.join(cmd)}", flush=True)
        sys.exit(rc)


def hcd(*args: str) -> None:
    sh(sys.executable, "-m", "hcd_kit", *args)


# the steps (install, data, train, predict): the template's parts, put here when the kernel is rendered
# __HCD_PARTS__


def report_output() -> None:
    """Print what Kaggle will save (every file under WORK), loudly when it is over Kaggle's limit. Links (a predict
    kernel's run/ points into /kaggle/input) are counted apart: they are not copies."""
    files, links = [], []
    for folder, _, names in os.walk(WORK):
        for name in names:
            path = Path(folder) / name
            (links if path.is_symlink() else files).append(path)
    try:
        total, limit = sum(p.stat().st_size for p in files), int(OUTPUT_LIMIT)
    except OSError as exc:  # never hide how the kernel ended
        return print(f"output: its size could not be read ({exc})", flush=True)
    kept = sorted(str(p.relative_to(WORK)) for p in files if p.name == "last.pt")  # folds stopped mid-way
    note = f"; {len(links)} links into the inputs" if links else ""
    note += f"; unfinished folds keep {', '.join(kept)}" if kept else ""
    print(f"output: {len(files)} files, {total / 1e9:.2f} GB of {limit / 1e9:g} GB in {WORK}{note}", flush=True)
    if total > limit:
        print(f"WARNING: OUTPUT OVER KAGGLE'S {limit / 1e9:g} GB: Kaggle will not save it", file=sys.stderr, flush=True)


def main() -> None:
    try:
        steps()
    finally:
        report_output()


def steps() -> None:
    # paths into attached datasets are checked before anything runs: a wrong one fails now, not after training
    train_args, predict_args = input_paths(TRAIN_ARGS), input_paths(PREDICT_ARGS)
    embed_args = input_paths(EMBED_ARGS)
    WORK.mkdir(parents=True, exist_ok=True)
    log_gpus()  # first: the wrong machine stops the session now, before the install and hours of work
    hub_token()
    install()
    link_data()
    d, r = str(DATA), str(RUN)
    if MODE == "probe":
        return probe(d, r, embed_args)
    if MODE == "train":
        train(d, r, train_args)
    elif FOLD_KERNELS:
        link_fold_kernels()
    else:
        link_weights()
    predict(d, r, predict_args)


if __name__ == "__main__":
    main()
