"""What a Kaggle kernel runs: ``KernelSpec``, built once from the options of ``hcd kernel push|run`` and checked
before anything is rendered or pushed.

``kernel_spec`` derives what the options imply (the mode from ``--weights-dataset``/``--probe``, the default name,
internet on with ``--hub-secret``) and ``check_spec`` refuses a kernel that cannot run on Kaggle: a bad name or fold,
malformed ``dataset:``/``model:`` references (``refs``), a registry model without a route to its weights
(``hub_access``), an offline training kernel that would download pretrained weights, a training kernel whose saved
output would not fit Kaggle's 20 GB (``output``). ``--train-args`` arrives as
words (``hcd_kit.argv``: split once); the CLI has the training layer read them first
(``hcd_kit.training.parse_train_args``: unknown flags and bad values refused), and the spec carries the
``TrainConfig`` overrides that reading gave.

    spec = kernel_spec(folds=[0], train_args=["--epochs", "3", "--no-pretrained"])   # name hcd-train-fold-0
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hcd_kit import argv
from hcd_kit.choices import TtaViews
from hcd_kit.config import check_choice
from hcd_kit.errors import ConfigError
from hcd_kit.kaggle.hub_access import check_model_routes, offline_weights_given
from hcd_kit.kaggle.output import check_output
from hcd_kit.kaggle.refs import check_references
from hcd_kit.kaggle.shapes import check_machine_shape
from hcd_kit.layout import COMPETITION, CheckpointSize

DEFAULT_SHAPE = "NvidiaTeslaT4"  # the client's own help names it for T4 x2; the kernel logs what it got
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]")
_FOLD = re.compile(r"all|\d+(?:,\d+)*")


@dataclass
class KernelSpec:
    """What to run on Kaggle; defaults give a private T4 GPU training kernel over all folds, no internet.

    ``train_args``/``predict_args`` are the extra ``hcd train``/``hcd predict`` flags as words (text is split once,
    here); ``train_overrides`` the ``TrainConfig`` settings the training layer read from them (None: not read)."""

    name: str = "hcd-train"
    mode: str = "train"  # "train" (prepare, folds, train, predict), "predict" (from a weights dataset) or "probe"
    fold: str = "all"
    machine_shape: str = DEFAULT_SHAPE
    allow_other_gpus: bool = False  # the kernel goes on whatever GPUs it got (else: too few or unusable -> stop)
    internet: bool = False
    competition: str = COMPETITION
    wheel_dataset: str = "hcd-kit"  # slug under your user, or owner/slug
    weights_dataset: str = ""
    train_args: list[str] = field(default_factory=list)
    predict_args: list[str] = field(default_factory=list)
    tta: int = 8
    extra_datasets: list[str] = field(default_factory=list)
    pretrained_from: str = ""  # a dataset made by `hcd weights push`: adds --weights dataset:OWNER/SLUG/FILE
    n_folds: int = 5  # `hcd folds --n-folds` in a training kernel
    hub_secret: str = ""  # name of a Kaggle secret holding a Hugging Face token: internet on, HF_TOKEN set from it
    probe: str = ""  # probe mode: the model `hcd embed` uses (then `hcd probe`), instead of train + predict
    fold_kernels: list[str] = field(default_factory=list)  # predict from these kernels' run/ (kernel_sources);
    # an entry OWNER/SLUG@VERSION names the version gathered (logged by the kernel, part of its digest)
    train_overrides: dict[str, Any] | None = None
    fold_bytes: CheckpointSize | None = None  # one fold's best.pt and last.pt, sized by the CLI from the training
    # settings (``output``: the saved output is held to Kaggle's 20 GB); None: not sized, not checked

    def __post_init__(self) -> None:
        self.train_args = argv.split(self.train_args, "--train-args")
        self.predict_args = argv.split(self.predict_args, "--predict-args")


def default_name(mode: str, fold: str) -> str:
    if mode == "predict":
        return "hcd-predict"
    if mode == "probe":
        return "hcd-probe"
    return "hcd-train" if fold == "all" else "hcd-train-fold-" + fold.replace(",", "-")


def kernel_spec(
    *,
    folds: Sequence[int] | None = None,
    name: str | None = None,
    weights_dataset: str = "",
    probe: str = "",
    hub_secret: str = "",
    internet: bool = False,
    datasets: Sequence[str] = (),
    **fields: Any,
) -> KernelSpec:
    """The checked spec for the options of ``hcd kernel push|run``: ``folds`` None is every fold; the mode follows
    from ``weights_dataset`` (predict) or ``probe``, the name from mode and folds unless given, and ``hub_secret``
    (route A: the hub with your token) turns the internet on. ``fields`` are ``KernelSpec``'s own."""
    fold = "all" if folds is None else ",".join(map(str, folds))
    hub_secret, probe = (hub_secret or "").strip(), (probe or "").strip()
    mode = "predict" if weights_dataset else "probe" if probe else "train"
    spec = KernelSpec(
        name=name or default_name(mode, fold),
        mode=mode,
        fold=fold,
        weights_dataset=weights_dataset,
        probe=probe,
        hub_secret=hub_secret,
        internet=bool(internet or hub_secret),
        extra_datasets=list(datasets or []),
        **fields,
    )
    check_spec(spec)
    return spec


def check_spec(spec: KernelSpec) -> None:
    """Refuse a kernel that cannot work on Kaggle, before anything is rendered or pushed."""
    if not _SLUG.fullmatch(spec.name):
        raise ConfigError(
            f"kernel name {spec.name!r} must be 5-50 lowercase letters, digits or '-' (it becomes the slug)"
        )
    if not _FOLD.fullmatch(spec.fold):
        raise ConfigError(f"--fold {spec.fold!r}: use a fold number, a list like 0,2, or all")
    if spec.mode not in ("train", "predict", "probe"):
        raise ConfigError(f"kernel mode {spec.mode!r}: use train, predict or probe")
    if spec.mode == "predict" and not (spec.weights_dataset or spec.fold_kernels):
        raise ConfigError("a predict kernel needs --weights-dataset (made by `hcd dataset push --run-dir RUN`)")
    check_choice("--tta", spec.tta, TtaViews)
    check_machine_shape(spec.machine_shape)  # retired / internal / TPU shapes refused with the reason
    # `hcd train` starts from ImageNet weights on the hub by default; offline, the session would die at the
    # download after queueing for a GPU, so say it now
    check_references(spec)
    check_model_routes(spec)  # registry models: --hub-secret or --pretrained-from; probe kernels
    if (
        spec.mode == "train"
        and not (spec.internet or spec.hub_secret)
        and not (spec.pretrained_from or offline_weights_given(spec.train_args))
    ):
        raise ConfigError(
            "the kernel has no internet, so `hcd train` cannot download pretrained weights: pass --pretrained-from "
            'OWNER/SLUG (made by `hcd weights push MODEL`), or --dataset OWNER/SLUG --train-args "--weights '
            '/kaggle/input/SLUG/FILE" (or dataset:OWNER/SLUG/FILE, or model:OWNER/MODEL/FRAMEWORK/VARIATION/'
            'VERSION/FILE for a Kaggle Model), or --train-args "--no-pretrained", or --internet'
        )
    check_output(spec)  # the saved output (every fold's best.pt, a last.pt per fold in flight) within Kaggle's 20 GB
