"""Per-host H&L keys at the controller: each host speaks only as itself, and hears the controller under its own key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlb_sdn import cli
from nlb_sdn.config import parse_config
from nlb_sdn.health.handler import HealthHandler
from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.signed import (
    DerivedKeys,
    KeyMode,
    ListedKeys,
    OneKey,
    SharedKey,
    derive_host_key,
    encode,
    load_key,
    load_key_ring,
)
from tests.lib.configs import health_web_config

MASTER = b"master-key-0123456789abcdef"
NOW = 100.0
ADDR = ("10.0.0.11", 9101)


def heartbeat(key: bytes, src: str, host_id: str, seq: int = 1, kid: str | None = None) -> bytes:
    """A heartbeat datagram signed with ``key``."""
    body = {"host_id": host_id, "checksum": 0, "row_count": 0, "period_ms": 1000}
    return encode(key, "heartbeat", src, seq, NOW, body, kid=kid)


def handler() -> HealthHandler:
    data = health_web_config().model_dump()
    data["controller"]["health"] = {"enabled": True, "key_file": "/dev/null"}
    return HealthHandler(parse_config(data), DerivedKeys(MASTER), NOW)


def test_a_host_heard_under_its_own_key_is_answered_under_that_key() -> None:
    hl = handler()
    key_a = derive_host_key(MASTER, "a")
    replies, _ = hl.handle_datagram(heartbeat(key_a, "a", "a"), ADDR, NOW, lambda member: True)
    assert set(hl.cache.hosts) == {"a"}
    assert [addr for addr, _ in replies] == [ADDR]
    agent_a = Verifier(OneKey("a", key_a), UDP_MAX_SIZE, bind_src=False)
    message = agent_a.verify(replies[0][1], NOW)
    assert message is not None and message.type == "get_snapshot" and message.kid == "a"
    agent_b = Verifier(OneKey("b", derive_host_key(MASTER, "b")), UDP_MAX_SIZE, bind_src=False)
    assert agent_b.verify(replies[0][1], NOW) is None and dict(agent_b.dropped) == {"unknown_kid": 1}


def test_host_a_cannot_speak_for_host_b() -> None:
    hl = handler()
    key_a = derive_host_key(MASTER, "a")
    for data in (
        heartbeat(key_a, "b", "b"),  # kid b, signed with A's key
        heartbeat(key_a, "b", "b", kid="a"),  # A's key and kid, src b
        heartbeat(key_a, "a", "b", seq=2),  # as itself, about b: the cache refuses another host's body
        heartbeat(MASTER, "b", "b", seq=3, kid="b"),  # the master is not a host key
    ):
        hl.handle_datagram(data, ADDR, NOW, lambda member: True)
    assert "b" not in hl.cache.hosts
    assert hl.verifier is not None and dict(hl.verifier.dropped) == {"bad_mac": 2, "wrong_src": 1}


def test_the_key_file_is_read_as_its_mode_says(tmp_path: Path) -> None:
    master = tmp_path / "master"
    master.write_bytes(MASTER + b"\n")
    assert load_key_ring(KeyMode.DERIVED, master) == DerivedKeys(MASTER)
    assert load_key_ring(KeyMode.SHARED, master) == SharedKey(MASTER)
    listed = tmp_path / "listed"
    listed.write_text("a " + "a" * 32 + "\n")
    assert load_key_ring(KeyMode.LISTED, listed) == ListedKeys({"a": b"a" * 32})
    with pytest.raises(ValueError, match="line 1"):
        load_key_ring(KeyMode.LISTED, master)


def test_the_key_mode_is_checked_by_the_config_schema() -> None:
    data = health_web_config().model_dump()
    data["controller"]["health"] = {"enabled": True, "key_file": "k", "key_mode": "listed"}
    assert parse_config(data).controller.health.key_mode == KeyMode.LISTED
    data["controller"]["health"]["key_mode"] = "per-host"
    with pytest.raises(Exception, match="key_mode"):
        parse_config(data)


def test_derive_key_writes_the_hosts_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    master = tmp_path / "master"
    master.write_bytes(MASTER)
    out = tmp_path / "h1.key"
    assert cli.main(["derive-key", "--master", str(master), "--host", "h1", "--out", str(out)]) == 0
    assert load_key(out) == derive_host_key(MASTER, "h1")
    assert out.stat().st_mode & 0o777 == 0o600
    assert cli.main(["derive-key", "--master", str(tmp_path / "missing"), "--host", "h1"]) == 2
