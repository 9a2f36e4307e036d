"""The signed-message module H&L and migration share: key file, exact wire bytes, the verifier and its type map."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.migration.wire import GO, MigrationVerifier
from nlb_sdn.signed import MIN_KEY_SIZE, TCP_MAX_SIZE, SignedVerifier, encode, frame, load_key, read_frame

KEY = b"k" * 32
NOW = 1000.5
GOLDEN = bytes.fromhex(
    "5e430150ef4569b6eb8d15b0cf1fb80e8249981b951b8a798aabe495b1724c4186a17601a474797065aa6d6967726174655f676fa3737263"
    "a27231a373657107a27473cb408f440000000000a4626f647981a26964a36d2d31"
)
"""``encode(KEY, "migrate_go", "r1", 7, 1000.5, {"id": "m-1"})`` as H&L and migration have always sent it."""
HEARTBEAT = {"host_id": "h1", "checksum": 7, "row_count": 0, "period_ms": 1000}


def test_the_bytes_on_the_wire_are_pinned() -> None:
    assert encode(KEY, GO, "r1", 7, NOW, {"id": "m-1"}) == GOLDEN
    assert frame(GOLDEN) == len(GOLDEN).to_bytes(4, "big") + GOLDEN
    assert read_frame(frame(GOLDEN) + b"rest") == (GOLDEN, b"rest")


def test_load_key_strips_whitespace_and_refuses_short_keys(tmp_path: Path) -> None:
    good = tmp_path / "key"
    good.write_bytes(b"  " + b"s" * MIN_KEY_SIZE + b"\n")
    assert load_key(good) == b"s" * MIN_KEY_SIZE
    short = tmp_path / "short"
    short.write_bytes(b"s" * (MIN_KEY_SIZE - 1) + b"   \n")
    with pytest.raises(ValueError, match="at least 16"):
        load_key(short)


def test_a_verifier_accepts_only_its_types_and_counts_every_drop() -> None:
    verifier = SignedVerifier(KEY, 256, {"ping": lambda body: body.get("n") == 1})
    assert verifier.verify(encode(KEY, "ping", "a", 5, NOW, {"n": 1}), NOW) is not None
    drops = {
        "oversized": (encode(KEY, "ping", "a", 6, NOW, {"n": 1, "pad": "x" * 300}), NOW),
        "bad_mac": (encode(b"x" * 32, "ping", "a", 6, NOW, {"n": 1}), NOW),
        "malformed": (encode(KEY, "ping", "a", 6, NOW, {"n": 2}), NOW),
        "unknown_type": (encode(KEY, "pong", "a", 6, NOW, {"n": 1}), NOW),
        "replayed": (encode(KEY, "ping", "a", 5, NOW, {"n": 1}), NOW),
        "stale": (encode(KEY, "ping", "a", 6, NOW, {"n": 1}), NOW + 31),
    }
    for reason, (data, now) in drops.items():
        assert verifier.verify(data, now) is None
        assert verifier.dropped[reason] == 1, reason
    message = verifier.verify(encode(KEY, "ping", "a", 6, NOW, {"n": 1}), NOW)
    assert message is not None and (message.type, message.src, message.seq) == ("ping", "a", 6)
    assert verifier.accepted == {"ping": 2}


def test_one_key_signs_both_protocols_and_each_verifier_refuses_the_other() -> None:
    heartbeat = encode(KEY, "heartbeat", "h1", 1, NOW, HEARTBEAT)
    go = encode(KEY, GO, "r1", 1, NOW, {"id": "m-1"})
    hl, migration = Verifier(KEY, UDP_MAX_SIZE), MigrationVerifier(KEY)
    assert isinstance(hl, SignedVerifier) and isinstance(migration, SignedVerifier)
    assert migration.max_size == TCP_MAX_SIZE
    assert hl.verify(heartbeat, NOW) is not None and hl.verify(go, NOW) is None
    assert migration.verify(go, NOW) is not None and migration.verify(heartbeat, NOW) is None
    assert hl.dropped == {"unknown_type": 1} and migration.dropped == {"unknown_type": 1}
