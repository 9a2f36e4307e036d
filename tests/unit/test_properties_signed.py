"""Properties of the signed H&L and migration messages: verifiers never crash, round trips hold, tampering is caught.

Arbitrary bytes, tampered messages and correctly signed envelopes with arbitrary contents are only ever counted drops
(``SignedVerifier.verify`` returns None, ``wire.verify`` raises WireError); what ``encode``/``sign`` make verifies
back to the same message; changing any one byte of a signed message makes it rejected.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from typing import Any

import msgpack
from hypothesis import given, strategies as st

from nlb_sdn.health.protocol import SCHEMAS, UDP_MAX_SIZE, Verifier
from nlb_sdn.migration import wire
from nlb_sdn.signed import MAX_ID, Message, SignedVerifier, encode, read_frame
from tests.lib.properties import PROPERTY

KEY = b"property-test-key-0123456789abcdef"
NOW = 1_800_000_000.0

idents = st.text(min_size=1, max_size=MAX_ID)
short_idents = st.text(min_size=1, max_size=24)
"""Identifiers short enough that every generated H&L message fits a datagram."""
texts = st.text(max_size=64)
u32s = st.integers(0, 2**32 - 1)
ipv4s = st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts)))
ports = st.integers(1, 65535)
migration_ids = st.text("ab_.:-09AZ", min_size=1, max_size=64)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | texts
    | st.binary(max_size=32),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=3,
)

HL_BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "heartbeat": st.fixed_dictionaries(
        {"host_id": short_idents, "checksum": u32s, "row_count": u32s, "period_ms": st.integers(1, 2**32 - 1)}
    ),
    "goodbye": st.fixed_dictionaries({"host_id": short_idents, "reason": texts}),
    "set_target_state": st.fixed_dictionaries(
        {
            "lbu_id": u32s | short_idents,
            "app_id": st.text(min_size=1, max_size=64),
            "target": st.sampled_from(["active", "draining", "inactive"]),
        }
    ),
    "session_down": st.fixed_dictionaries(
        {
            "host_id": short_idents,
            "stype": st.text("abz09_", max_size=31).map(lambda rest: "s" + rest),
            "sid": st.text(min_size=1, max_size=64),
            "vip": ipv4s,
            "vport": ports,
            "client": ipv4s,
        }
    ),
}
MIGRATION_BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    wire.MIGRATE: st.fixed_dictionaries(
        {"id": migration_ids, "state": st.dictionaries(texts, msgpack_values, max_size=6)}
    ),
    wire.REPLY: st.fixed_dictionaries(
        {"id": migration_ids, "ok": st.booleans(), "stage": st.sampled_from(wire.STAGES), "error": texts}
    ),
    wire.GO: st.fixed_dictionaries({"id": migration_ids}),
    wire.ABORT: st.fixed_dictionaries({"id": migration_ids, "reason": texts}),
}


def hl_verifier() -> SignedVerifier:
    """A fresh H&L verifier (no sequence numbers seen yet)."""
    return Verifier(KEY, UDP_MAX_SIZE)


def migration_verifier() -> SignedVerifier:
    """A fresh migration verifier."""
    return wire.MigrationVerifier(KEY)


VERIFIERS = {"hl": (hl_verifier, HL_BODIES), "migration": (migration_verifier, MIGRATION_BODIES)}


def _messages_of(protocol: str, type: str) -> st.SearchStrategy[tuple[str, str, str, int, float, dict[str, Any]]]:
    """Well-formed messages of one type: (protocol, type, src, seq, ts, body)."""
    body = VERIFIERS[protocol][1][type]
    timestamps = st.floats(-29, 29).map(lambda skew: NOW + skew)
    return st.tuples(st.just(protocol), st.just(type), short_idents, st.integers(0, 2**63), timestamps, body)


signed_messages = st.one_of(
    *(
        _messages_of(protocol, type)
        for protocol, (_make, bodies) in sorted(VERIFIERS.items())
        for type in sorted(bodies)
    )
)
"""A protocol and a well-formed message of it: (protocol, type, src, seq, ts, body)."""


def sign_payload(payload: bytes) -> bytes:
    """``payload`` with a valid MAC in front: past the MAC check, whatever it holds."""
    return hmac.new(KEY, payload, hashlib.sha256).digest() + payload


def _field_names(type: str) -> list[str]:
    """The body fields a message type knows (none for an unknown type)."""
    required, optional, _whole = SCHEMAS.get(type, ({}, {}, None))
    return [*required, *optional, *wire.BODY_CHECKS.get(type, {})]


def _junk_bodies(type: str) -> st.SearchStrategy[Any]:
    """Bodies for ``type``: maps of its field names (and others) to arbitrary values, or no map at all."""
    names = st.sampled_from(_field_names(type)) | texts if _field_names(type) else texts
    return st.dictionaries(names, msgpack_values, max_size=6) | msgpack_values


def _envelope(type: str, body: Any, v: Any, src: Any, seq: Any, ts: Any, extra: dict[str, Any]) -> bytes:
    """A signed envelope of the given fields (``extra`` ones first, so the known ones win)."""
    envelope = extra | {"v": v, "kid": src, "type": type, "src": src, "seq": seq, "ts": ts, "body": body}
    return sign_payload(msgpack.packb(envelope, use_bin_type=True))


def _junk_of(type: Any) -> st.SearchStrategy[bytes]:
    """Correctly signed envelopes of ``type`` with arbitrary fields."""
    return st.builds(
        _envelope,
        st.just(type),
        _junk_bodies(type if isinstance(type, str) else ""),
        st.sampled_from([1, 1.0, True, 2]),
        idents | msgpack_values,
        st.integers(-1, 2**64 - 1) | msgpack_values,
        st.floats() | msgpack_values,
        st.just({}) | st.dictionaries(texts, msgpack_values, max_size=4),
    )


signed_junk = st.one_of(*(_junk_of(type) for type in sorted({*SCHEMAS, *wire.BODY_CHECKS})), _junk_of(""))
"""Correctly signed envelopes with arbitrary contents: every check after the MAC sees hostile data."""


def _tamper(
    message: tuple[str, str, str, int, float, dict[str, Any]],
    changes: list[tuple[float, int]],
    keep: float,
    tail: bytes,
) -> bytes:
    """The message signed, with the bytes at the given fractions of its length overwritten, cut and extended."""
    _protocol, type, src, seq, ts, body = message
    data = bytearray(encode(KEY, type, src, seq, ts, body))
    for where, value in changes:
        data[int(where * len(data))] = value
    return bytes(data[: round(keep * len(data))]) + tail


tampered = st.builds(
    _tamper,
    signed_messages,
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3),
    st.floats(0, 1),
    st.binary(max_size=4),
)
"""Valid signed messages with some bytes overwritten, cut off or added."""


@PROPERTY
@given(data=st.binary(max_size=300) | signed_junk | tampered, now=st.sampled_from([NOW, 0.0]))
def test_verifiers_only_count_drops(data: bytes, now: float) -> None:
    for make, _bodies in VERIFIERS.values():
        verifier = make()
        message = verifier.verify(data, now)
        if message is None:
            assert sum(verifier.dropped.values()) == 1 and not verifier.accepted
        else:
            assert isinstance(message, Message) and sum(verifier.accepted.values()) == 1
    try:
        wire.verify(migration_verifier(), data, now)
    except wire.WireError as exc:
        assert exc.reason
    with contextlib.suppress(ValueError):  # an over-long length prefix: the stream cannot be trusted any more
        read_frame(data)


@PROPERTY
@given(message=signed_messages, position=st.integers(0), change=st.integers(1, 255))
def test_signed_messages_round_trip_and_any_changed_byte_is_rejected(
    message: tuple[str, str, str, int, float, dict[str, Any]], position: int, change: int
) -> None:
    protocol, type, src, seq, ts, body = message
    make = VERIFIERS[protocol][0]
    data = (
        wire.sign(KEY, type, src, seq, ts, body) if protocol == "migration" else encode(KEY, type, src, seq, ts, body)
    )
    assert make().verify(data, NOW) == Message(type, src, seq, ts, body)
    changed = bytearray(data)
    changed[position % len(data)] ^= change
    verifier = make()
    assert verifier.verify(bytes(changed), NOW) is None
    assert verifier.dropped["bad_mac"] == 1
