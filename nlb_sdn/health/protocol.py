"""The H&L messages (FIG. 15): their types and body schemas, and the H&L :class:`Verifier`.

Signing, verification, sequence numbers and TCP framing are :mod:`nlb_sdn.signed`, which migration shares; this
module says which messages H&L speaks and what their bodies hold.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from nlb_sdn.health.table import CURRENT_STATES, OPS, PROTOCOLS, TARGET_STATES, Row
from nlb_sdn.signed import MAX_SKEW, KeyRing, SignedVerifier, is_ident

UDP_MAX_SIZE = 1400
MAX_TEXT = 256
MAX_SID = 256
MAX_STYPE = 32
SESSION_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
"""A session type (``app``, ``http_cookie``, ``tls_session_id``, ``client_ip``, ...); no ``:``: it is part of a DAM
key (``sess:<type>:<id>``)."""

FieldCheck = Callable[[Any], bool]


def _app_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _u32(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 0xFFFFFFFF


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**32


def _positive(value: Any) -> bool:
    return type(value) is int and 0 < value < 2**32


def is_ipv4(value: Any) -> bool:
    """An IPv4 address in canonical dotted form."""
    if not isinstance(value, str):
        return False
    try:
        return str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


def is_port(value: Any) -> bool:
    """A TCP/UDP port number (1-65535, an int and not a bool)."""
    return type(value) is int and 1 <= value <= 65535


def _stype(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STYPE and SESSION_TYPE_PATTERN.fullmatch(value) is not None


def _sid(value: Any) -> bool:
    """A session id: 1 to 256 bytes of UTF-8, so that a session_up always fits a datagram."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return len(value.encode()) <= MAX_SID
    except UnicodeEncodeError:
        return False


def _ttl(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _lbu_id(value: Any) -> bool:
    return _count(value) or is_ident(value)


def _one_of(*allowed: str) -> FieldCheck:
    return lambda value: isinstance(value, str) and value in allowed


def _row(value: Any) -> bool:
    try:
        Row.from_dict(value)
    except (ValueError, TypeError):
        return False
    return True


def _rows(value: Any) -> bool:
    return isinstance(value, list) and all(_row(item) for item in value)


def _current(value: Any) -> bool:
    return isinstance(value, dict) and all(_app_id(k) and v in CURRENT_STATES for k, v in value.items())


def _row_change(body: dict[str, Any]) -> bool:
    """A row (already checked) for add/update whose app_id matches the body's, and no row for a delete."""
    if body["op"] == "delete":
        return "row" not in body
    return "row" in body and Row.from_dict(body["row"]).app_id == body["app_id"]


SCHEMAS: dict[str, tuple[dict[str, FieldCheck], dict[str, FieldCheck], Callable[[dict[str, Any]], bool] | None]] = {
    "heartbeat": ({"host_id": is_ident, "checksum": _u32, "row_count": _count, "period_ms": _positive}, {}, None),
    "goodbye": ({"host_id": is_ident, "reason": _text}, {}, None),
    "row_change": (
        {"host_id": is_ident, "op": _one_of(*OPS), "app_id": _app_id, "prev_checksum": _u32, "checksum": _u32},
        {"row": _row},
        _row_change,
    ),
    "get_snapshot": ({"lbu_id": _lbu_id, "host_id": is_ident, "reason": _text}, {}, None),
    "snapshot": ({"host_id": is_ident, "rows": _rows, "checksum": _u32}, {}, None),
    "postulate": ({"from": is_ident, "host_id": is_ident, "checksum": _u32}, {"current": _current}, None),
    "postulate_wrong": ({"from": is_ident, "host_id": is_ident, "checksum_actual": _u32}, {}, None),
    "set_target_state": ({"lbu_id": _lbu_id, "app_id": _app_id, "target": _one_of(*TARGET_STATES)}, {}, None),
    "session_up": (
        {
            "host_id": is_ident,
            "stype": _stype,
            "sid": _sid,
            "vip": is_ipv4,
            "vport": is_port,
            "proto": _one_of(*PROTOCOLS),
            "pip": is_ipv4,
            "pport": is_port,
            "client": is_ipv4,
            "ttl_s": _ttl,
        },
        {},
        None,
    ),
    "session_down": (
        {"host_id": is_ident, "stype": _stype, "sid": _sid, "vip": is_ipv4, "vport": is_port, "client": is_ipv4},
        {},
        None,
    ),
}
"""Per message type: required body fields, optional body fields (each with its check) and a whole-body check.
Other body fields are ignored."""
MESSAGE_TYPES = frozenset(SCHEMAS)


def body_ok(type: str, body: dict[str, Any]) -> bool:
    """Whether ``body`` has every required field of ``type`` and every present known field is well typed."""
    required, optional, whole = SCHEMAS[type]
    for name, check in required.items():
        if name not in body or not check(body[name]):
            return False
    for name, check in optional.items():
        if name in body and not check(body[name]):
            return False
    return whole is None or whole(body)


class Verifier(SignedVerifier):
    """The :class:`~nlb_sdn.signed.SignedVerifier` of H&L messages: the types of :data:`SCHEMAS` and no other."""

    def __init__(self, keys: KeyRing | bytes, max_size: int, max_skew: float = MAX_SKEW, bind_src: bool = True) -> None:
        """A verifier for H&L messages signed with a key of ``keys`` and at most ``max_size`` bytes long; with
        ``bind_src`` (the controller) each host speaks only as itself, without (an agent) the key is its own."""
        super().__init__(keys, max_size, {type: partial(body_ok, type) for type in SCHEMAS}, max_skew, bind_src)
