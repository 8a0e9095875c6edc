# The kernel script's inputs: where Kaggle mounted each dataset, competition and model (and so each
# /kaggle/input path or dataset:/model: reference in the args), and the competition's data linked.
# A part of the template kernel.py: hcd_kit.kaggle.kernel.read_templates puts it in (Kaggle runs one script).


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
            rel = Path(typed[len(prefix) :].lstrip("/")).parts
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
    return locate(
        typed,
        ref,
        rest,
        f"is not attached to this kernel (no folder {ref.split('/')[-1]} under {INPUT}); "
        f"attach it with hcd kernel push --dataset OWNER/{ref.split('/')[-1]}",
    )


def dataset_path(typed: str) -> str:
    """dataset:OWNER/SLUG/FILE -> the file in dataset OWNER/SLUG, wherever this session mounted it."""
    parts = typed[len("dataset:") :].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        sys.exit(f"{typed}: use dataset:OWNER/SLUG/FILE")
    ref, rest = f"{parts[0]}/{parts[1]}", parts[2:]
    return locate(
        typed,
        ref,
        rest,
        f"is not mounted (no folder {parts[1]} under {INPUT}); push the kernel again "
        "with hcd kernel push, which attaches every dataset: reference",
    )


def model_path(typed: str) -> str:
    """model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE -> the file in that Kaggle Model, wherever it is mounted."""
    parts = typed[len("model:") :].strip("/").split("/")
    if len(parts) < 6 or not all(parts):
        sys.exit(f"{typed}: use model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE")
    owner, model, framework, variation, version = parts[:5]
    tail = f"{model}/{framework.lower()}/{variation}/{version}"
    return locate(
        typed,
        "/".join(parts[:5]),
        parts[5:],
        f"is not mounted (no folder {INPUT}/{tail} or "
        f"{INPUT}/models/{owner}/{tail}); push the kernel again with hcd kernel push, which attaches "
        "every model: reference",
        kind="model",
    )


def input_paths(args: list[str]) -> list[str]:
    """The words ``args`` with every /kaggle/input path or dataset:/model: reference (a word, or the value of
    --flag=PATH) relocated."""
    out = []
    for word in args:
        flag, eq, value = word.partition("=")
        new = f"{flag}={input_path(value)}" if eq and flag.startswith("--") else input_path(word)
        if new != word:
            print(f"input path {word} -> {new}", flush=True)
        out.append(new)
    return out


def link_data() -> None:
    src = mounted(COMPETITION, "train_labels.csv")
    DATA.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test", "train_labels.csv", "sample_submission.csv"):
        dst = DATA / name
        if (src / name).exists() and not dst.exists():
            dst.symlink_to(src / name)
