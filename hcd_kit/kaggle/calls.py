"""One network step to Kaggle: under a time limit, with bounded retries, failures as one-line errors.

``call(what, fn, *, timeout, retries, heartbeat, not_found, competition)`` runs the zero-argument ``fn`` in a
worker thread. ``timeout`` (default ``$HCD_KAGGLE_TIMEOUT`` or 120 s) bounds the wait; with ``heartbeat`` (a
function polled every 0.2 s) it bounds the time *without progress* instead, for long downloads. A call that
times out leaves its worker thread behind (Python cannot kill it); the command then exits. Failures with HTTP
429 or 5xx are retried ``retries`` times (default ``$HCD_KAGGLE_RETRIES`` or 3) with exponential backoff from
``$HCD_KAGGLE_BACKOFF`` seconds (default 2, honouring ``Retry-After``); nothing else is retried. Every
failure becomes a ``KaggleError`` whose message completes "could not <what>" and never holds a credential.
An error the client raised while handling an HTTP error (kaggle >= 2.0.2 turns a 401/403 from
``kernels_status``/``kernels_output`` into a ``ValueError`` about ``benchmark_task_slug``) is judged by that
HTTP error, so it gets hcd's own hint.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle.credentials import redact

T = TypeVar("T")

ENV_TIMEOUT = "HCD_KAGGLE_TIMEOUT"
ENV_RETRIES = "HCD_KAGGLE_RETRIES"
ENV_BACKOFF = "HCD_KAGGLE_BACKOFF"
DEFAULT_TIMEOUT = 120.0  # seconds without an answer; generous, Kaggle's RPCs usually answer in < 2 s
DEFAULT_TRANSFER_TIMEOUT = 3600.0  # a whole upload or download of many files: one call of the client
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 2.0
MAX_BACKOFF = 60.0  # the longest wait between two tries, and between two polls


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
    """The per-call time limit: ``$HCD_KAGGLE_TIMEOUT`` or 120 s."""
    return _env_number(ENV_TIMEOUT, DEFAULT_TIMEOUT)


def default_retries() -> int:
    return int(_env_number(ENV_RETRIES, DEFAULT_RETRIES))


def call(
    what: str,
    fn: Callable[[], T],
    *,
    timeout: float | None = None,
    retries: int | None = None,
    heartbeat: Callable[[], Any] | None = None,
    not_found: str | None = None,
    competition: str | None = None,
    if_missing: str | None = None,
) -> T:
    """Run one network step ``fn()`` under a time limit and bounded retries; failures -> ``KaggleError``.

    ``what`` completes "could not ..." / "Kaggle refused to ..." (e.g. "download competition 'x'");
    ``not_found`` names the thing a 404 means is unknown; ``competition`` adds the rules link to a 403;
    ``if_missing`` is one more thing a 404 may mean (e.g. that a competition takes no more submissions).
    """
    limit = default_timeout() if timeout is None else float(timeout)
    tries = (default_retries() if retries is None else int(retries)) + 1
    for attempt in range(1, tries + 1):
        try:
            return bounded(what, fn, limit, heartbeat)
        except KaggleError:
            raise
        except Exception as exc:
            status = _status_of(exc)
            if attempt < tries and status is not None and (status == 429 or status >= 500):
                time.sleep(_backoff(attempt, exc))
                continue
            raise to_error(what, exc, attempt, not_found, competition, if_missing) from exc
    raise AssertionError("unreachable")


def bounded(what: str, fn: Callable[[], T], limit: float, heartbeat: Callable[[], Any] | None = None) -> T:
    """``fn()`` in a worker thread with stdout swallowed; ``KaggleError`` after ``limit`` s without an answer
    (without a change of ``heartbeat()``, when given). Exceptions of ``fn`` are raised unchanged."""
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


def _http_error(exc: BaseException) -> BaseException:
    """``exc``, or the HTTP error it was raised while handling (the client re-raises some 401/403 as a
    ``ValueError`` whose text misleads; the HTTP error underneath says what happened)."""
    if getattr(exc, "response", None) is not None:
        return exc
    for inner in (exc.__cause__, exc.__context__):
        if inner is not None and getattr(inner, "response", None) is not None:
            return inner
    return exc


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call; for an error inside a 200 body, the body's ``code``."""
    exc = _http_error(exc)
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None and status < 400:
        with contextlib.suppress(Exception):
            code = response.json().get("code")
            if isinstance(code, int):
                return code
    return status


def _server_message(exc: BaseException) -> str:
    exc = _http_error(exc)
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
    headers = getattr(getattr(_http_error(exc), "response", None), "headers", None) or {}
    with contextlib.suppress(TypeError, ValueError):
        delay = max(delay, float(headers.get("Retry-After")))
    return min(delay, MAX_BACKOFF)


def to_error(
    what: str,
    exc: BaseException,
    attempts: int = 1,
    not_found: str | None = None,
    competition: str | None = None,
    if_missing: str | None = None,
) -> KaggleError:
    """The one-line ``KaggleError`` for the failure ``exc`` of trying to ``what`` (``attempts`` times)."""
    status = _status_of(exc)
    detail = _server_message(exc)
    said = f": {detail}" if detail else ""
    if status == 401:
        msg = (
            f"Kaggle refused to {what} (HTTP 401, not authenticated{said}); check KAGGLE_USERNAME/KAGGLE_KEY "
            "or ~/.kaggle/kaggle.json, a new key is at https://www.kaggle.com/settings/api"
        )
    elif status == 403:
        msg = (
            f"Kaggle refused to {what} (HTTP 403, forbidden{said}); check that the account of your key "
            f"has access to {not_found or 'it'}"
        )
        if competition:
            msg += f" and accept the competition rules at https://www.kaggle.com/c/{competition}/rules"
        elif not_found:
            msg += " (a private one is visible only to its owner and collaborators) and that the name is right"
    elif status == 404:
        msg = (
            f"Kaggle does not know {not_found or 'what was asked for'} (HTTP 404) while trying to {what}; "
            "check the name for typos"
        )
        if if_missing:
            msg += f", and {if_missing}"
    elif status == 429:
        msg = (
            f"Kaggle kept rate-limiting (HTTP 429) after {attempts} attempts to {what}; "
            "wait a few minutes and run the command again"
        )
    elif status is not None and status >= 500:
        msg = (
            f"Kaggle failed to {what} (HTTP {status}{said}) after {attempts} attempts; "
            "Kaggle may be having trouble, try again later"
        )
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


@contextlib.contextmanager
def interrupts_held():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it: for a push and the record of it.

    A push the server received whose answer (or record) was cut off by Ctrl-C would be pushed again by a
    rerun: a second GPU session. Outside the main thread (where signals cannot be handled) it holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            raise KeyboardInterrupt
