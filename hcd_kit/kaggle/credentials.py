"""Where the Kaggle credentials come from, and keeping them out of every message hcd shows.

``credentials_source()`` names the source the official client will use (``KAGGLE_API_TOKEN``, a token
file, ``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``kaggle.json``) or raises the one-line "how to provide them"
``KaggleError``; it reads files only, so it runs before the client is imported. ``redact(text)`` replaces
every credential hcd can know of, and any auth header value, by ``***``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from hcd_kit.errors import KaggleError

NO_CREDENTIALS = (
    "no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY, or save kaggle.json from "
    "https://www.kaggle.com/settings/api as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_API_TOKEN"
)


def config_dir() -> Path:
    """Where the client looks for kaggle.json (same rule as the client: env, ~/.kaggle, XDG)."""
    explicit = os.environ.get("KAGGLE_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    legacy = Path.home() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def read_kaggle_json() -> dict[str, str]:
    """The contents of kaggle.json, or {} when it is absent or unreadable."""
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
    stored = read_kaggle_json()
    user = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    if user and key:
        return "KAGGLE_USERNAME/KAGGLE_KEY" if os.environ.get("KAGGLE_KEY") else str(config_dir() / "kaggle.json")
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return "~/.kaggle/credentials.json"
    raise KaggleError(NO_CREDENTIALS)


def _secrets() -> list[str]:
    found = [
        os.environ.get("KAGGLE_KEY", ""),
        os.environ.get("KAGGLE_API_TOKEN", ""),
        str(read_kaggle_json().get("key", "")),
    ]
    token = _token_file()
    if token is not None:
        found.append(token.read_text().strip())
    if "kaggle" in sys.modules:  # what the imported client holds (never imported from here)
        client = getattr(sys.modules["kaggle"], "api", None)  # None while an import is still stuck
        values = getattr(client, "config_values", None) or {}
        found += [str(values.get("key", "")), str(values.get("token", ""))]
    return [s for s in found if len(s) >= 4]


def redact(text: str) -> str:
    """``text`` with every credential hcd can know of, and any auth header value, replaced by ``***``."""
    for secret in sorted(set(_secrets()), key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._\-]+", r"\1 ***", text)
