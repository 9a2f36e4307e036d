"""Durable operator state: the VIPs (members, weights, drain states) and their ids, versioned, in a file or Redis.

The config file seeds an empty store; from then on the store is the truth for ``vips``, while ``controller`` always
comes from the config file, and ``fabric`` too until forwarders are added or removed through REST (the store then
holds the whole fabric section). Every change is a compare-and-set on the version
(:class:`StaleVersion` when another writer got there first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

STATE_FORMAT = 1
"""The layout version of a stored state document."""
STATE_SUFFIX = ".state.json"
"""The default state file is the config file's path with this suffix."""


class StateError(RuntimeError):
    """The stored state cannot be read or used; names where it lives (file, or Redis URL and key) and why."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


class StaleVersion(Exception):
    """A compare-and-set lost: the store (or this controller) holds another version than the one expected."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"the operator state is at version {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class StoredState:
    """One version of the operator state: the VIPs as plain data and the id (in cookies) of each VIP by name."""

    version: int
    vips: list[dict[str, Any]]
    vip_ids: dict[str, int] = field(default_factory=dict)
    fabric: dict[str, Any] | None = None
    """The fabric section once forwarders were added or removed through REST; None: the config file's."""

    def document(self) -> dict[str, Any]:
        """The state as the JSON document stores keep (``fabric`` only when the store holds one)."""
        document = {"format": STATE_FORMAT, "version": self.version, "vips": self.vips, "vip_ids": self.vip_ids}
        return document if self.fabric is None else {**document, "fabric": self.fabric}


def state_from_document(document: Any, location: str) -> StoredState:
    """A stored document checked for shape (the VIPs themselves are validated with the config); StateError if bad."""
    if not isinstance(document, dict):
        raise StateError(location, "not a state document (expected a JSON object)")
    if document.get("format") != STATE_FORMAT:
        raise StateError(location, f"format: expected {STATE_FORMAT}, got {document.get('format')!r}")
    version, vips, vip_ids = document.get("version"), document.get("vips"), document.get("vip_ids")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateError(location, f"version: expected a whole number >= 1, got {version!r}")
    if not isinstance(vips, list) or not all(isinstance(vip, dict) for vip in vips):
        raise StateError(location, "vips: expected a list of VIP objects")
    if not isinstance(vip_ids, dict) or not all(
        isinstance(vip_id, int) and not isinstance(vip_id, bool) for vip_id in vip_ids.values()
    ):
        raise StateError(location, "vip_ids: expected an object of whole numbers")
    fabric = document.get("fabric")
    if fabric is not None and not isinstance(fabric, dict):
        raise StateError(location, "fabric: expected a fabric object")
    return StoredState(version, vips, vip_ids, fabric)


class ConfigStore(Protocol):
    """Where the operator state is kept: load it, change it by compare-and-set, and follow others' changes."""

    location: str
    """Where the state lives, for errors and logs (a file path, or the Redis URL without password and the key)."""

    def load(self) -> StoredState | None:
        """The stored state, None while the store is empty; StateError when it cannot be read or is corrupt."""
        ...

    def save(
        self,
        vips: list[dict[str, Any]],
        vip_ids: dict[str, int],
        expected: int | None,
        fabric: dict[str, Any] | None = None,
    ) -> int:
        """Store a new version (with ``fabric`` when REST changed it) if the stored one is ``expected`` (None: any);
        the new version, or StaleVersion."""
        ...

    def changed(self) -> bool:
        """Whether the change feed says another writer may have stored a new version since the last call."""
        ...

    def close(self) -> None:
        """Release connections (a no-op for a file)."""
        ...


def state_path(config_path: str, path: str = "") -> str:
    """The state file: ``path`` (relative to the config file's directory), or ``<config_path>.state.json``."""
    if not path:
        return os.path.abspath(config_path) + STATE_SUFFIX
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), path)
