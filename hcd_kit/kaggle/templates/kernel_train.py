# The kernel script's training steps: prepare, folds, train and cv (or, for a probe kernel, embed and probe).
# A part of the template kernel.py: hcd_kit.kaggle.kernel.read_templates puts it in (Kaggle runs one script).


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


def train(d: str, r: str, train_args: list[str]) -> None:
    """prepare -> folds -> train (FOLD) -> the cv report: the run folder RUN that predict reads."""
    hcd("prepare", "--data-dir", d)
    hcd("folds", "--data-dir", d, "--n-folds", N_FOLDS)
    hcd("train", *default_budget(train_args), "--data-dir", d, "--fold", FOLD, "--run-dir", r, *train_args)
    hcd("cv", "--run-dir", r)
