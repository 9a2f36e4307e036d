"""The DAM survives bad data (issue 12): corrupt atoms and change messages are skipped, counted and logged once, and a
write Redis refuses fails alone, on a private redis-server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis

from nlb_sdn.config import dump_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import NO_EFFECTS
from nlb_sdn.dam import ROUTE_PREFIX, Atom, Change, RedisDam, route_key, session_key
from nlb_sdn.dam.redis_backend import EPOCH_KEY
from tests.lib.configs import WEB_VIP, web_config, web_member, weighted_web_config
from tests.lib.polling import poll_until
from tests.lib.redis_server import RedisServer

PREFIX = "bad:"
ROUTE = route_key("10.0.0.1", 40000, "10.0.0.100", 80)
SESSION = session_key("app", "good")
WAIT = 3.0


def blob(*fields: Any) -> bytes:
    """Stored value of concatenated msgpack objects (an atom is version, origin, expires_at, data)."""
    return b"".join(msgpack.packb(field, use_bin_type=True) for field in fields)


CORRUPT = {
    route_key("10.0.0.1", 1, "10.0.0.100", 80): b"\xc1",  # not msgpack at all
    route_key("10.0.0.1", 2, "10.0.0.100", 80): blob(1, "lbu1", None),  # three objects: no data
    session_key("app", "string-version"): blob("1", "lbu1", None, {}),
    session_key("app", "list-data"): blob(1, "lbu1", None, [1, 2]),
    session_key("app", "trailing"): blob(1, "lbu1", None, {}) + b"\x01",
}
"""Atom keys and stored values that are not atoms."""
NOT_UTF8 = PREFIX.encode() + ROUTE_PREFIX.encode() + b"\xff\xfe"
"""A Redis key name of our prefix that is not UTF-8 (an atom key cannot be read from it)."""
HASH = route_key("10.0.0.1", 3, "10.0.0.100", 80)
"""An atom key holding a Redis hash, not a string."""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server shared by this module's tests."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the empty server, to plant what no DAM would write."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def plant(store: redis.Redis) -> None:
    """Write every kind of bad data under our prefix."""
    for key, value in CORRUPT.items():
        store.set(PREFIX + key, value)
    store.set(NOT_UTF8, blob(1, "lbu1", None, {}))
    store.hset(PREFIX + HASH, "field", "value")


def listing(dam: RedisDam, prefix: str, now: float) -> list[str]:
    """The keys of every live atom under ``prefix``."""
    keys: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page, cursor = dam.scan(prefix, cursor, 3, now)
        keys += [atom.key for atom in page]
        if cursor is None:
            break
    return sorted(keys)


def warnings_naming(caplog: pytest.LogCaptureFixture, key: str) -> int:
    """How many warnings name ``key``."""
    return sum(1 for record in caplog.records if record.levelno == logging.WARNING and repr(key) in record.message)


def test_corrupt_atoms_are_skipped_counted_and_logged_once_per_key(
    store: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nlb_sdn.dam")
    dam = RedisDam(redis_server.url, prefix=PREFIX)
    try:
        now = time.time()
        dam.put(ROUTE, {"member": "h1"}, origin="lbu1", ttl=None, now=now)
        dam.put(SESSION, {"sid": "good"}, origin="lbu1", ttl=60, now=now)
        plant(store)
        for _ in range(2):
            assert listing(dam, ROUTE_PREFIX, now) == [ROUTE]
            assert [atom.key for atom in dam.scan("", None, 100, now)[0]] == [ROUTE, SESSION]
        bad_keys = sorted(CORRUPT)
        assert dam.get(bad_keys[0], now) is None and dam.get(HASH, now) is None
        assert set(dam.get_many([*bad_keys, SESSION], now)) == {SESSION}
        stats = dam.stats()
        assert stats["corrupt_atoms"] == 2 * (3 + 6) + 1 + 5, "every sighting is counted (the hash reads as absent)"
        assert stats["atoms"]["total"] == 2 + len(CORRUPT) + 2
        for key in bad_keys:
            assert warnings_naming(caplog, key) == 1, key
        assert warnings_naming(caplog, NOT_UTF8.decode(errors="backslashreplace")) == 1
    finally:
        dam.close()


def test_writes_replace_or_remove_a_corrupt_atom(store: redis.Redis, redis_server: RedisServer) -> None:
    plant(store)
    dam = RedisDam(redis_server.url, prefix=PREFIX)
    try:
        now = time.time()
        not_msgpack, no_data, string_version, list_data, _trailing = CORRUPT
        assert dam.put(not_msgpack, {"n": 1}, origin="lbu1", ttl=None, now=now).version == 1
        assert dam.get(not_msgpack, now).data == {"n": 1}
        assert dam.put(HASH, {"n": 2}, origin="lbu1", ttl=60, now=now, expected_version=0).version == 1
        assert dam.get(HASH, now).data == {"n": 2}
        assert dam.touch(string_version, 60, now) is False, "a corrupt atom is not live"
        dam.delete(no_data, now)
        dam.delete(list_data, now)
        assert store.exists(PREFIX + no_data, PREFIX + list_data) == 0
        assert dam.stats()["failed_writes"] == 0
    finally:
        dam.close()


def test_corrupt_change_messages_are_skipped_and_counted(store: redis.Redis, redis_server: RedisServer) -> None:
    dam = RedisDam(redis_server.url, prefix=PREFIX)
    try:
        channel = PREFIX + "changes"
        for message in (
            b"\xc1",
            blob("delete"),  # no key
            blob("rename", ROUTE),
            blob("put", ROUTE) + b"\xc1",
            blob("put", ROUTE, 1, "lbu1", None, "not a map"),
        ):
            store.publish(channel, message)
        store.publish("__keyevent@0__:expired", PREFIX.encode() + b"\xff")
        written = dam.put(SESSION, {"sid": "good"}, origin="lbu1", ttl=60, now=time.time())
        seen: list[Change] = []
        poll_until(lambda: seen.extend(dam.poll_changes()) or seen, WAIT)
        assert seen == [Change("put", SESSION, written)]
        assert dam.stats()["corrupt_changes"] == 6
    finally:
        dam.close()


def limit_to_routes(server: RedisServer) -> str:
    """Create a Redis user that may write route atoms (and the epoch) only; its URL."""
    admin = redis.Redis.from_url(server.url)
    admin.execute_command(
        "ACL", "SETUSER", "routes", "on", ">pw", f"~{PREFIX}{ROUTE_PREFIX}*", f"~{EPOCH_KEY}*", "&*", "+@all"
    )
    admin.close()
    return f"redis://routes:pw@127.0.0.1:{server.port}/0"


def test_a_refused_write_fails_alone_and_the_rest_of_its_batch_goes_through() -> None:
    server = RedisServer()
    server.start()
    dam = RedisDam(limit_to_routes(server), prefix=PREFIX)
    routes = [route_key("10.0.0.1", port, "10.0.0.100", 80) for port in (1, 2, 3)]
    try:
        now = time.time()
        with pytest.raises(redis.exceptions.ResponseError):
            dam.put(SESSION, {}, origin="lbu1", ttl=60, now=now)
        assert dam.put(routes[0], {}, origin="lbu1", ttl=60, now=now).version == 1 and not dam.degraded
        server.stop()
        dam.put(routes[1], {}, origin="lbu1", ttl=60, now=now)
        dam.put(SESSION, {}, origin="lbu1", ttl=60, now=now)
        dam.put(routes[2], {}, origin="lbu1", ttl=60, now=now)
        assert dam.degraded and dam.stats()["queued"] == 3
        server.start()  # same port, empty: the user again
        limit_to_routes(server)
        assert dam.replay(now) == 2
        stats = dam.stats()
        assert (stats["degraded"], stats["queued"], stats["failed_writes"]) == (False, 0, 2)
        assert set(dam.get_many(routes, now)) == set(routes[1:])
    finally:
        dam.close()
        server.cleanup()


# -- the core refuses atoms it cannot read, alone ---------------------------------------------------------------------


def session_data(sid: str, **fields: Any) -> dict[str, Any]:
    """The data of an ``app`` session of VIP web on member h1."""
    data = {"sid": sid, "stype": "app", "vip": "web", "member": "h1", "pip": "10.0.0.11", "pport": 80}
    return {**data, "client": "10.0.0.1", "host_id": "h1", **fields}


GOOD_ROUTE = Atom(route_key("10.0.0.1", 40000, WEB_VIP, 80), {"member": "h1", "dpid": 1}, 1, "lbu9", None)
GOOD_SESSION = Atom(session_key("app", "good"), session_data("good"), 1, "lbu9", 1e12)
REFUSED = [
    Atom(ROUTE_PREFIX + "tcp:not-a-connection", {"member": "h1"}, 1, "lbu9", None),
    Atom(route_key("10.0.0.1", 40001, WEB_VIP, 80), {"member": "h1", "dpid": "one"}, 1, "lbu9", None),
    Atom(session_key("app", "fields"), {"sid": "fields"}, 1, "lbu9", 1e12),
    Atom(session_key("app", "port"), session_data("port", pport="http"), 1, "lbu9", 1e12),
    Atom(session_key("app", "other"), session_data("somebody-else"), 1, "lbu9", 1e12),
]
"""Atoms that decode but are not what an LBU writes: a key that does not parse, data of the wrong shape or type."""


def test_the_core_refuses_bad_atoms_alone_counts_them_and_says_why() -> None:
    lb = LoadBalancer(weighted_web_config())
    lb.load_atoms([REFUSED[0], GOOD_ROUTE, *REFUSED[1:], GOOD_SESSION], 1.0)
    assert [c["client"] for c in lb.connections()] == ["10.0.0.1:40000"]
    assert list(lb.ctx.affinity.sessions.sessions) == [GOOD_SESSION.key]
    assert lb.stats()["dropped"]["dam_bad_atom"] == len(REFUSED)
    rejected = dict(lb.rejected_atoms())
    assert set(rejected) == {atom.key for atom in REFUSED} and "somebody-else" in rejected[REFUSED[4].key]
    assert lb.rejected_atoms() == []
    for atom in REFUSED:  # the same atoms as another LBU's changes: each fails alone, nothing raises
        assert lb.apply_dam_change("put", atom.key, atom, 2.0) == NO_EFFECTS
    assert lb.stats()["dropped"]["dam_bad_atom"] == 2 * len(REFUSED)
    assert set(dict(lb.rejected_atoms())) == {atom.key for atom in REFUSED}


# -- a controller starts over bad data -----------------------------------------------------------------------------


def redis_classifier(url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, **vip: Any) -> Any:
    """A classifier app on VIP web with the redis DAM at ``url`` (prefix PREFIX), made as os-ken makes it."""
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    data = dump_config(web_config([web_member(i) for i in (1, 2, 3)], **vip))
    data["controller"]["rest"] = {"enabled": False}
    data["controller"]["dam"] = {"backend": "redis", "url": url, "prefix": PREFIX}
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return Classifier()


def test_a_controller_starts_over_corrupt_atoms_and_loads_the_rest(
    store: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    writer = RedisDam(redis_server.url, prefix=PREFIX)
    for atom in (GOOD_ROUTE, GOOD_SESSION, *REFUSED):
        ttl = None if atom.expires_at is None else 600
        writer.put(atom.key, atom.data, origin=atom.origin, ttl=ttl, now=time.time())
    writer.close()
    plant(store)
    app = redis_classifier(redis_server.url, tmp_path, monkeypatch)
    try:
        assert [c["client"] for c in app.lb.connections()] == ["10.0.0.1:40000"]
        assert list(app.lb.ctx.affinity.sessions.sessions) == [GOOD_SESSION.key]
        assert app.dam.stats()["corrupt_atoms"] == len(CORRUPT) + 1  # the shell's copy is refreshed each second
        assert app.stats()["dropped"]["dam_bad_atom"] == len(REFUSED)
        for key in [*CORRUPT, *(atom.key for atom in REFUSED)]:
            assert warnings_naming(caplog, key) == 1, key
    finally:
        app.dam.close()
