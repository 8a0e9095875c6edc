"""Waiting for Kaggle to finish something (a submission's scoring, a kernel's session): poll with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from hcd_kit.errors import KaggleError
from hcd_kit.kaggle.calls import MAX_BACKOFF

T = TypeVar("T")
GROWTH = 1.5  # each wait is 1.5 times the last, up to MAX_BACKOFF: quick answers early, few calls on long runs


def poll_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    wait_timeout: float,
    poll: float,
    on_poll: Callable[[T], None] | None = None,
    still: Callable[[T], str],
) -> T:
    """``fetch()`` until ``done(value)``, waiting ``poll`` s first and backing off to 60 s; return the value.

    ``on_poll(value)`` sees every value fetched. When the next wait would end after ``wait_timeout`` s, raise
    ``KaggleError(still(last value))``.
    """
    deadline = time.monotonic() + wait_timeout
    delay = poll
    while True:
        value = fetch()
        if on_poll:
            on_poll(value)
        if done(value):
            return value
        if time.monotonic() + delay > deadline:
            raise KaggleError(still(value))
        time.sleep(delay)
        delay = min(delay * GROWTH, MAX_BACKOFF)
