# The kernel script's prediction steps: the run folder from a weights dataset or the fold kernels, predict.
# A part of the template kernel.py: hcd_kit.kaggle.kernel.read_templates puts it in (Kaggle runs one script).


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
    sys.exit(
        f"the output of kernel {ref} is not mounted (no run/config.toml in {INPUT}/{slug} or "
        f"{INPUT}/notebooks/{owner}/{slug}); attach it as a kernel source once it has COMPLETEd"
    )


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
            for f in sorted(fold.iterdir()):  # not a last.pt (a fold stopped mid-way): predict needs best.pt
                if f.is_file() and f.name != "last.pt" and not (RUN / fold.name / f.name).exists():
                    (RUN / fold.name / f.name).symlink_to(f)
            print(f"{fold.name} from kernel {ref} (version {version or '?'} when pushed) at {fold}", flush=True)


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


def predict(d: str, r: str, predict_args: list[str]) -> None:
    """The folds of RUN ensembled with TTA: /kaggle/working/submission.csv, the kernel's result."""
    out = str(WORK / "submission.csv")
    hcd("predict", "--data-dir", d, "--run-dir", r, "--tta", TTA, "--out", out, *predict_args)
    print(f"done: {out}", flush=True)
