"""The signed-message module H&L and migration share: key file, exact wire bytes, the verifier and its type map."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.migration.wire import GO, MigrationVerifier
from nlb_sdn.signed import (
    MIN_KEY_SIZE,
    TCP_MAX_SIZE,
    DerivedKeys,
    ListedKeys,
    OneKey,
    SignedVerifier,
    derive_host_key,
    encode,
    frame,
    load_key,
    load_key_list,
    read_frame,
)

KEY = b"k" * 32
NOW = 1000.5
GOLDEN = bytes.fromhex(
    "0109d89fb1e1f3fc8c7bb8c1e8387e607985e7cf7055433b855593cdfbf098ce87a17601a36b6964a27231a474797065aa6d6967726174655f"
    "676fa3737263a27231a373657107a27473cb408f440000000000a4626f647981a26964a36d2d31"
)
"""``encode(KEY, "migrate_go", "r1", 7, 1000.5, {"id": "m-1"})``: the envelope names its key (``kid``, here ``r1``)."""
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


MASTER = b"m" * 32
PING = {"ping": lambda body: True}


def test_host_keys_are_derived_from_the_master_key_per_host() -> None:
    key_a, key_b = derive_host_key(MASTER, "a"), derive_host_key(MASTER, "b")
    assert key_a != key_b and len(key_a) == 64 and key_a == derive_host_key(MASTER, "a")
    assert key_a != derive_host_key(b"n" * 32, "a")
    assert DerivedKeys(MASTER).key_for("a") == key_a


def test_a_host_can_sign_only_as_itself() -> None:
    controller = SignedVerifier(DerivedKeys(MASTER), 256, PING)
    key_a = derive_host_key(MASTER, "a")
    assert controller.verify(encode(key_a, "ping", "a", 1, NOW, {}), NOW) is not None
    assert controller.verify(encode(key_a, "ping", "b", 1, NOW, {}), NOW) is None  # A's key, kid b: MAC fails
    assert controller.verify(encode(key_a, "ping", "b", 2, NOW, {}, kid="a"), NOW) is None  # A's key, src b
    assert dict(controller.dropped) == {"bad_mac": 1, "wrong_src": 1}


def test_an_unknown_key_id_is_dropped_and_counted() -> None:
    verifier = SignedVerifier(ListedKeys({"a": b"a" * 32}), 256, PING)
    assert verifier.verify(encode(b"a" * 32, "ping", "a", 1, NOW, {}), NOW) is not None
    assert verifier.verify(encode(b"c" * 32, "ping", "c", 1, NOW, {}), NOW) is None
    assert dict(verifier.dropped) == {"unknown_kid": 1}


def test_a_hosts_own_ring_takes_the_controllers_messages_under_its_key_only() -> None:
    agent = SignedVerifier(OneKey("a", b"a" * 32), 256, PING, bind_src=False)
    assert agent.verify(encode(b"a" * 32, "ping", "lbu:1", 1, NOW, {}, kid="a"), NOW) is not None
    assert agent.verify(encode(b"b" * 32, "ping", "lbu:1", 2, NOW, {}, kid="b"), NOW) is None
    assert dict(agent.dropped) == {"unknown_kid": 1}


def test_a_key_list_names_each_host_once(tmp_path: Path) -> None:
    good = tmp_path / "keys"
    good.write_text("# host keys\nh1 " + "1" * 32 + "\n\nh2   " + "2" * 32 + "  # second\n")
    assert load_key_list(good) == {"h1": b"1" * 32, "h2": b"2" * 32}
    for text in ("h1 short\n", "h1 " + "1" * 32 + "\nh1 " + "1" * 32 + "\n", "h1\n"):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ValueError, match="line"):
            load_key_list(bad)
