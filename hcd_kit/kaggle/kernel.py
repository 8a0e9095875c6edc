"""Kaggle kernels for hcd: render a kernel folder from the templates, push it, watch it, fetch its output.

``render_kernel`` writes ``ROOT/<name>/kernel-metadata.json`` and ``ROOT/<name>/<name with _>.py`` from
the templates shipped in the package (``hcd_kit/kaggle/templates/``; customised copies in ``ROOT/templates/``
win): a private GPU script with internet off, the competition and the hcd_kit wheel dataset attached, and,
for inference, a weights dataset. ``check_spec`` (``spec.py``) first refuses what cannot run there, such as an offline
training kernel whose train args name no local ``--weights`` and no ``--no-pretrained`` (the hub is out of
reach), or a registry model with neither ``--hub-secret`` nor ``--pretrained-from`` (``hub_access``, which
also shapes probe kernels: ``hcd embed`` + ``hcd probe`` instead of train + predict). ``push_kernel`` sends it
with the official client and checks what the ``kaggle`` command ignores: the ``error`` field, and the sources
Kaggle could not attach (``invalid_*_sources``). ``kernel_status`` polls the session (bounded, with backoff)
and ``kernel_output`` downloads every output file, page after page. The machine shape a push asked for is recorded in the metadata and in ``ROOT/<name>/last_push.json``;
the kernel itself logs the GPUs it really got (Kaggle has been seen to hand out another GPU than the one
asked for).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from hcd_kit.errors import ConfigError, KaggleError
from hcd_kit.fsutil import atomic_write_json, atomic_write_text
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.api import DEFAULT_TRANSFER_TIMEOUT
from hcd_kit.kaggle.calls import interrupts_held
from hcd_kit.kaggle.hub_access import check_template, embed_args, script_values
from hcd_kit.kaggle.output import OUTPUT_LIMIT_BYTES
from hcd_kit.kaggle.poll import poll_until
from hcd_kit.kaggle.refs import dataset_refs, model_refs
from hcd_kit.kaggle.shapes import min_gpus
from hcd_kit.kaggle.sources import DEFAULT_DATASET_WAIT, check_sources
from hcd_kit.kaggle.spec import KernelSpec, check_spec
from hcd_kit.kaggle.weights import pretrained_train_args

DEFAULT_ROOT = Path("kernels")


def _owned(ref: str, user: str) -> str:
    return ref if "/" in ref else f"{user}/{ref}"


def kernel_ref(name: str, user: str | None = None) -> str:
    """``owner/slug`` for ``name`` (a bare slug belongs to the authenticated user)."""
    return name if "/" in name else f"{user or kaggle_api.username()}/{name}"


_TEMPLATES = ("kernel-metadata.json", "kernel.py")
# Kaggle runs one script: kernel.py (constants, helpers, main) with the parts of its steps put where it says
# PARTS_MARK, in this order; a part in ROOT/templates/ replaces the packaged one
PARTS = ("kernel_install.py", "kernel_data.py", "kernel_train.py", "kernel_predict.py")
PARTS_MARK = "# __HCD_PARTS__"
_PLACEHOLDER = re.compile(r'"__HCD_([A-Z_]+)__"')


def read_templates(root: str | os.PathLike[str] = DEFAULT_ROOT) -> tuple[str, str]:
    """The metadata and script templates: ``root/templates/`` when it exists (customised), else the packaged ones.
    The script is whole: its parts (``PARTS``) are in it."""
    custom = Path(root) / "templates"
    packaged = resources.files("hcd_kit.kaggle") / "templates"
    if custom.is_dir():
        missing = [n for n in _TEMPLATES if not (custom / n).is_file()]
        if missing:
            raise ConfigError(
                f"customised kernel templates in {custom} lack {', '.join(missing)}; add them "
                f"(copies of those in hcd_kit/kaggle/templates/) or remove {custom}"
            )
    read = lambda n: (custom / n if (custom / n).is_file() else packaged / n).read_text(encoding="utf-8")  # noqa: E731
    meta, script = map(read, _TEMPLATES)
    parts = "\n\n\n".join(read(n).strip("\n") for n in PARTS)
    return meta, script.replace(PARTS_MARK, parts, 1)


def render_kernel(spec: KernelSpec, user: str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """Write ``root/<name>/kernel-metadata.json`` and the script from the templates; return the folder.

    The templates are ``root/templates/`` where that folder exists (customised copies), else those shipped
    in the package, so it works outside a clone of the repository.

    Example: ``render_kernel(KernelSpec(fold="0"), "alice")`` -> ``kernels/hcd-train/`` with the id
    ``alice/hcd-train``.
    """
    check_spec(spec)
    root = Path(root)
    meta_text, script = read_templates(root)
    code_file = spec.name.replace("-", "_") + ".py"
    meta = json.loads(meta_text)
    datasets = [_owned(spec.wheel_dataset, user)]
    if spec.weights_dataset:
        datasets.append(_owned(spec.weights_dataset, user))
    datasets += [_owned(d, user) for d in spec.extra_datasets]
    train_args = pretrained_train_args(spec.train_args, spec.pretrained_from if spec.mode == "train" else "", user)
    datasets += dataset_refs(train_args) + dataset_refs(spec.predict_args, "--predict-args")  # dataset: refs
    datasets += dataset_refs(embed_args(spec, user), "--pretrained-from")
    meta.update(
        id=f"{user}/{spec.name}",
        title=spec.name.replace("-", " "),  # slugifies back to the id: the client warns otherwise
        code_file=code_file,
        enable_gpu=True,
        enable_internet=spec.internet or bool(spec.hub_secret),  # --hub-secret: the hub, with the token
        machine_shape=spec.machine_shape,
        dataset_sources=list(dict.fromkeys(datasets)),
        competition_sources=[spec.competition],
        kernel_sources=[_owned(k.split("@")[0], user) for k in spec.fold_kernels],
        model_sources=list(
            dict.fromkeys(
                [
                    *(meta.get("model_sources") or []),
                    *model_refs(train_args),
                    *model_refs(spec.predict_args, "--predict-args"),
                ]
            )
        ),  # model: refs
    )
    values = {
        "MODE": spec.mode,
        "FOLD": spec.fold,
        "TRAIN_WORDS": train_args,
        "PREDICT_WORDS": spec.predict_args,
        "TTA": str(spec.tta),
        "COMPETITION": spec.competition,
        "WHEEL_DATASET": datasets[0],
        "WEIGHTS_DATASET": _owned(spec.weights_dataset, user) if spec.weights_dataset else "",
        "MACHINE_SHAPE": spec.machine_shape,
        "MIN_GPUS": str(min_gpus(spec.machine_shape)),
        "ALLOW_OTHER_GPUS": "yes" if spec.allow_other_gpus else "",
        "N_FOLDS": str(spec.n_folds),
        "FOLD_KERNELS": ",".join(_owned(k, user) for k in spec.fold_kernels),
        **script_values(spec, user),
    }
    check_template(script, values)
    values["OUTPUT_LIMIT"] = str(OUTPUT_LIMIT_BYTES)  # after the check: an older customised template may lack it
    for key, value in values.items():
        # a JSON string (or list of strings) is a valid Python literal, so any value is quoted safely
        script = script.replace(f'"__HCD_{key}__"', json.dumps(value))
    left = _PLACEHOLDER.search(script)
    if left:  # a customised template older than the words: it would run with the placeholder as its value
        raise ConfigError(
            f"the customised kernel template (ROOT/templates/kernel.py) has a __HCD_{left[1]}__ "
            "constant that hcd no longer fills: copy it again from hcd_kit/kaggle/templates/"
        )
    folder = root / spec.name
    atomic_write_text(folder / code_file, script)
    atomic_write_json(folder / "kernel-metadata.json", meta)
    return folder


# What to do about each kind of source Kaggle could not attach (SaveKernelResponse.invalid_*_sources).
_SOURCE_FIXES = {
    "dataset": "check the owner/slug and that your account can see it (push it with `hcd dataset push`)",
    "competition": "check the name and accept the competition rules at https://www.kaggle.com/c/{}/rules",
    "kernel": "check the owner/slug and that it has a finished version your account can see",
    "model": "check the owner/model/framework/variation/version handle and that your account can see it",
}


def _invalid_sources(resp: object) -> list[str]:
    """The sources Kaggle saved the kernel without (``SaveKernelResponse.invalid_*_sources``), each with its fix.

    The service still saves (and starts) that version, and the `kaggle` command only prints the lists, so a
    misspelt dataset or unaccepted rules would otherwise surface after the GPU queue, as a missing input.
    """
    problems = []
    for kind, fix in _SOURCE_FIXES.items():
        for source in getattr(resp, f"invalid_{kind}_sources", None) or []:
            problems.append(f"{kind} '{source}' ({fix.format(source)})")
    return problems


def _sources_error(ref: str, version: int | None, problems: list[str]) -> KaggleError:
    saved = f"saved version {version} of" if version else "saved"
    return KaggleError(
        kaggle_api.redact(
            f"Kaggle {saved} kernel '{ref}' without the sources it could not attach: {'; '.join(problems)}; that "
            "version runs without them and stops at its start (recorded in last_push.json): fix them and run "
            "`hcd kernel run` again, which waits for that version to end before pushing another"
        )
    )


def kernel_digest(folder: str | os.PathLike[str]) -> str:
    """sha256 over a rendered kernel's metadata and script: equal digests push the same kernel."""
    folder = Path(folder)
    meta = (folder / "kernel-metadata.json").read_bytes()
    h = hashlib.sha256(meta)
    code = folder / json.loads(meta).get("code_file", "")
    if code.is_file():
        h.update(code.read_bytes())
    return h.hexdigest()


@dataclass
class PushResult:
    ref: str
    url: str
    version: int | None
    machine_shape: str


def push_kernel(
    folder: str | os.PathLike[str],
    timeout: float | None = None,
    session_timeout: float | None = None,
    *,
    sources_wait: float = DEFAULT_DATASET_WAIT,
    say: Callable[[str], None] | None = None,
) -> PushResult:
    """Push a rendered kernel folder; a refusal reported inside a 200 answer is a ``KaggleError``.
    ``session_timeout`` (seconds) is the client's session time-out: Kaggle stops the session then, capping the
    quota it spends.

    Ctrl-C is held until the push is recorded in ``last_push.json``, so a rerun picks that version up. First every
    source is checked (``sources.check_sources``): each dataset READY, waited for up to ``sources_wait`` s (``say``
    tells so), each kernel source COMPLETE. Sources the service still could not attach are recorded in
    ``last_push.json`` (``invalid_sources``) and raised."""
    check_sources(folder, wait_timeout=sources_wait, say=say, timeout=timeout)
    with interrupts_held():
        return _push(Path(folder), timeout, session_timeout)


def _push(folder: Path, timeout: float | None, session_timeout: float | None = None) -> PushResult:
    meta = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))
    api = kaggle_api.get_api()
    session_limit = str(int(session_timeout)) if session_timeout else None  # the client's `timeout`: seconds
    # no retries: a second push after a lost answer would start (and bill) a second GPU session
    resp = kaggle_api.call(
        f"push kernel '{meta['id']}'",
        lambda: api.kernels_push(str(folder), timeout=session_limit),
        timeout=timeout,
        retries=0,
    )
    kaggle_api.check_reported(f"push kernel '{meta['id']}'", resp)  # the `kaggle` command exits 0 on these
    invalid = _invalid_sources(resp)
    result = PushResult(
        ref=meta["id"],  # the answer's ref is a URL path (/code/owner/slug)
        url=getattr(resp, "url", None) or "",
        version=getattr(resp, "version_number", None),
        machine_shape=meta.get("machine_shape", ""),
    )
    record = asdict(result) | {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "digest": kernel_digest(folder),
    }  # `hcd kernel run` compares it before pushing
    if invalid:  # a started version that lacks inputs: a rerun must know it (run.pick_up), not push blindly
        record["invalid_sources"] = invalid
    atomic_write_json(folder / "last_push.json", record)
    if invalid:
        raise _sources_error(result.ref, result.version, invalid)
    return result


@dataclass
class KernelStatus:
    ref: str
    status: str  # QUEUED, RUNNING, COMPLETE, ERROR, CANCEL_*, ...
    failure_message: str = ""

    @property
    def done(self) -> bool:
        # a requested cancel never turns into COMPLETE: waiting on until it is acknowledged tells nothing more
        return self.status not in ("QUEUED", "RUNNING", "NEW_SCRIPT")

    @property
    def ok(self) -> bool:
        """Finished and produced its output; any other final status (ERROR, CANCEL_*) means no output."""
        return self.status == "COMPLETE"


def _status_once(ref: str, timeout: float | None) -> KernelStatus:
    api = kaggle_api.get_api()
    resp = kaggle_api.call(
        f"get the status of kernel '{ref}'",
        lambda: api.kernels_status(ref),
        timeout=timeout,
        not_found=f"kernel '{ref}'",
    )
    status = getattr(resp.status, "name", str(resp.status))  # enums print as KernelWorkerStatus.X
    return KernelStatus(ref, status, kaggle_api.redact(getattr(resp, "failure_message", None) or ""))


def kernel_status(
    ref: str,
    wait: bool = False,
    wait_timeout: float = 12 * 3600.0,
    poll: float = 10.0,
    on_poll: Callable[[KernelStatus], None] | None = None,
    timeout: float | None = None,
) -> KernelStatus:
    """The session status of kernel ``ref``; with ``wait``, poll (backoff up to 60 s) until it finishes.

    ``on_poll(status)`` is called after each poll (the CLI shows it); ``timeout`` bounds each call.
    Waiting longer than ``wait_timeout`` seconds is a ``KaggleError``.
    """
    return poll_until(
        lambda: _status_once(ref, timeout),
        lambda st: not wait or st.done,
        wait_timeout=wait_timeout,
        poll=poll,
        on_poll=on_poll,
        still=lambda st: f"kernel {ref} still {st.status} after {wait_timeout:g} s; check later with hcd kernel status",
    )


def kernel_output(
    ref: str,
    out_dir: str | os.PathLike[str],
    transfer_timeout: float = DEFAULT_TRANSFER_TIMEOUT,
    timeout: float | None = None,
) -> list[Path]:
    """Download every output file of kernel ``ref`` (all pages) and its log into ``out_dir``.

    ``transfer_timeout`` bounds the whole download (one call of the client); ``timeout`` the credentials check.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    api = kaggle_api.get_api(timeout)
    # page_token=None makes the client follow nextPageToken itself; force: never keep a stale copy
    files, _ = kaggle_api.call(
        f"download the output of kernel '{ref}'",
        lambda: api.kernels_output(ref, str(out_dir), force=True, quiet=True),
        timeout=transfer_timeout,
        not_found=f"kernel '{ref}'",
    )
    return [Path(f) for f in files]
