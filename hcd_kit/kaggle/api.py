"""The one gateway between hcd and the official ``kaggle`` client's Python API.

Nothing else in hcd imports ``kaggle`` or speaks HTTP to Kaggle. This module makes the client safe to use
from a CLI: it checks credentials *before* importing the client (whose import authenticates, may print help
and calls ``exit``), swallows its stdout chatter, honours ``KAGGLE_API_ENVIRONMENT`` at call time, puts every
network step under an outer time limit with bounded retries, and turns every failure into a one-line
``KaggleError`` that never contains a key or token.

API (for commands such as download, submit, kernels, datasets)::

    api = get_api()                 # the authenticated kaggle.KaggleApi (raises KaggleError without credentials)
    username()                      # the Kaggle user name the credentials belong to
    result = call("submit to competition 'x'", lambda: api.competition_submit(path, msg, "x"),
                  competition="x", not_found="competition 'x'")
    check_reported("push kernel 'me/k'", result)   # raise if an error came back inside a 200 ({error}/status Error)
    redact(text)                    # text with every known credential replaced by '***'
    download_competition_archive("x", folder, on_bytes=cb)  # the competition zip, streamed to disk

``call(what, fn, *, timeout, retries, heartbeat, not_found, competition)`` runs the zero-argument ``fn`` in a
worker thread. ``timeout`` (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s) bounds the wait; with ``heartbeat`` (a
function polled every 0.2 s) it bounds the time *without progress* instead, for long downloads. A call that
times out leaves its worker thread behind (Python cannot kill it); the command then exits. Failures with HTTP
429 or 5xx are retried ``retries`` times (default ``$HCD_KAGGLE_RETRIES`` or 3) with exponential backoff from
``$HCD_KAGGLE_BACKOFF`` seconds (default 2, honouring ``Retry-After``); nothing else is retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from hcd_kit.errors import KaggleError

T = TypeVar("T")

ENV_TIMEOUT = "HCD_KAGGLE_TIMEOUT"
ENV_RETRIES = "HCD_KAGGLE_RETRIES"
ENV_BACKOFF = "HCD_KAGGLE_BACKOFF"
DEFAULT_TIMEOUT = 120.0  # seconds without an answer; generous, Kaggle's RPCs usually answer in < 2 s
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 2.0
MAX_BACKOFF = 60.0

NO_CREDENTIALS = (
    "no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY, or save kaggle.json from "
    "https://www.kaggle.com/settings/api as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_API_TOKEN"
)

_lock = threading.Lock()
_auth_fingerprint: str | None = None


# ---------------------------------------------------------------------------------------------- settings
def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise KaggleError(f"{name}={raw!r} is not a number; set it to seconds/counts such as 30") from None
    if value < 0:
        raise KaggleError(f"{name}={raw!r} must not be negative")
    return value


def default_timeout() -> float:
    return _env_number(ENV_TIMEOUT, DEFAULT_TIMEOUT)


def default_retries() -> int:
    return int(_env_number(ENV_RETRIES, DEFAULT_RETRIES))


# ---------------------------------------------------------------------------------------------- credentials
def config_dir() -> Path:
    """Where the client looks for kaggle.json (same rule as the client: env, ~/.kaggle, XDG)."""
    explicit = os.environ.get("KAGGLE_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    legacy = Path.home() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _read_kaggle_json() -> dict[str, str]:
    path = config_dir() / "kaggle.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_file() -> Path | None:
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return path
    return None


def credentials_source() -> str:
    """Name where credentials come from, or raise the one-line 'how to provide them' error."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    token = _token_file()
    if token is not None:
        return str(token)
    stored = _read_kaggle_json()
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    if user and key:
        return "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(config_dir() / "kaggle.json")
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return "~/.kaggle/credentials.json"
    raise KaggleError(NO_CREDENTIALS)


def _secrets() -> list[str]:
    found = [os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", ""),
             str(_read_kaggle_json().get("key", ""))]
    token = _token_file()
    if token is not None:
        found.append(token.read_text().strip())
    if "kaggle" in sys.modules:
        values = getattr(sys.modules["kaggle"].api, "config_values", {}) or {}
        found += [str(values.get("key", "")), str(values.get("token", ""))]
    return [s for s in found if len(s) >= 4]


def redact(text: str) -> str:
    """``text`` with every credential hcd can know of, and any auth header value, replaced by ``***``."""
    for secret in sorted(set(_secrets()), key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._\-]+", r"\1 ***", text)


# ---------------------------------------------------------------------------------------------- the client
def _import_client(limit: float) -> Any:
    """Import ``kaggle`` once, with its import-time printing captured and its config-dir race avoided.

    The import authenticates, and with a ``KAGGLE_API_TOKEN`` that is a network call, so it runs under the
    same time limit as every other call."""
    if "kaggle" in sys.modules:
        api = getattr(sys.modules["kaggle"], "api", None)
        if api is None:  # an import that timed out earlier is still stuck in its thread
            raise KaggleError("the kaggle client is still starting from an earlier call that got no answer; "
                              "run the command again")
        return api
    # The client creates its config dir with exists-then-makedirs at import; two hcd processes starting
    # together can race on it, so create it first.
    with contextlib.suppress(OSError):
        config_dir().mkdir(parents=True, exist_ok=True)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            _bounded("check the Kaggle credentials", _import_kaggle, limit, None)
    except KaggleError:
        raise
    except Exception as exc:  # the client's own import failed, e.g. a broken install
        raise KaggleError(redact(f"could not import the kaggle client: {type(exc).__name__}: {exc}")) from exc
    return sys.modules["kaggle"].api


def _import_kaggle() -> None:
    import kaggle  # noqa: F401,PLC0415  (lazy on purpose: import authenticates and may print)


def _fingerprint(api: Any) -> str:
    parts = [os.environ.get(k, "") for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HOME")]
    parts += [str(api.args), api.config, json.dumps(_read_kaggle_json(), sort_keys=True)]
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
        _bounded("check the Kaggle credentials", api.authenticate, limit, None)
    except KaggleError:
        raise
    except SystemExit:
        raise KaggleError(NO_CREDENTIALS) from None
    except Exception as exc:  # a token introspection that failed on the network
        raise _to_error("check the Kaggle credentials", exc, _status_of(exc), 1, None, None) from exc


def username() -> str:
    """The Kaggle user name of the current credentials (e.g. the owner of pushed kernels and datasets)."""
    api = get_api()
    name = (api.config_values or {}).get("username")
    if not name:
        raise KaggleError("the Kaggle credentials carry no user name: set KAGGLE_USERNAME")
    return str(name)


# ---------------------------------------------------------------------------------------------- calls
def call(
    what: str,
    fn: Callable[[], T],
    *,
    timeout: float | None = None,
    retries: int | None = None,
    heartbeat: Callable[[], Any] | None = None,
    not_found: str | None = None,
    competition: str | None = None,
) -> T:
    """Run one network step ``fn()`` under a time limit and bounded retries; failures -> ``KaggleError``.

    ``what`` completes "could not ..." / "Kaggle refused to ..." (e.g. "download competition 'x'");
    ``not_found`` names the thing a 404 means is unknown; ``competition`` adds the rules link to a 403.
    """
    limit = default_timeout() if timeout is None else float(timeout)
    tries = (default_retries() if retries is None else int(retries)) + 1
    for attempt in range(1, tries + 1):
        try:
            return _bounded(what, fn, limit, heartbeat)
        except KaggleError:
            raise
        except Exception as exc:
            status = _status_of(exc)
            if attempt < tries and status is not None and (status == 429 or status >= 500):
                time.sleep(_backoff(attempt, exc))
                continue
            raise _to_error(what, exc, status, attempt, not_found, competition) from exc
    raise AssertionError("unreachable")


def _bounded(what: str, fn: Callable[[], T], limit: float, heartbeat: Callable[[], Any] | None) -> T:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="hcd-kaggle-call", daemon=True)
    # stdout is swapped here, in the caller's thread, so it is restored even if the worker never returns.
    with contextlib.redirect_stdout(io.StringIO()):
        worker.start()
        last_seen: Any = object()
        last_change = time.monotonic()
        while True:
            worker.join(0.2 if heartbeat else max(0.0, limit - (time.monotonic() - last_change)))
            if not worker.is_alive():
                break
            if heartbeat is not None:
                seen = heartbeat()
                if seen != last_seen:
                    last_seen, last_change = seen, time.monotonic()
            if time.monotonic() - last_change >= limit:
                raise KaggleError(
                    f"no answer from Kaggle within {limit:g} s while trying to {what}; check your connection "
                    f"and run the command again (the limit is --timeout or ${ENV_TIMEOUT})"
                )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call; for an error inside a 200 body, the body's ``code``."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None and status < 400:
        with contextlib.suppress(Exception):
            code = response.json().get("code")
            if isinstance(code, int):
                return code
    return status


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    with contextlib.suppress(Exception):
        message = response.json().get("message")
        if message:
            return str(message)
    text = str(exc)
    return "" if re.match(r"^\d{3} \w+ Error", text) else text  # requests' own text repeats the status/URL


def _backoff(attempt: int, exc: BaseException) -> float:
    base = _env_number(ENV_BACKOFF, DEFAULT_BACKOFF)
    delay = base * 2 ** (attempt - 1)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    with contextlib.suppress(TypeError, ValueError):
        delay = max(delay, float(headers.get("Retry-After")))
    return min(delay, MAX_BACKOFF)


def _to_error(what: str, exc: BaseException, status: int | None, attempts: int, not_found: str | None,
              competition: str | None) -> KaggleError:
    detail = _server_message(exc)
    said = f": {detail}" if detail else ""
    if status == 401:
        msg = (f"Kaggle refused to {what} (HTTP 401, not authenticated{said}); check KAGGLE_USERNAME/KAGGLE_KEY "
               "or ~/.kaggle/kaggle.json, a new key is at https://www.kaggle.com/settings/api")
    elif status == 403:
        msg = f"Kaggle refused to {what} (HTTP 403, forbidden{said}); check that your key has access"
        if competition:
            msg += f" and accept the competition rules at https://www.kaggle.com/c/{competition}/rules"
    elif status == 404:
        msg = (f"Kaggle does not know {not_found or 'what was asked for'} (HTTP 404) while trying to {what}; "
               "check the name for typos")
    elif status == 429:
        msg = (f"Kaggle kept rate-limiting (HTTP 429) after {attempts} attempts to {what}; "
               "wait a few minutes and run the command again")
    elif status is not None and status >= 500:
        msg = (f"Kaggle failed to {what} (HTTP {status}{said}) after {attempts} attempts; "
               "Kaggle may be having trouble, try again later")
    elif status is not None:
        msg = f"Kaggle refused to {what} (HTTP {status}{said})"
    elif _is_connection_error(exc):
        msg = f"could not reach Kaggle to {what} ({type(exc).__name__}); check your network and proxy settings"
    else:
        msg = f"could not {what}: {detail or type(exc).__name__}"
    return KaggleError(redact(" ".join(msg.split())))


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "ProtocolError", "ChunkedEncodingError"})


def check_reported(what: str, response: T) -> T:
    """Raise ``KaggleError`` if ``response`` reports a failure the client let through (``error`` set,
    ``status == "Error"``, or the client's "Could not submit" stand-in); else return it unchanged."""
    error = getattr(response, "error", None)
    status = getattr(response, "status", None)
    message = getattr(response, "message", None)
    if error:
        raise KaggleError(redact(f"Kaggle reported an error while trying to {what}: {error}"))
    if isinstance(status, str) and status.lower() == "error":
        raise KaggleError(redact(f"Kaggle reported status 'Error' while trying to {what}"))
    if isinstance(message, str) and message.startswith("Could not submit"):
        raise KaggleError(f"could not {what}: the file upload failed; run the command again")
    return response


# ---------------------------------------------------------------------------------------------- downloads
def download_competition_archive(
    competition: str,
    folder: str | os.PathLike[str],
    *,
    on_bytes: Callable[[int, int | None], None] | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> Path:
    """Stream the competition's zip to ``folder/<competition>.zip`` and return its path.

    The client resumes a partial file it wrote itself (it keeps a ``.kaggle-partial`` marker beside it).
    ``on_bytes(done, total)`` is called from the caller's thread about 5 times a second; ``timeout`` bounds
    the time without a new byte. The file is complete (size checked by the client) when this returns.
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

    call(f"download competition '{competition}'", fetch, timeout=timeout, retries=retries, heartbeat=beat,
         not_found=f"competition '{competition}'", competition=competition)
    beat()
    return outfile
