# The kernel script's install steps: the hub token, the GPUs logged, hcd_kit installed offline.
# A part of the template kernel.py: hcd_kit.kaggle.kernel.read_templates puts it in (Kaggle runs one script).


def hub_token() -> None:
    """HF_TOKEN from the Kaggle secret HUB_SECRET, for every hcd step after it; its value is never printed."""
    if not HUB_SECRET:
        return
    attach = (
        f"attach it in the notebook's Add-ons > Secrets under the name {HUB_SECRET} (a Hugging Face read "
        "token with access to the model), then run the kernel again"
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
