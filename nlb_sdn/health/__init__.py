"""Health and load (H&L): the per-host table, the signed message protocol and the deployment key (docs/health.md)."""

from __future__ import annotations

import os

MIN_KEY_SIZE = 16


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The deployment key: the file's bytes without surrounding ASCII whitespace; raise ValueError if too short."""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"key is {len(key)} bytes, at least {MIN_KEY_SIZE} are needed")
    return key
