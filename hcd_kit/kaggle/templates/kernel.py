"""hcd on a Kaggle GPU: install hcd_kit offline, then train and/or predict, failing loudly on any error.

Rendered by `hcd kernel push` (which fills in the constants below) from hcd_kit/kaggle/templates/kernel.py
(or a customised copy in ROOT/templates/); edit the template, not a rendered copy. Modes:
  train    prepare -> folds -> train (FOLD) -> cv report -> predict (TTA x8) -> /kaggle/working/submission.csv
  predict  rebuild the run folder from a weights dataset (`hcd dataset push --run-dir RUN`), or from the
           outputs of the fold kernels of `hcd kernel run --fold each` (FOLD_KERNELS, attached as kernel
           sources: each left run/foldK/ and run/config.toml) -> predict (the folds ensembled, TTA)
  probe    prepare -> folds -> embed (PROBE_MODEL, frozen, TTA views) -> probe (a linear probe) -> submission.csv
With HUB_SECRET (`--hub-secret NAME`), HF_TOKEN is set from that Kaggle secret first (never printed).
The session's real GPUs are logged first (and saved to gpus.json): Kaggle may not give the machine shape
that was asked for. Only run/, submission.csv (+ its .json), gpus.json and the log land in /kaggle/working
(the saved output); the data folder with the packed store lives in /kaggle/temp, which is not saved.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODE = "__HCD_MODE__"                      # "train", "predict" or "probe"
FOLD = "__HCD_FOLD__"                      # a fold number, a list like "0,2", or "all"
TRAIN_ARGS = "__HCD_TRAIN_ARGS__"          # extra `hcd train` flags, e.g. "--epochs 8 --model resnet34"
PREDICT_ARGS = "__HCD_PREDICT_ARGS__"      # extra `hcd predict` flags
TTA = "__HCD_TTA__"
COMPETITION = "__HCD_COMPETITION__"
WHEEL_DATASET = "__HCD_WHEEL_DATASET__"    # owner/slug of the dataset holding the hcd_kit wheel
WEIGHTS_DATASET = "__HCD_WEIGHTS_DATASET__"  # owner/slug of a weights dataset (predict mode), or ""
MACHINE_SHAPE = "__HCD_MACHINE_SHAPE__"    # what the push asked for; compare with the GPUs logged below
N_FOLDS = "__HCD_N_FOLDS__"                # `hcd folds --n-folds` (train mode)
FOLD_KERNELS = "__HCD_FOLD_KERNELS__"      # "owner/slug@version,..." of fold kernels to gather (predict), or ""
HUB_SECRET = "__HCD_HUB_SECRET__"          # name of the Kaggle secret holding a Hugging Face token, or ""
PROBE_MODEL = "__HCD_PROBE_MODEL__"        # probe mode: the model `hcd embed` uses
EMBED_ARGS = "__HCD_EMBED_ARGS__"          # probe mode: extra `hcd embed` flags (--weights dataset:...)
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


def sh(*cmd: str) -> None:
    """Run a command, echoing it; any failure stops the kernel with its exit code (the session shows ERROR)."""
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    if DRY_RUN:
        return
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        print(f"FAILED (exit {rc}): {' '.join(cmd)}", flush=True)
        sys.exit(rc)


def hcd(*args: str) -> None:
    sh(sys.executable, "-m", "hcd_kit", *args)


def hub_token() -> None:
    """HF_TOKEN from the Kaggle secret HUB_SECRET, for every hcd step after it; its value is never printed."""
    if not HUB_SECRET:
        return
    attach = (f"attach it in the notebook's Add-ons > Secrets under the name {HUB_SECRET} (a Hugging Face read "
              "token with access to the model), then run the kernel again")
    try:
        from kaggle_secrets import UserSecretsClient  # only inside a Kaggle session

        token = UserSecretsClient().get_secret(HUB_SECRET)
    except Exception as exc:  # noqa: BLE001 - the client's own error class when the secret is not attached
        sys.exit(f"the Kaggle secret {HUB_SECRET} could not be read ({type(exc).__name__}): {attach}")
    if not str(token or "").strip():
        sys.exit(f"the Kaggle secret {HUB_SECRET} is empty: {attach}")
    os.environ["HF_TOKEN"] = str(token).strip()
    os.environ.pop("HF_HUB_OFFLINE", None)  # the hub is the point
    print(f"HF_TOKEN set from the Kaggle secret {HUB_SECRET} (not shown)", flush=True)


def log_gpus() -> None:
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        smi = f"nvidia-smi unavailable: {exc}"
    import torch

    n = torch.cuda.device_count()
    info = {
        "machine_shape_asked": MACHINE_SHAPE,
        "nvidia_smi": smi.strip().splitlines(),
        "cuda_device_count": n,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(n)],
        "torch": torch.__version__,
    }
    print("GPUS " + json.dumps(info), flush=True)
    (WORK / "gpus.json").write_text(json.dumps(info, indent=2))


def candidates(ref: str) -> list[Path]:
    """Where Kaggle may mount dataset/competition ``ref`` (owner/slug or slug), most likely first.

    Older sessions: /kaggle/input/<slug>; kernels pushed from the client: /kaggle/input/datasets/<owner>/<slug>
    and /kaggle/input/competitions/<slug>; then any folder named <slug> a few levels down.
    """
    slug = ref.split("/")[-1]
    owner = ref.split("/")[0] if "/" in ref else "*"
    known = [INPUT / slug, *sorted(INPUT.glob(f"datasets/{owner}/{slug}")), INPUT / "competitions" / slug]
    known += sorted(INPUT.glob(f"*/{slug}")) + sorted(INPUT.glob(f"*/*/{slug}"))
    return [p for p in dict.fromkeys(known) if p.is_dir()]


def mounted(ref: str, marker: str) -> Path:
    """Where Kaggle mounted dataset/competition ``ref``: the known places first, then a shallow search."""
    for base in candidates(ref):
        if list(base.glob(marker)):
            return base
    for depth in ("*", "*/*", "*/*/*"):  # shallow: a competition folder holds 220k files one level down
        hits = sorted(INPUT.glob(f"{depth}/{marker}"))
        if hits:
            return hits[0].parent
    sys.exit(f"{ref} is not attached (no {marker} under {INPUT}); add it to the kernel's sources")


def kernel_mount(ref: str) -> Path:
    """Where Kaggle mounted the output of kernel ``ref`` (owner/slug), attached as a kernel source.

    Older sessions mount it at /kaggle/input/<slug>. The newer layout is INFERRED, not documented: by analogy
    with /kaggle/input/datasets/<owner>/<slug> and /kaggle/input/competitions/<slug>, probably
    /kaggle/input/notebooks/<owner>/<slug>. Both are searched, then any <slug> folder a few levels down.
    """
    owner, slug = ref.split("/", 1)
    known = [INPUT / slug, INPUT / "notebooks" / owner / slug, *candidates(ref)]
    for base in dict.fromkeys(known):
        if (base / "run" / "config.toml").is_file():
            return base
    sys.exit(f"the output of kernel {ref} is not mounted (no run/config.toml in {INPUT}/{slug} or "
             f"{INPUT}/notebooks/{owner}/{slug}); attach it as a kernel source once it has COMPLETEd")


def link_fold_kernels() -> None:
    """Rebuild RUN/ from the fold kernels' outputs: config.toml from the first, every foldK/ from its kernel."""
    RUN.mkdir(parents=True, exist_ok=True)
    for n, entry in enumerate(FOLD_KERNELS.split(",")):
        ref, _, version = entry.partition("@")  # Kaggle attaches the latest version; hcd pushed `version`
        src = kernel_mount(ref) / "run"
        if n == 0:
            (RUN / "config.toml").write_bytes((src / "config.toml").read_bytes())
        folds = sorted(p for p in src.glob("fold*") if (p / "best.pt").is_file())
        if not folds:
            sys.exit(f"kernel {ref} left no run/fold*/best.pt in {src}: its training did not finish")
        for fold in folds:
            (RUN / fold.name).mkdir(exist_ok=True)
            for f in sorted(fold.iterdir()):
                if f.is_file() and not (RUN / fold.name / f.name).exists():
                    (RUN / fold.name / f.name).symlink_to(f)
            print(f"{fold.name} from kernel {ref} (version {version or '?'} when pushed) at {fold}", flush=True)


def model_candidates(ref: str) -> list[Path]:
    """Where Kaggle may mount model ``ref`` (owner/model/framework/variation/version), most likely first.

    Older sessions: /kaggle/input/<model>/<framework>/<variation>/<version> (the framework lowercased, as in
    /kaggle/input/gemma/pytorch/2b/1). The newer layout is INFERRED, not documented: by analogy with
    /kaggle/input/datasets/<owner>/<slug>, probably /kaggle/input/models/<owner>/<model>/<framework>/...
    Both are searched (framework as typed and lowercased), then the same folders a level or two down.
    """
    owner, model, framework, variation, version = ref.split("/")
    tails = dict.fromkeys(f"{model}/{f}/{variation}/{version}" for f in (framework, framework.lower()))
    known = [p for t in tails for p in (INPUT / t, INPUT / "models" / owner / t)]
    known += [p for t in tails for p in sorted(INPUT.glob(f"*/{t}")) + sorted(INPUT.glob(f"*/*/{t}"))]
    return [p for p in dict.fromkeys(known) if p.is_dir()]


def locate(typed: str, ref: str, rest: list[str], unmounted: str, kind: str = "dataset") -> str:
    """File ``rest`` of dataset (or model) ``ref`` wherever it is mounted; else stop, saying what is mounted where."""
    bases = model_candidates(ref) if kind == "model" else candidates(ref)
    for base in bases:
        if base.joinpath(*rest).exists():
            return str(base.joinpath(*rest))
    if not bases:
        sys.exit(f"{typed}: {kind} {ref} {unmounted}")
    held = ", ".join(sorted(p.name for p in bases[0].iterdir())[:10]) or "nothing"
    sys.exit(f"{typed}: no {'/'.join(rest)} in {kind} {ref}, which is mounted at {bases[0]} (it holds: {held})")


def input_path(typed: str) -> str:
    """A /kaggle/input/... path typed in --train-args/--predict-args, where its dataset is really mounted.

    /kaggle/input/SLUG/FILE, /kaggle/input/datasets/OWNER/SLUG/FILE and /kaggle/input/competitions/SLUG/FILE
    all work whichever layout the session has; a file found nowhere stops the kernel now, in one line, not
    after hours of training. A reference dataset:OWNER/SLUG/FILE (`hcd kernel push` attached OWNER/SLUG) is
    found the same way, and so is model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE (a Kaggle Model). Anything
    else is returned as typed.
    """
    if typed.startswith("dataset:"):
        return dataset_path(typed)
    if typed.startswith("model:"):
        return model_path(typed)
    for prefix in ("/kaggle/input", str(INPUT)):
        if typed == prefix or typed.startswith(prefix.rstrip("/") + "/"):
            rel = Path(typed[len(prefix):].lstrip("/")).parts
            break
    else:
        return typed
    if rel and (INPUT.joinpath(*rel)).exists():
        return str(INPUT.joinpath(*rel))
    if len(rel) >= 3 and rel[0] == "datasets":
        ref, rest = f"{rel[1]}/{rel[2]}", rel[3:]
    elif len(rel) >= 2 and rel[0] == "competitions":
        ref, rest = rel[1], rel[2:]
    elif rel:
        ref, rest = rel[0], rel[1:]
    else:
        sys.exit(f"{typed}: names /kaggle/input itself, not a file in an attached dataset")
    return locate(typed, ref, rest, f"is not attached to this kernel (no folder {ref.split('/')[-1]} under {INPUT}); "
                                     f"attach it with hcd kernel push --dataset OWNER/{ref.split('/')[-1]}")


def dataset_path(typed: str) -> str:
    """dataset:OWNER/SLUG/FILE -> the file in dataset OWNER/SLUG, wherever this session mounted it."""
    parts = typed[len("dataset:"):].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        sys.exit(f"{typed}: use dataset:OWNER/SLUG/FILE")
    ref, rest = f"{parts[0]}/{parts[1]}", parts[2:]
    return locate(typed, ref, rest, f"is not mounted (no folder {parts[1]} under {INPUT}); push the kernel again "
                                     "with hcd kernel push, which attaches every dataset: reference")


def model_path(typed: str) -> str:
    """model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE -> the file in that Kaggle Model, wherever it is mounted."""
    parts = typed[len("model:"):].strip("/").split("/")
    if len(parts) < 6 or not all(parts):
        sys.exit(f"{typed}: use model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE")
    owner, model, framework, variation, version = parts[:5]
    tail = f"{model}/{framework.lower()}/{variation}/{version}"
    return locate(typed, "/".join(parts[:5]), parts[5:], f"is not mounted (no folder {INPUT}/{tail} or "
                  f"{INPUT}/models/{owner}/{tail}); push the kernel again with hcd kernel push, which attaches "
                  "every model: reference", kind="model")


def input_paths(args: str) -> list[str]:
    """``shlex.split(args)`` with every /kaggle/input path or dataset:/model: reference (a word, or the value of
    --flag=PATH) relocated."""
    out = []
    for word in shlex.split(args):
        flag, eq, value = word.partition("=")
        new = f"{flag}={input_path(value)}" if eq and flag.startswith("--") else input_path(word)
        if new != word:
            print(f"input path {word} -> {new}", flush=True)
        out.append(new)
    return out


def install() -> None:
    wheels = mounted(WHEEL_DATASET, "hcd_kit-*.whl")
    wheel = sorted(wheels.glob("hcd_kit-*.whl"))[-1]
    # No internet: resolve against what the Kaggle image already has (torch, timm, pandas, ...).
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), str(wheel)]
    print("+", " ".join(cmd), flush=True)
    if DRY_RUN:
        return
    if subprocess.run(cmd).returncode != 0:
        print("dependency resolution failed offline; installing hcd_kit with --no-deps", flush=True)
        sh(sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(wheel))


def link_data() -> None:
    src = mounted(COMPETITION, "train_labels.csv")
    DATA.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test", "train_labels.csv", "sample_submission.csv"):
        dst = DATA / name
        if (src / name).exists() and not dst.exists():
            dst.symlink_to(src / name)


def link_weights() -> None:
    """A weights dataset is flat (fold0_best.pt, fold0_oof.csv, config.toml): rebuild RUN/fold{k}/."""
    src = mounted(WEIGHTS_DATASET, "config.toml")
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "config.toml").write_bytes((src / "config.toml").read_bytes())
    for f in sorted(src.glob("fold*_*")):
        fold, rest = f.name.split("_", 1)
        (RUN / fold).mkdir(exist_ok=True)
        if not (RUN / fold / rest).exists():
            (RUN / fold / rest).symlink_to(f)


def default_budget(train_args: list[str]) -> list[str]:
    """``--time-budget 11h`` unless the user's `hcd train` flags set one (or a --config, which may)."""
    given = any(a.split("=")[0] in ("--time-budget", "--config") for a in train_args)
    return [] if given else ["--time-budget", DEFAULT_TIME_BUDGET]


def probe(d: str, r: str, embed_args: list[str]) -> None:
    """Frozen features of every patch (`hcd embed`), a linear probe on them (`hcd probe`): RUN/submission.csv."""
    hcd("prepare", "--data-dir", d)
    hcd("folds", "--data-dir", d, "--n-folds", N_FOLDS)
    features = str(scratch() / "features")  # one vector per patch and view: GBs, so scratch, not the output
    hcd("embed", "--data-dir", d, "--model", PROBE_MODEL, "--tta", TTA, "--out", features, *embed_args)
    hcd("probe", "--features", features, "--data-dir", d, "--run-dir", r)
    for name in [n for n in ("submission.csv", "submission.csv.json") if (RUN / n).is_file()]:
        shutil.copyfile(RUN / name, WORK / name)  # the saved output's submission, as in the other modes
    print(f"done: {WORK / 'submission.csv'}", flush=True)


def main() -> None:
    # paths into attached datasets are checked before anything runs: a wrong one fails now, not after training
    train_args, predict_args = input_paths(TRAIN_ARGS), input_paths(PREDICT_ARGS)
    embed_args = input_paths(EMBED_ARGS)
    hub_token()
    WORK.mkdir(parents=True, exist_ok=True)
    log_gpus()
    install()
    link_data()
    d, r = str(DATA), str(RUN)
    if MODE == "probe":
        return probe(d, r, embed_args)
    if MODE == "train":
        hcd("prepare", "--data-dir", d)
        hcd("folds", "--data-dir", d, "--n-folds", N_FOLDS)
        hcd("train", *default_budget(train_args), "--data-dir", d, "--fold", FOLD, "--run-dir", r, *train_args)
        hcd("cv", "--run-dir", r)
    elif FOLD_KERNELS:
        link_fold_kernels()
    else:
        link_weights()
    out = str(WORK / "submission.csv")
    hcd("predict", "--data-dir", d, "--run-dir", r, "--tta", TTA, "--out", out, *predict_args)
    print(f"done: {out}", flush=True)


if __name__ == "__main__":
    main()
