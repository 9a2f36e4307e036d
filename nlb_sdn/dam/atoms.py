"""Atoms of the DAM table 2206 (FIG. 23B), their key layout, and the interface both storage backends implement."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

LOG = logging.getLogger(__name__)
KINDS = {"conn": "route", "sess": "session"}
"""Key prefix (before the first ``:``) to atom kind; any other key is of kind ``other``."""
ROUTE_PREFIX = "conn:"
"""Every route atom's key starts with this."""
SESSION_PREFIX = "sess:"
"""Every session atom's key starts with this."""
SESSION_TYPES = ("http_cookie", "tls_session_id", "client_ip", "app")
ChangeOp = Literal["put", "delete", "expire"]
CHANGE_OPS: tuple[ChangeOp, ...] = ("put", "delete", "expire")
BAD_ATOM_LOG_LIMIT = 10_000
"""Distinct atom keys a :class:`BadAtomLog` logs; beyond them bad atoms are only counted (the log stays bounded)."""


def route_key(cip: str, cport: int, vip: str, vport: int) -> str:
    """The key of a route atom: ``conn:tcp:<cip>:<cport>:<vip>:<vport>``, IPv6 addresses in brackets
    (``conn:tcp:[2001:db8::1]:40000:[2001:db8::100]:80``)."""
    return f"{ROUTE_PREFIX}tcp:{_key_address(cip)}:{cport}:{_key_address(vip)}:{vport}"


def _key_address(address: str) -> str:
    """An address as a key spells it: IPv6 in brackets, so the key's colons still split it."""
    return f"[{address}]" if ":" in address else address


def parse_route_key(key: str) -> tuple[str, int, str, int]:
    """The connection a route atom's key names: (client ip, client port, VIP ip, VIP port); ValueError if malformed."""
    prefix, _, rest = key.partition(ROUTE_PREFIX)
    proto, _, rest = rest.partition(":")
    if prefix or proto != "tcp":
        raise ValueError(f"not a route atom key: {key!r}")
    cip, rest = _split_address(rest, key)
    cport, _, rest = rest.partition(":")
    vip, vport = _split_address(rest, key)
    if not vport:
        raise ValueError(f"not a route atom key: {key!r}")
    return cip, int(cport), vip, int(vport)


def _split_address(text: str, key: str) -> tuple[str, str]:
    """A key's leading address (bracketed IPv6 or IPv4) and the rest after its ``:``."""
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]:")
    else:
        address, bracket, rest = text.partition(":")
    if not bracket or not address:
        raise ValueError(f"not a route atom key: {key!r}")
    return address, rest


def session_key(stype: str, sid: str) -> str:
    """The key of a session atom: ``sess:<type>:<id>`` (``type`` is one of :data:`SESSION_TYPES`)."""
    if stype not in SESSION_TYPES:
        raise ValueError(f"session type {stype!r}: expected one of {', '.join(SESSION_TYPES)}")
    if not sid:
        raise ValueError("session id must not be empty")
    return any_type_session_key(stype, sid)


def any_type_session_key(stype: str, sid: str) -> str:
    """The key of a session atom of any type, an application's own included: ``sess:<type>:<id>``, unchecked.

    Agents may report session types beyond :data:`SESSION_TYPES` (H&L accepts ``[a-z][a-z0-9_]*``), and the session
    table and the request router name those sessions by this key too.
    """
    return f"{SESSION_PREFIX}{stype}:{sid}"


def kind_of(key: str) -> str:
    """The kind of the atom under ``key``: ``route``, ``session`` or ``other``."""
    return KINDS.get(key.partition(":")[0], "other")


def expiry(ttl: float | None, now: float) -> float | None:
    """The absolute expiry ``now + ttl`` as a float (``None`` for no expiry); ``ttl`` must be a finite number > 0."""
    if ttl is None:
        return None
    if type(ttl) not in (int, float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl: expected a finite number > 0 or None, got {ttl!r}")
    return float(now + ttl)


def pack_data(data: dict[str, Any]) -> bytes:
    """The msgpack encoding of an atom's data (TypeError for anything that is not a dict msgpack can carry)."""
    if not isinstance(data, dict):
        raise TypeError(f"atom data must be a dict, got {type(data).__name__}")
    return msgpack.packb(data, use_bin_type=True)


def unpack_data(raw: bytes) -> dict[str, Any]:
    """The data of an atom from its msgpack encoding (a fresh dict; int map keys are kept)."""
    data = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if not isinstance(data, dict):
        raise TypeError(f"atom data must be a dict, got {type(data).__name__}")
    return data


@dataclass(frozen=True, slots=True)
class Atom:
    """One row of the DAM table: key, data (msgpack-serialisable) and metadata (version, origin LBU, expiry)."""

    key: str
    data: dict[str, Any]
    version: int
    origin: str
    expires_at: float | None

    @property
    def kind(self) -> str:
        """``route``, ``session`` or ``other``, from the key."""
        return kind_of(self.key)

    def to_dict(self) -> dict[str, Any]:
        """The atom as a JSON-friendly mapping (for REST)."""
        return {
            "key": self.key,
            "kind": self.kind,
            "data": self.data,
            "version": self.version,
            "origin": self.origin,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed: an atom was written, deleted or expired (``atom`` only for ``put``)."""

    op: ChangeOp
    key: str
    atom: Atom | None


class CorruptAtom(ValueError):
    """A stored atom (or a change message) that cannot be read back: skipped, counted and logged, never fatal."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def atom_from_fields(key: str, version: Any, origin: Any, expires_at: Any, data: Any) -> Atom:
    """The atom of stored fields, checked: CorruptAtom names the first field of the wrong type."""
    if type(version) is not int or version < 0:
        raise CorruptAtom(key, f"version: expected an int >= 0, got {version!r}")
    if not isinstance(origin, str):
        raise CorruptAtom(key, f"origin: expected a string, got {type(origin).__name__}")
    if expires_at is not None and (type(expires_at) not in (int, float) or not math.isfinite(expires_at)):
        raise CorruptAtom(key, f"expires_at: expected a finite number or nil, got {expires_at!r}")
    if not isinstance(data, dict):
        raise CorruptAtom(key, f"data: expected a map, got {type(data).__name__}")
    return Atom(key, data, version, origin, None if expires_at is None else float(expires_at))


class BadAtomLog:
    """Logs each bad atom key once (with the reason) and counts every sighting, so one bad atom cannot flood the log."""

    def __init__(self, logger: logging.Logger = LOG, limit: int = BAD_ATOM_LOG_LIMIT) -> None:
        self.logger = logger
        self.limit = limit
        self.count = 0
        """Bad atoms seen, every sighting counted (a key read twice counts twice)."""
        self.logged: set[str] = set()

    def report(self, key: str, reason: str) -> None:
        """Count a bad atom; log it with its key and reason unless this key was logged already (or the log is full)."""
        self.count += 1
        if key in self.logged or len(self.logged) >= self.limit:
            return
        self.logged.add(key)
        self.logger.warning("DAM atom %r skipped: %s", key, reason)
        if len(self.logged) == self.limit:
            self.logger.warning("DAM: %d bad atom keys logged; further ones are only counted", self.limit)


class VersionConflict(Exception):
    """A compare-and-set write whose expected version is not the stored one (0 = the atom does not exist)."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected version {expected}, stored version is {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class Dam(ABC):
    """The distributed atom manager: versioned atoms with a TTL, compare-and-set writes and a change feed.

    Every call takes ``now`` (seconds); an atom whose ``expires_at <= now`` does not exist. With the ``redis``
    backend ``now`` must be the wall clock (``time.time()``), since expiry is shared through the store.
    """

    backend: str

    @abstractmethod
    def put(
        self,
        key: str,
        data: dict[str, Any],
        *,
        origin: str,
        ttl: float | None,
        now: float,
        expected_version: int | None = None,
    ) -> Atom:
        """Write ``data`` under ``key`` with version stored+1 and return the atom.

        With ``expected_version``, raise VersionConflict unless it equals the stored version (0 = must not exist).
        """

    @abstractmethod
    def get(self, key: str, now: float) -> Atom | None:
        """The live atom under ``key``, if any."""

    @abstractmethod
    def delete(self, key: str, now: float, expected_version: int | None = None) -> bool:
        """Delete the atom under ``key``; True if a live atom was deleted. Compare-and-set as in :meth:`put`."""

    @abstractmethod
    def get_many(self, keys: Iterable[str], now: float) -> dict[str, Atom]:
        """The live atoms among ``keys``, by key."""

    @abstractmethod
    def touch(self, key: str, ttl: float | None, now: float) -> bool:
        """Set the atom's expiry to ``now + ttl`` (None: never) without a new version; True if it was live."""

    @abstractmethod
    def scan(self, prefix: str, cursor: str | None, count: int, now: float) -> tuple[list[Atom], str | None]:
        """One page of the live atoms whose key starts with ``prefix``, and the cursor of the next page (None: done).

        Start with ``cursor=None``; ``count`` is a hint of the page size.
        """

    @abstractmethod
    def poll_changes(self, max_items: int = 1000) -> list[Change]:
        """Up to ``max_items`` changes seen since the last poll, oldest first; never blocks."""

    @abstractmethod
    def maintain(self, now: float) -> None:
        """Periodic work for the shell's timer (memory: sweep expired atoms; redis: reconnect and replay writes)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Atoms by kind, operation counters, and the degraded state with its queue."""

    def take_data_loss(self) -> bool:
        """Whether the store lost its atoms (flushed, or restarted empty) since the last call; the flag is cleared.

        :meth:`maintain` detects it; the caller then re-publishes the atoms it owns. A store in this process never
        loses them.
        """
        return False

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default: only backends with connections override it
        """Release connections (nothing to release by default)."""
