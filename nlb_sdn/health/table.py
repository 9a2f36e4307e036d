"""The H&L table 1204 (FIG. 13A): one validated row per application endpoint, and the table checksum."""

from __future__ import annotations

import functools
import ipaddress
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

HEALTH_STATES = ("ok", "failed", "unknown")
TARGET_STATES = ("active", "draining", "inactive")
CURRENT_STATES = ("active", "draining", "drained", "inactive")
PROTOCOLS = ("tcp", "udp")
OPS = ("add", "update", "delete")
MAX_PROTO_INFO = 128
FIELDS = ("vip", "vport", "pip", "pport", "proto", "proto_info", "health", "load", "capacity", "target", "current")
"""Every FIG. 13A field of a row, in table order (a row map on the wire also carries ``app_id``)."""


def app_id_of(vip: str, vport: int, proto: str, pip: str, pport: int, proto_info: str = "") -> str:
    """The application id ``"{vip}:{vport}/{proto}/{pip}:{pport}"``, plus ``"?{proto_info}"`` when not empty."""
    app_id = f"{vip}:{vport}/{proto}/{pip}:{pport}"
    return f"{app_id}?{proto_info}" if proto_info else app_id


@functools.lru_cache(maxsize=1 << 16)
def _canonical_ipv4(value: str) -> str | None:
    """The canonical dotted form of an IPv4 address, or None if ``value`` is not one (remembered: rows repeat them)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def _address(name: str, value: Any) -> None:
    """Raise unless ``value`` is an IPv4 address in canonical dotted form."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
    canonical = _canonical_ipv4(value)
    if canonical is None:
        raise ValueError(f"{name}: not an IPv4 address: {value!r}")
    if canonical != value:
        raise ValueError(f"{name}: not in canonical form: {value!r} (use {canonical!r})")


def _port(name: str, value: Any) -> None:
    """Raise unless ``value`` is an integer port 1..65535."""
    if type(value) is not int or not 1 <= value <= 65535:
        raise ValueError(f"{name}: expected an integer port 1..65535, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _number(name: str, value: Any, positive: bool) -> None:
    """Raise unless ``value`` is a finite number, >= 0 (or > 0 when ``positive``)."""
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: expected a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclass(frozen=True)
class Row:
    """One row of the H&L table: application identifier, status and directive (every FIG. 13A field)."""

    vip: str
    vport: int
    pip: str
    pport: int
    proto: Literal["tcp", "udp"] = "tcp"
    proto_info: str = ""
    health: Literal["ok", "failed", "unknown"] = "unknown"
    load: float = 0.0
    capacity: float = 1.0
    target: Literal["active", "draining", "inactive"] = "active"
    current: Literal["active", "draining", "drained", "inactive"] = "inactive"

    def __post_init__(self) -> None:
        _address("vip", self.vip)
        _port("vport", self.vport)
        _address("pip", self.pip)
        _port("pport", self.pport)
        _choice("proto", self.proto, PROTOCOLS)
        if (
            not isinstance(self.proto_info, str)
            or len(self.proto_info) > MAX_PROTO_INFO
            or not self.proto_info.isprintable()
        ):
            raise ValueError(
                f"proto_info: expected printable text of at most {MAX_PROTO_INFO} characters, got {self.proto_info!r}"
            )
        _choice("health", self.health, HEALTH_STATES)
        _number("load", self.load, positive=False)
        _number("capacity", self.capacity, positive=True)
        _choice("target", self.target, TARGET_STATES)
        _choice("current", self.current, CURRENT_STATES)
        object.__setattr__(self, "load", float(self.load))
        object.__setattr__(self, "capacity", float(self.capacity))

    @property
    def app_id(self) -> str:
        """The row's application id (see :func:`app_id_of`)."""
        return app_id_of(self.vip, self.vport, self.proto, self.pip, self.pport, self.proto_info)

    def to_dict(self) -> dict[str, Any]:
        """The row as a wire map: every field plus ``app_id``, keys sorted (the canonical checksum form)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        data["app_id"] = self.app_id
        return dict(sorted(data.items()))

    @classmethod
    def from_dict(cls, data: Any) -> Row:
        """Validate a wire map (every field required; ``app_id`` optional but checked) into a Row; ValueError if bad."""
        if not isinstance(data, dict):
            raise ValueError(f"row: expected a map, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in FIELDS and key != "app_id")
        if unknown:
            raise ValueError(f"row: unknown field {unknown[0]!r}")
        missing = [name for name in FIELDS if name not in data]
        if missing:
            raise ValueError(f"row: missing field {missing[0]!r}")
        row = cls(**{name: data[name] for name in FIELDS})
        if "app_id" in data and data["app_id"] != row.app_id:
            raise ValueError(f"row: app_id {data['app_id']!r} does not match the fields ({row.app_id!r})")
        return row


def table_checksum(rows: Iterable[Row]) -> int:
    """CRC32 of the canonical msgpack encoding of the rows (maps with sorted keys, plus ``app_id``), by ``app_id``."""
    ordered = sorted((row.to_dict() for row in rows), key=lambda data: data["app_id"])
    return zlib.crc32(msgpack.packb(ordered, use_bin_type=True)) & 0xFFFFFFFF


@dataclass(frozen=True)
class Change:
    """One change of a table: what a ``row_change`` message carries."""

    op: Literal["add", "update", "delete"]
    app_id: str
    row: Row | None
    prev_checksum: int
    checksum: int

    def body(self, host_id: str) -> dict[str, Any]:
        """The ``row_change`` message body for this change (``row`` absent for a delete)."""
        body: dict[str, Any] = {
            "host_id": host_id,
            "op": self.op,
            "app_id": self.app_id,
            "prev_checksum": self.prev_checksum,
            "checksum": self.checksum,
        }
        if self.row is not None:
            body["row"] = self.row.to_dict()
        return body


class HLTable:
    """The H&L table 1204: rows by ``app_id`` with a checksum kept current on every change."""

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        """A table holding ``rows`` (their app ids must be distinct)."""
        self._rows: dict[str, Row] = {}
        for row in rows:
            if row.app_id in self._rows:
                raise ValueError(f"duplicate app_id {row.app_id!r}")
            self._rows[row.app_id] = row
        self._checksum = table_checksum(self._rows.values())

    @property
    def checksum(self) -> int:
        """The table checksum (:func:`table_checksum` of every row)."""
        return self._checksum

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, app_id: object) -> bool:
        return app_id in self._rows

    def get(self, app_id: str) -> Row | None:
        """The row with ``app_id``, if any."""
        return self._rows.get(app_id)

    def rows(self) -> list[Row]:
        """Every row, sorted by ``app_id``."""
        return [self._rows[app_id] for app_id in sorted(self._rows)]

    def upsert(self, row: Row) -> Change | None:
        """Add or replace the row with ``row.app_id``; the change, or None when the row is unchanged."""
        previous = self._rows.get(row.app_id)
        if previous == row:
            return None
        self._rows[row.app_id] = row
        return self._changed("add" if previous is None else "update", row.app_id, row)

    def delete(self, app_id: str) -> Change | None:
        """Remove the row with ``app_id``; the change, or None when there is no such row."""
        if self._rows.pop(app_id, None) is None:
            return None
        return self._changed("delete", app_id, None)

    def _changed(self, op: Literal["add", "update", "delete"], app_id: str, row: Row | None) -> Change:
        """Recompute the checksum and describe the change."""
        prev_checksum = self._checksum
        self._checksum = table_checksum(self._rows.values())
        return Change(op, app_id, row, prev_checksum, self._checksum)
