"""The one gateway between hcd and the official ``kaggle`` client's Python API.

Nothing else in hcd imports ``kaggle`` or speaks HTTP to Kaggle. This module makes the client safe to use
from a CLI: it checks credentials *before* importing the client (whose import authenticates, may print help
and calls ``exit``), swallows its stdout chatter, honours ``KAGGLE_API_ENVIRONMENT`` at call time, and with
``calls`` puts every network step under a time limit with bounded retries, turning every failure into a
one-line ``KaggleError`` that never contains a key or token.

API (for commands such as download, submit, kernels, datasets)::

    api = get_api()                 # the authenticated kaggle.KaggleApi (raises KaggleError without credentials)
    username()                      # the Kaggle user name the credentials belong to
    result = call("submit to competition 'x'", lambda: api.competition_submit(path, msg, "x"),
                  competition="x", not_found="competition 'x'")
    check_reported("push kernel 'me/k'", result)   # raise if an error came back inside a 200 ({error}/status Error)
    redact(text)                    # text with every known credential replaced by '***'
    download_competition_archive("x", folder, on_bytes=cb)  # the competition zip, streamed to disk

``timeout`` is always the per-call limit (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s); see ``calls`` for
``call``, its retries and its errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle.calls import (
    DEFAULT_TRANSFER_TIMEOUT,
    bounded,
    call,
    check_reported,
    default_timeout,
    to_error,
)
from hcd_kit.kaggle.credentials import NO_CREDENTIALS, config_dir, credentials_source, read_kaggle_json, redact

__all__ = [
    "DEFAULT_TRANSFER_TIMEOUT",
    "call",
    "check_reported",
    "credentials_source",
    "default_timeout",
    "download_competition_archive",
    "get_api",
    "redact",
    "username",
]

_lock = threading.Lock()
_auth_fingerprint: str | None = None
# The oldest client hcd works with; keep equal to pyproject's `kaggle>=` floor (tests/test_submit.py checks).
# Older ones list submissions without page_number, push kernels without machine_shape, and (before 2.2.2)
# read only the first page of a kernel's output.
KAGGLE_FLOOR = "2.2.2"


def _version_tuple(version: str) -> tuple[int, ...]:
    release = re.match(r"\d+(?:\.\d+)*", version)  # "2.2.5", "1.7.4.5", "2.3.0rc1" -> its release numbers
    return tuple(int(p) for p in release.group(0).split(".")) if release else (0,)


def check_client_version() -> None:
    """Refuse an installed ``kaggle`` client older than ``KAGGLE_FLOOR`` (pip keeps an old one that
    satisfied an older range). Reads the installed version without importing the client."""
    try:
        installed = importlib.metadata.version("kaggle")
    except importlib.metadata.PackageNotFoundError:
        return  # not installed at all: the import below says so
    if _version_tuple(installed) < _version_tuple(KAGGLE_FLOOR):
        raise KaggleError(
            f"the installed kaggle client is {installed}, older than the {KAGGLE_FLOOR} hcd needs; "
            f'upgrade it with: pip install -U "kaggle>={KAGGLE_FLOOR}"'
        )


def _import_client(limit: float) -> Any:
    """Import ``kaggle`` once, its import-time printing swallowed and its config-dir race avoided.

    The import authenticates, and with a ``KAGGLE_API_TOKEN`` that is a network call, so it runs under the
    same time limit as every other call."""
    if "kaggle" in sys.modules:
        api = getattr(sys.modules["kaggle"], "api", None)
        if api is None:  # an import that timed out earlier is still stuck in its thread
            raise KaggleError(
                "the kaggle client is still starting from an earlier call that got no answer; run the command again"
            )
        return api
    check_client_version()  # before the import, which would already talk to Kaggle
    # The client creates its config dir with exists-then-makedirs at import; two hcd processes starting
    # together can race on it, so create it first.
    with contextlib.suppress(OSError):
        config_dir().mkdir(parents=True, exist_ok=True)
    try:
        bounded("check the Kaggle credentials", _import_kaggle, limit)
    except KaggleError:
        raise
    except Exception as exc:  # the client's own import failed, e.g. a broken install
        raise KaggleError(redact(f"could not import the kaggle client: {type(exc).__name__}: {exc}")) from exc
    return sys.modules["kaggle"].api


def _import_kaggle() -> None:
    import kaggle  # noqa: F401,PLC0415  (lazy on purpose: import authenticates and may print)


def _fingerprint(api: Any) -> str:
    parts = [os.environ.get(k, "") for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HOME")]
    parts += [str(api.args), api.config, json.dumps(read_kaggle_json(), sort_keys=True)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()  # hashed: never keep a key in clear


def get_api(timeout: float | None = None) -> Any:
    """The authenticated ``kaggle.KaggleApi``; re-reads credentials and the endpoint if the env changed.

    ``timeout`` (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s) bounds the import and the authentication, which
    are network calls with token credentials."""
    global _auth_fingerprint
    credentials_source()
    limit = default_timeout() if timeout is None else float(timeout)
    with _lock:
        api = _import_client(limit)
        # The client decides local-vs-production once at import; re-decide at every call so one process (a
        # test session, a notebook) follows the current KAGGLE_API_ENVIRONMENT.
        args = [a for a in api.args if a != "--local"]
        if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST":
            args.append("--local")
        api.args = args
        api.config_dir = str(config_dir())
        api.config = os.path.join(api.config_dir, "kaggle.json")
        fingerprint = _fingerprint(api)
        if fingerprint != _auth_fingerprint:
            _authenticate(api, limit)
            _auth_fingerprint = fingerprint
    return api


def _authenticate(api: Any, limit: float) -> None:
    api.config_values = {}
    try:
        bounded("check the Kaggle credentials", api.authenticate, limit)
    except KaggleError:
        raise
    except SystemExit:
        raise KaggleError(NO_CREDENTIALS) from None
    except Exception as exc:  # a token introspection that failed on the network
        raise to_error("check the Kaggle credentials", exc) from exc


def username() -> str:
    """The Kaggle user name of the current credentials (e.g. the owner of pushed kernels and datasets)."""
    api = get_api()
    name = (api.config_values or {}).get("username")
    if not name:
        raise KaggleError("the Kaggle credentials carry no user name: set KAGGLE_USERNAME")
    return str(name)


def download_competition_archive(
    competition: str,
    folder: str | os.PathLike[str],
    *,
    on_bytes: Callable[[int, int | None], None] | None = None,
    stall_timeout: float | None = None,
    retries: int | None = None,
) -> Path:
    """Stream the competition's zip to ``folder/<competition>.zip`` and return its path.

    The client resumes a partial file it wrote itself (it keeps a ``.kaggle-partial`` marker beside it).
    ``on_bytes(done, total)`` is called from the caller's thread about 5 times a second; ``stall_timeout``
    (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s) bounds the time without a new byte, not the whole download.
    The file is complete (size checked by the client) when this returns.
    """
    api = get_api()
    outfile = Path(folder) / f"{competition}.zip"
    outfile.parent.mkdir(parents=True, exist_ok=True)
    total: dict[str, int | None] = {"bytes": None}

    def fetch() -> None:
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

        with api.build_kaggle_client() as client:
            request = ApiDownloadDataFilesRequest()
            request.competition_name = competition
            response = client.competitions.competition_api_client.download_data_files(request)
            size = response.headers.get("Content-Length")
            total["bytes"] = int(size) if size else None
            api.download_file(response, str(outfile), client.http_client(), quiet=True, resume=True)

    def beat() -> int:
        done = outfile.stat().st_size if outfile.exists() else -1
        if on_bytes is not None:
            on_bytes(max(done, 0), total["bytes"])
        return done

    call(
        f"download competition '{competition}'",
        fetch,
        timeout=stall_timeout,
        retries=retries,
        heartbeat=beat,
        not_found=f"competition '{competition}'",
        competition=competition,
    )
    beat()
    return outfile
