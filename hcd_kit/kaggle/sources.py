"""What a kernel attaches, checked before it is pushed, and datasets waited for until Kaggle has processed them.

Kaggle processes a new dataset or version after the upload (``DatabundleVersionStatus``: ... ``READY``); until then
a kernel pushed with it gets it back as an invalid source (and runs without it), and another version pushed
meanwhile is refused with HTTP 403. So ``hcd dataset push`` / ``hcd weights push`` wait for READY
(``wait_dataset_ready``), and ``push_kernel`` first checks every source of the kernel (``check_sources``): each
dataset READY (waiting for it, with a line saying so), each kernel source finished (COMPLETE: only a finished
version's output can be attached), each competition readable by this account (its rules accepted), each model
instance version there. What SaveKernel still could not attach is recorded and reported by ``push_kernel``.

    wait_dataset_ready("alice/hcd-kit", wait_timeout=1800, on_poll=print)   # "ready" (or a KaggleError)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from hcd_kit.errors import ConfigError, KaggleError
from hcd_kit.kaggle import api as kaggle_api
from hcd_kit.kaggle.poll import poll_until

READY = "ready"
ENDED = ("failed", "deleted")
DEFAULT_DATASET_WAIT = 1800.0  # seconds: a dataset of a few hundred MB is processed in minutes
DATASET_POLL = 5.0  # the first wait between two status calls (backs off to 60 s)


def dataset_state(ref: str, timeout: float | None = None) -> str | None:
    """The processing status of dataset ``ref``'s current version (``ready``, ``blobs_received``, ``failed``, ...,
    as the client spells it), or None when Kaggle does not know it (HTTP 404)."""
    from requests import HTTPError

    api = kaggle_api.get_api(timeout)

    def status() -> str | None:
        try:
            return str(api.dataset_status(ref)).lower()
        except HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                return None
            raise

    return kaggle_api.call(f"get the status of dataset '{ref}'", status, timeout=timeout, not_found=f"dataset '{ref}'")


def wait_dataset_ready(
    ref: str,
    *,
    wait_timeout: float = DEFAULT_DATASET_WAIT,
    poll: float = DATASET_POLL,
    on_poll: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> str:
    """Poll dataset ``ref`` until Kaggle has processed it (``ready``); ``on_poll(status)`` sees every answer.

    A dataset Kaggle does not know, or whose processing failed, is a ``KaggleError`` at once; still processing after
    ``wait_timeout`` s is one too (saying to run again later)."""

    def fetch() -> str:
        state = dataset_state(ref, timeout)
        if state is None:
            raise KaggleError(
                f"Kaggle does not know dataset '{ref}' (or your account cannot see it): push it with `hcd dataset "
                "push` (the wheel) or `hcd weights push`, or check the owner/slug"
            )
        if state in ENDED:
            raise KaggleError(
                f"Kaggle's processing of dataset '{ref}' ended {state.upper()}: push it again "
                f"(https://www.kaggle.com/datasets/{ref} may say why)"
            )
        return state

    return poll_until(
        fetch,
        lambda state: state == READY,
        wait_timeout=wait_timeout,
        poll=poll,
        on_poll=on_poll,
        still=lambda state: (
            f"dataset '{ref}' is still being processed by Kaggle ({state}) after {wait_timeout:g} s; run the "
            "command again later (or give it a longer --wait-timeout)"
        ),
    )


def processing_refusal(ref: str, timeout: float | None = None) -> KaggleError | None:
    """The one-line explanation of a 403 to a new version of ``ref`` when its previous version is still being
    processed (Kaggle refuses versions meanwhile), else None (a real access problem)."""
    try:
        state = dataset_state(ref, timeout)
    except KaggleError:
        return None
    if state is None or state == READY or state in ENDED:
        return None
    return KaggleError(
        f"Kaggle refused the new version of dataset '{ref}' (HTTP 403) because it is still processing the previous "
        f"one ({state}), not for lack of access: wait until it is ready and push again (`hcd dataset push` and "
        "`hcd weights push` wait for it; see --wait-timeout)"
    )


def _kernel_state(ref: str, timeout: float | None) -> str:
    api = kaggle_api.get_api(timeout)
    resp = kaggle_api.call(
        f"get the status of kernel source '{ref}'",
        lambda: api.kernels_status(ref),
        timeout=timeout,
        not_found=f"kernel '{ref}'",
    )
    return getattr(resp.status, "name", str(resp.status))


def _check_competition(ref: str, timeout: float | None) -> None:
    """One page of the competition's file list: a 404 (no such competition) or a 403 (rules not accepted) is a
    one-line KaggleError naming the fix, before anything is pushed."""
    api = kaggle_api.get_api(timeout)
    kaggle_api.call(
        f"check competition source '{ref}' before pushing the kernel (nothing was pushed)",
        lambda: api.competition_list_files(ref, None, 1),
        timeout=timeout,
        not_found=f"competition '{ref}'",
        competition=ref,
    )


def _check_model(ref: str, timeout: float | None) -> None:
    """A model source ``owner/model/framework/variation/version`` exists and is readable (one page of its files)."""
    api = kaggle_api.get_api(timeout)
    kaggle_api.call(
        f"check model source '{ref}' before pushing the kernel (nothing was pushed)",
        lambda: api.model_instance_version_files(ref, None, 1),
        timeout=timeout,
        not_found=f"model '{ref}'",
    )


def check_sources(
    folder: str | os.PathLike[str],
    *,
    wait_timeout: float = DEFAULT_DATASET_WAIT,
    poll: float = DATASET_POLL,
    say: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> None:
    """Before pushing the kernel rendered in ``folder``: wait until every dataset it attaches is READY (one line
    ``say``s so when one is not), and refuse a kernel source without a finished (COMPLETE) version."""
    meta = json.loads((Path(folder) / "kernel-metadata.json").read_text(encoding="utf-8"))
    for ref in meta.get("competition_sources") or []:
        _check_competition(ref, timeout)
    for ref in meta.get("model_sources") or []:
        _check_model(ref, timeout)
    for ref in meta.get("dataset_sources") or []:
        told: list[str] = []

        def tell(state: str, ref: str = ref, told: list[str] = told) -> None:
            if state != READY and state not in told and say is not None:
                told.append(state)
                say(
                    f"waiting for dataset {ref}: Kaggle is still processing it ({state}); the kernel is pushed when ready"
                )

        wait_dataset_ready(ref, wait_timeout=wait_timeout, poll=poll, on_poll=tell, timeout=timeout)
    for ref in meta.get("kernel_sources") or []:
        state = _kernel_state(ref, timeout)
        if state != "COMPLETE":
            raise ConfigError(
                f"kernel source '{ref}' is {state}: Kaggle attaches only the output of a finished (COMPLETE) version; "
                "wait for it (`hcd kernel status --name SLUG --wait`) or push it again (nothing was pushed)"
            )
