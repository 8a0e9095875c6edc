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
