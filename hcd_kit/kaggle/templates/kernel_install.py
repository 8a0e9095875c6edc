# The kernel script's install steps: the hub token, the GPUs logged and checked, hcd_kit installed offline.
# A part of the template kernel.py: hcd_kit.kaggle.kernel.read_templates puts it in (Kaggle runs one script).


def hub_token() -> None:
    """HF_TOKEN from the Kaggle secret HUB_SECRET, for every hcd step after it; its value is never printed."""
    if not HUB_SECRET:
        return
    attach = (
        f"attach it in the notebook's web editor (Add-ons > Secrets, a Hugging Face read token with access to the "
        f"model, under the name {HUB_SECRET}; the API cannot attach secrets), Save Version there, then run "
        "`hcd kernel run --attach` to wait for that version"
    )
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


def cuda_devices(torch) -> tuple[list[tuple[str, tuple[int, int]]], list[str]]:
    """The CUDA devices (name, compute capability) and the archs the installed torch was built for.

    Only to rehearse the check off Kaggle: HCD_KERNEL_FAKE_GPUS ("NAME@MAJOR.MINOR,...", "" for none) and
    HCD_KERNEL_FAKE_ARCHS ("sm_75,sm_80,...") replace what torch reports.
    """
    archs = os.environ.get("HCD_KERNEL_FAKE_ARCHS")
    archs = archs.split(",") if archs is not None else list(getattr(torch.cuda, "get_arch_list", list)())
    fake = os.environ.get("HCD_KERNEL_FAKE_GPUS")
    if fake is not None:
        devices = [w.rpartition("@") for w in fake.split(",") if w]
        return [(n, tuple(int(x) for x in c.split("."))) for n, _, c in devices], archs
    n = torch.cuda.device_count()
    cap = getattr(torch.cuda, "get_device_capability", lambda i: (0, 0))
    return [(torch.cuda.get_device_name(i), tuple(cap(i))) for i in range(n)], archs


def runs_on(cap: tuple[int, int], archs: list[str]) -> bool:
    """Whether torch built for ``archs`` has kernels for a GPU of compute capability ``cap``: a cubin sm_XY runs on
    the same major version from minor Y up, PTX compute_XY on any capability from X.Y up."""
    for arch in archs:
        kind, _, num = arch.partition("_")
        if num.isdigit() and len(num) >= 2:
            built = (int(num[:-1]), int(num[-1]))
            if (kind == "sm" and built[0] == cap[0] and built[1] <= cap[1]) or (kind == "compute" and built <= cap):
                return True
    return False


def gpu_problem(devices: list, archs: list[str], torch_version: str) -> str:
    """Why this session cannot train as MACHINE_SHAPE promised ("" when it can)."""
    got = ", ".join(name for name, _ in devices) or "no CUDA device"
    if len(devices) < int(MIN_GPUS):
        return f"asked for {MACHINE_SHAPE} ({MIN_GPUS} GPU(s)) but the session got {len(devices)}: {got}"
    for name, cap in devices:
        if not runs_on(cap, archs):
            built = ", ".join(archs) or "no CUDA arch"
            return (
                f"the session got {got}; {name} (compute capability {cap[0]}.{cap[1]}) cannot run the "
                f"installed torch {torch_version} (built for {built})"
            )
    return ""


def log_gpus() -> None:
    """Log the session's GPUs (gpus.json) and stop at once when they are not what MACHINE_SHAPE promised."""
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        smi = f"nvidia-smi unavailable: {exc}"
    import torch

    devices, archs = cuda_devices(torch)
    problem = gpu_problem(devices, archs, torch.__version__)
    info = {
        "machine_shape_asked": MACHINE_SHAPE,
        "nvidia_smi": smi.strip().splitlines(),
        "cuda_device_count": len(devices),
        "cuda_devices": [name for name, _ in devices],
        "compute_capabilities": [f"{c[0]}.{c[1]}" for _, c in devices],
        "torch": torch.__version__,
        "torch_cuda_archs": archs,
        "gpu_check": problem or "ok",
    }
    print("GPUS " + json.dumps(info), flush=True)
    (WORK / "gpus.json").write_text(json.dumps(info, indent=2))
    if not problem:
        return
    if ALLOW_OTHER_GPUS or DRY_RUN:
        why = "--allow-other-gpus" if ALLOW_OTHER_GPUS else "dry run"
        print(f"GPU check: {problem}; going on ({why})", flush=True)
        return
    sys.exit(
        f"hcd stopped the session before installing anything: {problem}. Push again (Kaggle may hand out another "
        "machine next time), or pass --allow-other-gpus to train on what came"
    )


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
