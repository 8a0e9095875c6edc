"""Can weights come from the Hugging Face hub here? Decided up front, so offline fails in one line, at once.

Left to itself, an offline machine spends about 50 s in ``huggingface_hub`` retries before timm gives up
with a traceback. ``ensure_hub_files`` answers first: when ``HF_HUB_OFFLINE`` is set, or a TCP connection to
the hub (``HF_ENDPOINT``, else huggingface.co) does not open within ``PROBE_TIMEOUT`` seconds, files already
in the hub cache are used without asking the network (the client is switched to offline mode) and anything
else is a one-line ``ConfigError`` saying what to do. ``hub_error`` turns the client's own exceptions (a
gated repository, a missing token, an unknown id) into such a line too.

    ensure_hub_files("MahmoodLab/uni", ("config.json",), label="uni", gated=True)
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

from hcd_kit.errors import ConfigError

PROBE_TIMEOUT = 1.0  # seconds: the whole probe, name lookup included
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repository
_TRUE = ("1", "true", "yes", "on")


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` (lookup included), else why not."""
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(exc.strerror or type(exc).__name__)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    if not result:
        return f"{host} did not answer within {timeout:g} s"
    return None if result[0] is None else f"{host}:{port} is unreachable: {result[0]}"


def offline_reason() -> str | None:
    """Why the hub cannot be asked from here (``HF_HUB_OFFLINE``, or the probe failed); None when it can."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    return _probe(*_endpoint(), PROBE_TIMEOUT)


def cached_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """The path of the first of ``filenames`` in the local hub cache for ``repo_id``, else None."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    for name in filenames:
        path = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(path, str):
            return path
    return None


def go_offline() -> None:
    """Make the hub client serve from its cache without any network attempt, for the rest of the process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # read at import time: the environment alone is too late
    except ImportError:  # pragma: no cover - timm needs huggingface_hub for any hub model
        pass


def ensure_hub_files(repo_id: str, needs: tuple[tuple[str, ...], ...], label: str, gated: bool = False) -> None:
    """Check that every group in ``needs`` (alternative file names) can be had from the hub or its cache.

    Online: nothing to check here (the download may still be refused; ``hub_error`` words that). Offline: the
    cache must hold one file of each group, else a ConfigError saying what to do, within ``PROBE_TIMEOUT``.
    """
    reason = offline_reason()
    if reason is None:
        return
    missing = [
        ("its weights" if group == WEIGHT_FILES else group[0]) for group in needs if cached_file(repo_id, group) is None
    ]
    if not missing:
        go_offline()
        return
    access = (
        (
            f"; it is gated: request access at https://huggingface.co/{repo_id.split('@')[0]} and set HF_TOKEN "
            "where the hub is reachable"
        )
        if gated
        else ""
    )
    raise ConfigError(
        f"'{label}' needs {' and '.join(missing)} from the Hugging Face hub ({repo_id}), but the hub cannot be "
        f"asked here ({reason}) and the cache has no copy{access}; or copy the weights into a folder and use "
        f"--model local-dir:FOLDER (`hcd weights push` makes one), or --weights FILE, or --no-pretrained"
    )


def hub_error(label: str, repo_id: str, exc: BaseException, gated: bool = False) -> ConfigError | None:
    """A one-line ConfigError for a hub failure of ``repo_id``; None when ``exc`` is not a hub failure."""
    try:
        from huggingface_hub import errors
    except ImportError:  # pragma: no cover
        return None
    url = f"https://huggingface.co/{repo_id.split('@')[0]}"
    if isinstance(exc, errors.GatedRepoError):
        return ConfigError(
            f"'{label}' ({repo_id}) is gated and this account has no access: request it at {url}, "
            "then set HF_TOKEN (a read token) or run `hf auth login`"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        hint = (
            " (gated models answer so without a token: set HF_TOKEN)" if gated or not os.environ.get("HF_TOKEN") else ""
        )
        return ConfigError(f"'{label}': the hub has no repository {repo_id} this account can see{hint}")
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return ConfigError(
            f"'{label}': {repo_id} is not in the hub cache and the hub cannot be asked; "
            "use --model local-dir:FOLDER or --weights FILE"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return ConfigError(f"'{label}': the hub refused {repo_id} ({first})")
    return None
