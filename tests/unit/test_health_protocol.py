"""H&L message codec: round trip, every drop reason counted (never raised), TCP framing, and a 2,000-frame fuzz."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import time
from typing import Any

import msgpack
import pytest

from nlb_sdn.dam.atoms import SESSION_PREFIX
from nlb_sdn.health.protocol import MESSAGE_TYPES, SCHEMAS, UDP_MAX_SIZE, Verifier
from nlb_sdn.health.table import Row
from nlb_sdn.signed import DROP_REASONS, MAC_SIZE, TCP_MAX_SIZE, Message, SequenceCounter, encode, frame, read_frame

KEY = b"k" * 32
NOW = 1_800_000_000.0
ROW = Row(vip="10.0.0.100", vport=80, pip="10.0.0.11", pport=80, health="ok", load=2.0, capacity=10.0).to_dict()
BODIES: dict[str, dict[str, Any]] = {
    "heartbeat": {"host_id": "h1", "checksum": 7, "row_count": 1, "period_ms": 1000},
    "goodbye": {"host_id": "h1", "reason": "SIGTERM"},
    "row_change": {
        "host_id": "h1",
        "op": "update",
        "app_id": ROW["app_id"],
        "row": ROW,
        "prev_checksum": 1,
        "checksum": 2,
    },
    "get_snapshot": {"lbu_id": 1, "host_id": "h1", "reason": "unknown host"},
    "snapshot": {"host_id": "h1", "rows": [ROW], "checksum": 3},
    "postulate": {"from": "lbu:1", "host_id": "h1", "checksum": 4, "current": {ROW["app_id"]: "active"}},
    "postulate_wrong": {"from": "h1", "host_id": "h1", "checksum_actual": 5},
    "set_target_state": {"lbu_id": 1, "app_id": ROW["app_id"], "target": "draining"},
    "session_up": {
        "host_id": "h1",
        "stype": "app",
        "sid": "S-1",
        "vip": "10.0.0.100",
        "vport": 80,
        "proto": "tcp",
        "pip": "10.0.0.11",
        "pport": 8080,
        "client": "192.0.2.7",
        "ttl_s": 600,
    },
    "session_down": {
        "host_id": "h1",
        "stype": "app",
        "sid": "S-1",
        "vip": "10.0.0.100",
        "vport": 80,
        "client": "192.0.2.7",
    },
}


def signed(payload: bytes, key: bytes = KEY) -> bytes:
    """``payload`` behind a valid MAC."""
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


def envelope(
    type: str = "heartbeat", src: str = "h1", seq: int = 1, ts: float = NOW, body: Any = None, **extra: Any
) -> dict[str, Any]:
    """A version 1 envelope as plain data."""
    data = {
        "v": 1,
        "kid": src,
        "type": type,
        "src": src,
        "seq": seq,
        "ts": ts,
        "body": BODIES[type] if body is None else body,
    }
    return {**data, **extra}


def verifier() -> Verifier:
    return Verifier(KEY, UDP_MAX_SIZE)


def only_drop(v: Verifier, reason: str) -> None:
    assert dict(v.dropped) == {reason: 1}
    assert not v.accepted


def test_every_type_in_the_contract_is_known():
    assert set(BODIES) == MESSAGE_TYPES == set(SCHEMAS)


@pytest.mark.parametrize("type", sorted(BODIES))
def test_round_trip(type):
    v = verifier()
    data = encode(KEY, type, "lbu:1", 42, NOW, BODIES[type])
    assert data[MAC_SIZE:] == msgpack.packb(envelope(type, "lbu:1", 42), use_bin_type=True)
    assert v.verify(data, NOW + 1) == Message(type, "lbu:1", 42, NOW, BODIES[type])
    assert v.accepted == {type: 1} and not v.dropped


def test_wrong_key_is_bad_mac():
    v = verifier()
    assert v.verify(encode(b"x" * 32, "heartbeat", "h1", 1, NOW, BODIES["heartbeat"]), NOW) is None
    only_drop(v, "bad_mac")


@pytest.mark.parametrize("data", [b"", b"short", b"\x00" * MAC_SIZE])
def test_missing_mac_is_bad_mac(data):
    v = verifier()
    assert v.verify(data, NOW) is None
    only_drop(v, "bad_mac")


def test_replay_and_older_seq_are_dropped_and_only_accepted_seqs_are_recorded():
    v = verifier()
    first = encode(KEY, "heartbeat", "h1", 10, NOW, BODIES["heartbeat"])
    assert v.verify(first, NOW) is not None
    assert v.verify(first, NOW) is None
    assert v.verify(encode(KEY, "heartbeat", "h1", 9, NOW, BODIES["heartbeat"]), NOW) is None
    assert v.dropped == {"replayed": 2}
    assert v.verify(encode(KEY, "heartbeat", "h2", 9, NOW, BODIES["heartbeat"]), NOW) is not None
    # a forged (bad MAC), stale or malformed message with a high seq does not move the sender's last seq
    assert v.verify(encode(b"x" * 32, "heartbeat", "h1", 1000, NOW, BODIES["heartbeat"]), NOW) is None
    assert v.verify(encode(KEY, "heartbeat", "h1", 1001, NOW - 100, BODIES["heartbeat"]), NOW) is None
    assert v.verify(encode(KEY, "heartbeat", "h1", 1002, NOW, {"host_id": "h1"}), NOW) is None
    assert v.verify(encode(KEY, "heartbeat", "h1", 11, NOW, BODIES["heartbeat"]), NOW) is not None
    assert v.dropped == {"replayed": 2, "bad_mac": 1, "stale": 1, "malformed": 1}


@pytest.mark.parametrize("skew", [-30.5, 31.0, 1e9])
def test_stale(skew):
    v = verifier()
    assert v.verify(encode(KEY, "heartbeat", "h1", 1, NOW + skew, BODIES["heartbeat"]), NOW) is None
    only_drop(v, "stale")


def test_within_skew_is_fresh():
    v = Verifier(KEY, UDP_MAX_SIZE, max_skew=5.0)
    assert v.verify(encode(KEY, "heartbeat", "h1", 1, NOW - 5.0, BODIES["heartbeat"]), NOW) is not None
    assert v.verify(encode(KEY, "heartbeat", "h1", 2, NOW + 5.5, BODIES["heartbeat"]), NOW) is None
    assert v.dropped == {"stale": 1}


def test_oversized():
    v = verifier()
    big = encode(KEY, "goodbye", "h1", 1, NOW, {"host_id": "h1", "reason": "x" * 250, "pad": "y" * 1200})
    assert len(big) > UDP_MAX_SIZE
    assert v.verify(big, NOW) is None
    only_drop(v, "oversized")
    assert Verifier(KEY, TCP_MAX_SIZE).verify(big, NOW) is not None


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",
        b"\x92\x01",
        b"\x81\x01\x02",
        b"\xdd\xff\xff\xff\xff",
        b"\x91" * 1300,
        msgpack.packb(envelope()) + b"\x00",
        msgpack.packb([1, 2, 3]),
        b"\xa3\xff\xfe\xfd",
        msgpack.packb({b"v": 1}),
    ],
)
def test_undecodable_payload_is_malformed(payload):
    v = verifier()
    assert v.verify(signed(payload), NOW) is None
    only_drop(v, "malformed")


@pytest.mark.parametrize(
    "data",
    [
        envelope(v=2),
        envelope(v=True),
        envelope(extra=1),
        envelope(type=None, body={}),
        envelope(src=""),
        envelope(src=5),
        envelope(seq=-1),
        envelope(seq=1.5),
        envelope(seq=True),
        envelope(ts="now"),
        envelope(ts=float("nan")),
        envelope(ts=float("inf")),
        envelope(body=[1]),
        envelope(type=b"heartbeat", body={}),
    ],
)
def test_wrong_envelope_is_malformed(data):
    v = verifier()
    assert v.verify(signed(msgpack.packb(data, use_bin_type=True)), NOW) is None
    only_drop(v, "malformed")


def test_missing_envelope_key_is_malformed():
    for key in ("v", "type", "src", "seq", "ts", "body"):
        data = envelope()
        del data[key]
        v = verifier()
        assert v.verify(signed(msgpack.packb(data)), NOW) is None
        only_drop(v, "malformed")


def test_unknown_type():
    v = verifier()
    assert v.verify(encode(KEY, "hello", "h1", 1, NOW, {}), NOW) is None
    only_drop(v, "unknown_type")


@pytest.mark.parametrize("type, field", [(t, f) for t, (required, _, _) in SCHEMAS.items() for f in required])
def test_missing_body_field_is_malformed(type, field):
    body = {k: v for k, v in BODIES[type].items() if k != field}
    v = verifier()
    assert v.verify(encode(KEY, type, "h1", 1, NOW, body), NOW) is None
    only_drop(v, "malformed")


@pytest.mark.parametrize(
    "type, change",
    [
        ("heartbeat", {"checksum": -1}),
        ("heartbeat", {"checksum": 2**32}),
        ("heartbeat", {"row_count": "1"}),
        ("heartbeat", {"period_ms": 0}),
        ("heartbeat", {"host_id": ""}),
        ("heartbeat", {"host_id": "h" * 129}),
        ("goodbye", {"reason": None}),
        ("row_change", {"op": "upsert"}),
        ("row_change", {"row": {**ROW, "load": -1}}),
        ("row_change", {"app_id": "10.0.0.100:80/tcp/10.0.0.12:80"}),
        ("row_change", {"op": "delete"}),
        ("row_change", {"row": [ROW]}),
        ("get_snapshot", {"lbu_id": None}),
        ("get_snapshot", {"lbu_id": -1}),
        ("snapshot", {"rows": [ROW, {"vip": "10.0.0.1"}]}),
        ("snapshot", {"rows": ROW}),
        ("postulate", {"current": {ROW["app_id"]: "failed"}}),
        ("postulate", {"current": [ROW["app_id"]]}),
        ("postulate", {"current": {ROW["app_id"]: ["active"]}}),
        ("postulate_wrong", {"checksum_actual": 1.0}),
        ("set_target_state", {"target": "drained"}),
        ("set_target_state", {"app_id": 5}),
        ("session_up", {"stype": ""}),
        ("session_up", {"stype": "App"}),
        ("session_up", {"stype": SESSION_PREFIX + "app"}),
        ("session_up", {"stype": "a" * 33}),
        ("session_up", {"stype": 1}),
        ("session_up", {"sid": ""}),
        ("session_up", {"sid": "s" * 257}),
        ("session_up", {"sid": "\u00e9" * 129}),
        ("session_up", {"sid": 7}),
        ("session_up", {"vip": "10.0.0.300"}),
        ("session_up", {"vip": "010.0.0.1"}),
        ("session_up", {"pip": "::1"}),
        ("session_up", {"client": "client"}),
        ("session_up", {"client": None}),
        ("session_up", {"vport": 0}),
        ("session_up", {"vport": 65536}),
        ("session_up", {"pport": "80"}),
        ("session_up", {"pport": True}),
        ("session_up", {"proto": "sctp"}),
        ("session_up", {"ttl_s": 0}),
        ("session_up", {"ttl_s": -1.5}),
        ("session_up", {"ttl_s": float("inf")}),
        ("session_up", {"ttl_s": float("nan")}),
        ("session_up", {"ttl_s": "600"}),
        ("session_up", {"ttl_s": True}),
        ("session_up", {"host_id": ""}),
        ("session_down", {"sid": "s" * 257}),
        ("session_down", {"stype": "x-y"}),
        ("session_down", {"client": "192.0.2.256"}),
        ("session_down", {"vport": 1.0}),
        ("session_down", {"vip": 1}),
    ],
)
def test_badly_typed_body_field_is_malformed(type, change):
    v = verifier()
    assert v.verify(encode(KEY, type, "h1", 1, NOW, {**BODIES[type], **change}), NOW) is None
    only_drop(v, "malformed")


def test_row_change_delete_has_no_row_and_add_needs_one():
    v = verifier()
    delete = {k: v for k, v in BODIES["row_change"].items() if k != "row"} | {"op": "delete"}
    assert v.verify(encode(KEY, "row_change", "h1", 1, NOW, delete), NOW) is not None
    add = {**delete, "op": "add"}
    assert v.verify(encode(KEY, "row_change", "h1", 2, NOW, add), NOW) is None
    assert v.dropped == {"malformed": 1}


def test_longest_app_ids_pass():
    row = Row(vip="255.255.255.255", vport=65535, pip="255.255.255.255", pport=65535, proto_info="p" * 128)
    assert len(row.app_id) > 128
    v = Verifier(KEY, TCP_MAX_SIZE)
    for seq, (type, body) in enumerate(
        [
            ("row_change", {**BODIES["row_change"], "app_id": row.app_id, "row": row.to_dict()}),
            ("set_target_state", {**BODIES["set_target_state"], "app_id": row.app_id}),
            ("postulate", {**BODIES["postulate"], "current": {row.app_id: "drained"}}),
            ("snapshot", {**BODIES["snapshot"], "rows": [row.to_dict()]}),
        ]
    ):
        assert v.verify(encode(KEY, type, "h1", seq, NOW, body), NOW) is not None, type


def test_session_bodies_accept_the_limits_and_ignore_extra_fields():
    v = verifier()
    longest = {
        **BODIES["session_up"],
        "host_id": "h" * 64,
        "stype": "t" * 32,
        "sid": "\U0001f600" * 64,
        "vip": "255.255.255.255",
        "pip": "255.255.255.255",
        "client": "255.255.255.255",
        "vport": 65535,
        "pport": 65535,
        "ttl_s": 1e300,
    }
    data = encode(KEY, "session_up", "h" * 64, 2**64 - 1, NOW, longest)
    assert len(data) <= UDP_MAX_SIZE
    assert v.verify(data, NOW) is not None
    for seq, (type, body) in enumerate(
        [
            ("session_up", {**BODIES["session_up"], "ttl_s": 0.001}),
            ("session_up", {**BODIES["session_up"], "stype": "http_cookie", "x": 1}),
            ("session_down", {**BODIES["session_down"], "sid": "s" * 256, "ttl_s": 0}),
            ("session_down", {**BODIES["session_down"], "stype": "tls_session_id"}),
        ]
    ):
        assert v.verify(encode(KEY, type, "h1", seq, NOW, body), NOW) is not None, body
    assert not v.dropped


def test_sequence_counter_starts_at_wall_clock_microseconds_and_grows():
    before = int(time.time() * 1_000_000)
    counter = SequenceCounter()
    first, second = counter.next(), counter.next()
    assert before <= first <= int(time.time() * 1_000_000) and second == first + 1
    explicit = SequenceCounter(5)
    assert [explicit.next() for _ in range(3)] == [5, 6, 7]


def test_framing_round_trip_partial_and_limits():
    a, b = encode(KEY, "heartbeat", "h1", 1, NOW, BODIES["heartbeat"]), b"x" * TCP_MAX_SIZE
    stream = frame(a) + frame(b) + frame(b"")[:2]
    first, rest = read_frame(stream)
    assert first == a
    second, rest = read_frame(rest)
    assert second == b
    assert read_frame(rest) == (None, rest)
    assert read_frame(frame(a)[:10]) == (None, frame(a)[:10])
    assert read_frame(frame(b"")) == (b"", b"")
    with pytest.raises(ValueError):
        frame(b"x" * (TCP_MAX_SIZE + 1))
    with pytest.raises(ValueError):
        read_frame(struct.pack("!I", TCP_MAX_SIZE + 1) + b"x")


def random_object(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value, nested at most 4 deep."""
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randrange(-(2**63), 2**64)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice([None, True, False, float("nan"), float("inf")])
    if kind == 5:
        return rng.choice([*sorted(MESSAGE_TYPES), "h1", "lbu:1", "ok", "active", ""])
    if kind == 6:
        return [random_object(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 7:
        return msgpack.ExtType(rng.randrange(128), bytes(rng.randrange(256) for _ in range(rng.randrange(8))))
    return {
        rng.choice(["v", "type", "src", "seq", "ts", "body", "host_id", "rows", "x"]): random_object(rng, depth + 1)
        for _ in range(rng.randrange(7))
    }


def mutated_envelope(rng: random.Random, last_seq: int) -> dict[str, Any]:
    """A valid-looking envelope broken in exactly one way that must make it dropped."""
    type = rng.choice(sorted(BODIES))
    data = envelope(type, "lbu:1", last_seq + 1 + rng.randrange(1000), NOW)
    kind = rng.randrange(8)
    if kind == 0 and BODIES[type]:
        data["body"] = dict(BODIES[type])
        del data["body"][rng.choice(sorted(SCHEMAS[type][0]))]
    elif kind == 1:
        del data[rng.choice(sorted(data))]
    elif kind == 2:
        data[rng.choice(["V", "x", "sig", "body2"])] = random_object(rng)
    elif kind == 3:
        data["v"] = rng.choice([0, 2, -1, "1", 1.0, None, True])
    elif kind == 4:
        data["type"] = rng.choice(["", "Heartbeat", "hello", 7, None, b"heartbeat"])
    elif kind == 5:
        data["body"] = rng.choice([None, [], "body", 3, b"\x00"])
    elif kind == 6:
        data["seq"] = rng.choice([last_seq, last_seq - 1, 0, -5, 2.5, "9"])
    else:
        data["ts"] = NOW + rng.choice([-1, 1]) * rng.uniform(30.001, 1e9)
    return data


def test_two_thousand_random_and_malformed_frames_never_raise_and_are_all_counted():
    rng = random.Random(20261126)
    v = verifier()
    base = encode(KEY, "row_change", "lbu:1", 500, NOW, BODIES["row_change"])
    assert v.verify(base, NOW) is not None
    frames = 2000
    for _ in range(frames):
        kind = rng.randrange(7)
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 1600)))
        elif kind == 1:
            data = base[: rng.randrange(len(base))]
        elif kind == 2:
            flipped = bytearray(base)
            for _ in range(rng.randrange(1, 5)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        elif kind == 3:
            data = signed(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))))
        elif kind == 4:
            data = signed(msgpack.packb(random_object(rng), use_bin_type=True))
        elif kind == 5:
            data = signed(msgpack.packb(mutated_envelope(rng, 500), use_bin_type=True))
        else:
            data = base
        assert v.verify(data, NOW) is None
    assert v.accepted == {"row_change": 1}
    assert sum(v.dropped.values()) == frames
    assert set(v.dropped) <= set(DROP_REASONS)
    assert {"bad_mac", "malformed", "replayed", "stale", "unknown_type", "oversized"} <= set(v.dropped)
