"""Exception types hcd raises on purpose.

Every error a user can cause (bad input, missing files, Kaggle refusing a call) is an ``HcdError`` whose
message is one actionable line. The CLI prints that line to stderr and exits non-zero; ``hcd --debug``
shows the traceback instead. Anything else escaping is a bug in hcd.
"""

from __future__ import annotations


class HcdError(Exception):
    """Base class: ``str(err)`` is the one line the user sees."""

    exit_code = 1


class ConfigError(HcdError):
    """A config file or flag is invalid (unknown key, wrong type, out of range)."""

    exit_code = 2


class DataError(HcdError):
    """Input data is missing, corrupt or inconsistent (images, CSVs, packed store, folds)."""


class KaggleError(HcdError):
    """A Kaggle API call failed, was refused, or did not finish in time."""


class TrainingError(HcdError):
    """Training cannot go on (e.g. losses stay non-finite)."""


class DiskFullError(HcdError):
    """A write found no room on its disk (or hit a quota); nothing half-written is kept."""


class LockedError(HcdError):
    """A folder is being written by another hcd process (its lock names the holder)."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is (the CLI turns them into this): ``signum`` sets the exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
