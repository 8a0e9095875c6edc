"""References to files in attached Kaggle datasets: ``dataset:OWNER/SLUG/FILE`` in a kernel's train/predict args.

Kaggle mounts a dataset at ``/kaggle/input/SLUG`` in older sessions and ``/kaggle/input/datasets/OWNER/SLUG``
in kernels pushed from the client, so a mount path typed on a laptop may be wrong on Kaggle. A reference names
the dataset instead: ``hcd kernel push`` attaches every referenced OWNER/SLUG to the kernel
(``dataset_refs``), and the kernel script resolves the reference to the real file at its start.
A Kaggle Model works the same way: ``model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE`` attaches
OWNER/MODEL/FRAMEWORK/VARIATION/VERSION as a model source (``model_refs``).

    >>> dataset_refs(["--epochs", "3", "--weights", "dataset:alice/timm-resnet18/model.safetensors"])
    ['alice/timm-resnet18']
    >>> model_refs(["--weights=model:alice/resnet/pytorch/r18/2/model.safetensors"])
    ['alice/resnet/pytorch/r18/2']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hcd_kit import argv
from hcd_kit.errors import ConfigError

PREFIX = "dataset:"
MODEL_PREFIX = "model:"
_DATASET = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_-]*/)?[a-z0-9][a-z0-9-]{4,48}[a-z0-9]")  # [OWNER/]SLUG


def parse_ref(value: str, flag: str = "--train-args") -> tuple[str, str]:
    """``dataset:OWNER/SLUG/FILE`` -> ``("OWNER/SLUG", "FILE")``; a malformed reference is a ConfigError."""
    parts = value[len(PREFIX) :].strip("/").split("/")
    if len(parts) < 3 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ConfigError(
            f"{flag}: {value!r} is not a dataset reference; use dataset:OWNER/SLUG/FILE "
            "(e.g. dataset:alice/timm-resnet18/model.safetensors)"
        )
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])


def dataset_refs(words: Sequence[str], flag: str = "--train-args") -> list[str]:
    """The OWNER/SLUG of every ``dataset:`` reference in ``words``, in order, each once (checked)."""
    refs = [parse_ref(v, flag)[0] for v in argv.each_value(words) if v.startswith(PREFIX)]
    return list(dict.fromkeys(refs))


def parse_model_ref(value: str, flag: str = "--train-args") -> tuple[str, str]:
    """``model:OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/FILE`` -> ``("OWNER/.../VERSION", "FILE")``, checked as the
    kaggle client checks a ``model_sources`` entry (five parts, an integer version)."""
    parts = value[len(MODEL_PREFIX) :].strip("/").split("/")
    if len(parts) < 6 or not all(parts) or any(p in (".", "..") for p in parts) or not parts[4].isdigit():
        raise ConfigError(
            f"{flag}: {value!r} is not a model reference; use model:OWNER/MODEL/FRAMEWORK/VARIATION/"
            "VERSION/FILE with a version number (e.g. model:alice/resnet/pytorch/r18/2/model.safetensors)"
        )
    return "/".join(parts[:5]), "/".join(parts[5:])


def model_refs(words: Sequence[str], flag: str = "--train-args") -> list[str]:
    """The OWNER/MODEL/FRAMEWORK/VARIATION/VERSION of each ``model:`` reference in ``words``, once (checked)."""
    refs = [parse_model_ref(v, flag)[0] for v in argv.each_value(words) if v.startswith(MODEL_PREFIX)]
    return list(dict.fromkeys(refs))


def reference(dataset: str, file: str) -> str:
    """``dataset:OWNER/SLUG/FILE`` for ``file`` in dataset ``dataset`` (``OWNER/SLUG``)."""
    return f"{PREFIX}{dataset}/{file}"


def check_references(spec) -> None:
    """Refuse malformed ``dataset:``/``model:`` references in a ``KernelSpec``'s args, and a ``--pretrained-from``
    that cannot work (malformed, on an inference kernel, or beside its own ``--weights``/``--no-pretrained``)."""
    for refs in (dataset_refs, model_refs):
        refs(spec.train_args)
        refs(spec.predict_args, "--predict-args")
    if not spec.pretrained_from:
        return
    if not _DATASET.fullmatch(spec.pretrained_from):
        raise ConfigError(
            f"--pretrained-from {spec.pretrained_from!r}: use OWNER/SLUG (or SLUG for your own) of "
            "a dataset made by `hcd weights push MODEL`"
        )
    if spec.mode not in ("train", "probe") and not spec.fold_kernels:  # a fan-out's inference kernel ignores it
        raise ConfigError(
            "--pretrained-from is for training and --probe kernels; an inference kernel "
            "(--weights-dataset) loads its trained weights"
        )
    given = argv.given(spec.train_args, "--weights", "--no-pretrained")
    if given:
        raise ConfigError(
            f"--pretrained-from sets --weights itself; drop {given[0]} from --train-args (or drop --pretrained-from)"
        )
