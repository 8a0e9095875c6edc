"""How a Kaggle kernel gets the weights of a registry model (``hcd models``: uni, virchow2, ...), and probe kernels.

Two routes, checked before anything is rendered or pushed (``check_model_routes``):

  A. the hub, with your token: ``--hub-secret NAME`` turns the kernel's internet on, and the kernel script sets
     ``HF_TOKEN`` from the Kaggle secret NAME (``kaggle_secrets.UserSecretsClient``) at its start. Only the
     secret's *name* is in the kernel; the token stays in Kaggle's secret store and is never printed.
  B. a dataset of the weights: ``hcd weights push MODEL`` (``--private-ok`` for a licence that forbids
     re-hosting), then ``--pretrained-from OWNER/SLUG``, which adds ``--weights dataset:OWNER/SLUG/model.safetensors``.

A registry model named by ``--model`` in ``--train-args`` (or by ``--probe``) with neither route is refused in one
line naming both; ``--no-pretrained`` or an explicit ``--weights`` need neither. ``--probe MODEL`` makes a probe
kernel: ``hcd embed`` (frozen features of every patch, ``--tta`` views) then ``hcd probe`` (a linear probe on them,
``RUN/submission.csv``) instead of train + predict (``script_values`` fills the script's constants).

    >>> models_named(["--epochs", "2", "--model=uni", "--lr", "1e-4"])
    ['uni']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hcd_kit import argv
from hcd_kit.errors import ConfigError
from hcd_kit.kaggle.weights import pretrained_train_args, registry_entry

_SECRET = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")  # what a Hugging Face token looks like: never a secret's name


def check_hub_secret(name: str) -> None:
    """A Kaggle secret's name (letters, digits, '_' and '-'), and not a token typed in its place (not echoed)."""
    if not name:
        return
    if _TOKEN.fullmatch(name.strip()):
        raise ConfigError(
            "--hub-secret takes the NAME of a Kaggle secret, not the token itself (which would end up "
            "in the kernel): store the token in Kaggle's Add-ons > Secrets as e.g. HF_TOKEN and pass "
            "--hub-secret HF_TOKEN; revoke the token you typed if it was shared"
        )
    if not _SECRET.fullmatch(name):
        raise ConfigError("--hub-secret: use the name of a Kaggle secret (letters, digits, '_' or '-', e.g. HF_TOKEN)")


def models_named(words: Sequence[str]) -> list[str]:
    """Every ``--model`` value in the ``hcd train`` flags ``words``."""
    return argv.values(words, "--model")


def _routes(entry, where: str) -> str:
    private = "" if entry.redistribute else " --private-ok"
    gated = ", gated" if entry.gated else ""
    return (
        f"{where} names '{entry.name}' ({entry.hub}{gated}), whose weights a kernel must be given: either a "
        f"dataset of them (`hcd weights push {entry.name}{private}`, then --pretrained-from OWNER/"
        f"{entry.name}-weights) or the hub with your token (--hub-secret HF_TOKEN, the token attached to the "
        "notebook as a Kaggle secret of that name)"
    )


def offline_weights_given(words: Sequence[str]) -> bool:
    """Whether the ``hcd train`` flags ``words`` say where pretrained weights come from without the hub."""
    return bool(argv.given(words, "--weights", "--no-pretrained"))


def check_probe(spec) -> None:
    """A probe kernel embeds every patch and fits one probe: no folds, train/predict flags or weights dataset."""
    if spec.mode != "probe":
        if spec.probe:
            raise ConfigError(
                "--probe makes a probe kernel (hcd embed + hcd probe); --weights-dataset an inference "
                "kernel: drop one of them"
            )
        return
    if not spec.probe:
        raise ConfigError("a probe kernel needs --probe MODEL (a registry name of `hcd models`, or a timm name)")
    if spec.fold != "all":
        raise ConfigError("--probe embeds every patch and fits one probe over the folds: drop --fold")
    for flag, value in (("--train-args", spec.train_args), ("--predict-args", spec.predict_args)):
        if value:
            raise ConfigError(f"{flag} does not apply to a --probe kernel (it runs hcd embed and hcd probe); drop it")


def check_model_routes(spec) -> None:
    """Refuse a kernel whose registry model (or probe model) has no way to its weights on Kaggle."""
    check_hub_secret(spec.hub_secret)
    check_probe(spec)
    if spec.hub_secret:
        return  # route A: internet on, HF_TOKEN from the secret
    if spec.mode == "probe":
        entry = registry_entry(spec.probe)
        if entry is not None and not spec.pretrained_from:
            raise ConfigError(_routes(entry, "--probe"))
        if not (spec.pretrained_from or spec.internet or spec.probe.startswith("local-dir:")):
            raise ConfigError(
                f"the kernel has no internet, so `hcd embed` cannot download the weights of "
                f"'{spec.probe}': pass --pretrained-from OWNER/SLUG (made by `hcd weights push "
                f"{spec.probe}`), or --internet"
            )
        return
    models = models_named(spec.train_args)
    if spec.mode != "train" or spec.pretrained_from or offline_weights_given(spec.train_args):
        return
    for model in models:
        entry = registry_entry(model)
        if entry is not None:
            raise ConfigError(_routes(entry, "--train-args"))


def embed_args(spec, user: str) -> list[str]:
    """Extra ``hcd embed`` flags of a probe kernel: ``--weights dataset:OWNER/SLUG/model.safetensors`` (route B)."""
    return pretrained_train_args([], spec.pretrained_from, user) if spec.mode == "probe" else []


def script_values(spec, user: str) -> dict[str, str | list[str]]:
    """The kernel script's constants for the hub secret and probe mode."""
    return {
        "HUB_SECRET": spec.hub_secret,
        "PROBE_MODEL": spec.probe if spec.mode == "probe" else "",
        "EMBED_WORDS": embed_args(spec, user),
    }


def check_template(script: str, values: dict[str, str | list[str]]) -> None:
    """A customised template older than these options would silently ignore them: refuse it instead."""
    missing = [k for k, v in values.items() if v and f'"__HCD_{k}__"' not in script]
    if missing:
        raise ConfigError(
            f"the customised kernel template (ROOT/templates/kernel.py) has no __HCD_{missing[0]}__ "
            "constant, which these options need: copy it again from hcd_kit/kaggle/templates/"
        )
