"""The DAM contract, one suite over both backends: MemoryDam on a fake clock, RedisDam on a private redis-server."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pydantic
import pytest
import redis

from nlb_sdn.dam import (
    ROUTE_PREFIX,
    SESSION_PREFIX,
    Atom,
    Change,
    Dam,
    DamConfig,
    MemoryDam,
    RedisDam,
    VersionConflict,
    any_type_session_key,
    kind_of,
    make_dam,
    parse_route_key,
    route_key,
    session_key,
)
from tests.lib.net import free_port
from tests.lib.polling import poll_until
from tests.lib.redis_server import RedisServer

ROUTE = route_key("10.0.0.1", 40000, "10.0.0.100", 80)
SESSION = session_key("http_cookie", "abc123")
ENDPOINT = {"ip": "10.0.0.11", "port": 8080, "mac": "00:00:00:00:00:11", "mode": "nat", "flow_id": None}
WAIT = 3.0  # bound on every wait for Redis (pub/sub delivery, server-side expiry)


class Harness:
    """One backend under test: makes DAM instances, gives ``now``, and lets time pass."""

    def __init__(
        self, name: str, make: Callable[[], Dam], clock: Callable[[], float], advance: Callable[[float], None]
    ) -> None:
        self.name = name
        self.make = make
        self.now = clock
        self.advance = advance


def collect(dam: Dam, until: Callable[[list[Change]], bool]) -> list[Change]:
    """Changes from the feed until ``until`` holds (Redis delivers asynchronously: poll, bounded by WAIT)."""
    changes: list[Change] = []

    def enough() -> bool:
        """Take what the feed has now; whether ``until`` holds."""
        changes.extend(dam.poll_changes())
        return until(changes)

    poll_until(enough, WAIT)
    return changes


def changes(dam: Dam, count: int) -> list[Change]:
    """At least ``count`` changes from the feed (fewer only after WAIT)."""
    return collect(dam, lambda seen: len(seen) >= count)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server shared by this module's tests."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Each backend in turn; Redis starts from an empty database, memory from a fake clock at 1000 s."""
    made: list[Dam] = []
    if request.param == "memory":
        clock = [1000.0]

        def make() -> Dam:
            made.append(MemoryDam())
            return made[-1]

        def advance(seconds: float) -> None:
            clock[0] += seconds

        yield Harness("memory", make, lambda: clock[0], advance)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        redis.Redis.from_url(server.url).flushdb()

        def make() -> Dam:
            made.append(RedisDam(server.url, prefix="test:"))
            return made[-1]

        yield Harness("redis", make, time.time, time.sleep)
    for dam in made:
        dam.close()


def test_keys_and_kinds():
    assert ROUTE == "conn:tcp:10.0.0.1:40000:10.0.0.100:80"
    assert SESSION == "sess:http_cookie:abc123"
    assert [kind_of(k) for k in (ROUTE, SESSION, "lease:lbu1")] == ["route", "session", "other"]
    with pytest.raises(ValueError, match="session type"):
        session_key("jwt", "x")
    with pytest.raises(ValueError, match="empty"):
        session_key("app", "")


def test_route_keys_parse_back_and_application_session_types_have_keys_too():
    assert parse_route_key(ROUTE) == ("10.0.0.1", 40000, "10.0.0.100", 80)
    with pytest.raises(ValueError, match="not a route atom key"):
        parse_route_key(SESSION.replace("http_cookie", "a:b:c:d"))
    assert ROUTE.startswith(ROUTE_PREFIX) and SESSION.startswith(SESSION_PREFIX)
    assert any_type_session_key("http_cookie", "abc123") == SESSION
    cart = any_type_session_key("cart", "x")
    assert cart == "sess:cart:x" and kind_of(cart) == "session"


def test_config_defaults_and_validation(redis_server):
    config = DamConfig()
    assert (config.backend, config.prefix, config.queue_limit, config.route_linger, config.session_ttl) == (
        "memory",
        "nlb:",
        10_000,
        120,
        600,
    )
    assert isinstance(make_dam(config), MemoryDam)
    for bad in (
        {"backend": "etcd"},
        {"url": "http://x"},
        {"prefix": "a*"},
        {"prefix": ""},
        {"queue_limit": 0},
        {"colour": 1},
    ):
        with pytest.raises(pydantic.ValidationError):
            DamConfig.model_validate(bad)
    dam = make_dam(DamConfig(backend="redis", url=redis_server.url, queue_limit=5))
    assert isinstance(dam, RedisDam) and not dam.degraded
    dam.close()


def test_put_get_delete_get_many(harness):
    dam = harness.make()
    now = harness.now()
    atom = dam.put(ROUTE, ENDPOINT, origin="lbu1", ttl=None, now=now)
    assert atom == Atom(ROUTE, ENDPOINT, 1, "lbu1", None)
    assert dam.get(ROUTE, now) == atom and atom.kind == "route"
    dam.put(SESSION, {"endpoint": "10.0.0.12:8080", "host": 2}, origin="lbu2", ttl=600, now=now)
    many = dam.get_many([ROUTE, SESSION, "sess:app:missing"], now)
    assert sorted(many) == sorted([ROUTE, SESSION])
    assert many[SESSION].data == {"endpoint": "10.0.0.12:8080", "host": 2}
    assert many[SESSION].expires_at == pytest.approx(now + 600)
    assert dam.get_many([], now) == {}
    assert dam.delete(ROUTE, now) is True
    assert dam.get(ROUTE, now) is None
    assert dam.delete(ROUTE, now) is False
    stats = dam.stats()
    assert stats["backend"] == harness.name and stats["degraded"] is False and stats["queued"] == 0
    assert stats["atoms"] == {"route": 0, "session": 1, "other": 0, "total": 1}
    assert stats["operations"]["put"] == 2 and stats["operations"]["delete"] == 2
    assert stats["operations"]["hits"] == 3 and stats["operations"]["misses"] == 2


def test_data_round_trips_through_msgpack_and_bad_arguments_are_refused(harness):
    dam = harness.make()
    now = harness.now()
    data = {"s": "é", "i": -5, "f": 1.5, "b": b"\x00\xff", "n": None, "l": [1, [2]], "d": {"x": True}, 7: "int key"}
    dam.put("other:x", data, origin="lbu1", ttl=None, now=now)
    assert dam.get("other:x", now).data == data
    with pytest.raises(TypeError):
        dam.put("other:y", {"bad": object()}, origin="lbu1", ttl=None, now=now)
    with pytest.raises(TypeError):
        dam.put("other:y", ["not", "a", "dict"], origin="lbu1", ttl=None, now=now)  # type: ignore[arg-type]
    for ttl in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ttl"):
            dam.put("other:y", {}, origin="lbu1", ttl=ttl, now=now)
    with pytest.raises(ValueError, match="count"):
        dam.scan("", None, 0, now)
    assert dam.get("other:y", now) is None


def test_versions_grow_and_record_the_origin(harness):
    dam = harness.make()
    now = harness.now()
    versions = [dam.put(ROUTE, {"n": n}, origin=f"lbu{n % 2}", ttl=60, now=now).version for n in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    assert dam.get(ROUTE, now) == Atom(ROUTE, {"n": 4}, 5, "lbu0", now + 60)


def test_compare_and_set(harness):
    dam = harness.make()
    now = harness.now()
    assert dam.put(SESSION, {"v": 1}, origin="lbu1", ttl=None, now=now, expected_version=0).version == 1
    with pytest.raises(VersionConflict) as conflict:
        dam.put(SESSION, {"v": 2}, origin="lbu2", ttl=None, now=now, expected_version=0)
    assert (conflict.value.key, conflict.value.expected, conflict.value.actual) == (SESSION, 0, 1)
    assert dam.put(SESSION, {"v": 2}, origin="lbu2", ttl=None, now=now, expected_version=1).version == 2
    with pytest.raises(VersionConflict):
        dam.put(SESSION, {"v": 3}, origin="lbu1", ttl=None, now=now, expected_version=1)
    with pytest.raises(VersionConflict):
        dam.put(ROUTE, {}, origin="lbu1", ttl=None, now=now, expected_version=3)
    with pytest.raises(VersionConflict):
        dam.delete(SESSION, now, expected_version=1)
    assert dam.get(SESSION, now).data == {"v": 2}
    assert dam.delete(SESSION, now, expected_version=2) is True
    assert dam.delete(SESSION, now, expected_version=0) is False
    assert dam.stats()["operations"]["conflicts"] == 4


def test_ttl_expiry_and_expire_changes(harness):
    dam = harness.make()
    now = harness.now()
    dam.put(ROUTE, {"a": 1}, origin="lbu1", ttl=0.3, now=now)
    dam.put(SESSION, {"b": 2}, origin="lbu1", ttl=None, now=now)
    assert dam.get(ROUTE, now + 0.29) is not None
    assert dam.get(ROUTE, now + 0.3) is None  # expired at expires_at, by the caller's now
    harness.advance(0.35)

    def route_gone() -> bool:
        """Whether the route atom is gone (Redis's own TTL removes the key); if not, let the DAM maintain itself."""
        if not dam.stats()["atoms"]["route"]:
            return True
        dam.maintain(harness.now())
        return False

    poll_until(route_gone, WAIT, 0.02)
    assert dam.stats()["atoms"] == {"route": 0, "session": 1, "other": 0, "total": 1}
    expired = Change("expire", ROUTE, None)
    assert [c for c in collect(dam, lambda seen: expired in seen) if c.op == "expire"] == [expired]
    assert dam.get(SESSION, harness.now()) is not None
    assert dam.put(ROUTE, {"a": 2}, origin="lbu1", ttl=None, now=harness.now(), expected_version=0).version == 1


def test_touch_sets_a_new_expiry_and_keeps_the_version(harness):
    dam = harness.make()
    now = harness.now()
    dam.put(ROUTE, ENDPOINT, origin="lbu1", ttl=15, now=now)
    dam.put(ROUTE, ENDPOINT, origin="lbu1", ttl=15, now=now)
    assert dam.touch(ROUTE, 120, now + 1) is True  # route linger after the flow is removed
    assert dam.get(ROUTE, now + 100) == Atom(ROUTE, ENDPOINT, 2, "lbu1", now + 121)
    assert dam.touch(ROUTE, None, now + 100) is True
    assert dam.get(ROUTE, now + 10_000) == Atom(ROUTE, ENDPOINT, 2, "lbu1", None)
    assert dam.touch(ROUTE, 1, now + 10_000) is True
    assert dam.get(ROUTE, now + 10_001) is None
    assert dam.touch("sess:app:missing", 10, now) is False
    dam.put(SESSION, {}, origin="lbu1", ttl=1, now=now)
    assert dam.touch(SESSION, 10, now + 1) is False  # already expired
    assert dam.get(SESSION, now + 1) is None


def test_scan_paging_covers_every_atom_exactly_once(harness):
    dam = harness.make()
    now = harness.now()
    routes = {route_key(f"10.0.{i // 250}.{i % 250 + 1}", 40000 + i, "10.0.0.100", 80) for i in range(300)}
    sessions = {session_key("client_ip", f"10.1.0.{i}") for i in range(1, 41)}
    for key in sorted(routes | sessions):
        dam.put(key, {"k": key}, origin="lbu1", ttl=600, now=now)
    dam.put(route_key("10.9.9.9", 1, "10.0.0.100", 80), {}, origin="lbu1", ttl=1, now=now)  # expired while scanning
    for prefix, expected in (("conn:", routes), ("sess:client_ip:", sessions), ("", routes | sessions)):
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10_000):
            page, cursor = dam.scan(prefix, cursor, 25, now + 1)
            seen += [atom.key for atom in page]
            assert all(atom.data == {"k": atom.key} for atom in page)
            if cursor is None:
                break
        assert cursor is None
        assert len(seen) == len(expected) and set(seen) == expected


def test_change_feed_sees_puts_and_deletes(harness):
    dam = harness.make()
    now = harness.now()
    first = dam.put(ROUTE, ENDPOINT, origin="lbu1", ttl=60, now=now)
    second = dam.put(ROUTE, {"moved": True}, origin="lbu2", ttl=60, now=now)
    dam.delete(ROUTE, now)
    dam.delete(SESSION, now)  # nothing to delete: no change
    assert changes(dam, 3) == [Change("put", ROUTE, first), Change("put", ROUTE, second), Change("delete", ROUTE, None)]
    dam.put(SESSION, {}, origin="lbu1", ttl=None, now=now)
    dam.put(SESSION, {}, origin="lbu1", ttl=None, now=now)
    assert [c.atom.version for c in changes(dam, 2)] == [1, 2]
    assert dam.poll_changes() == []


def test_memory_sweep_removes_expired_atoms_in_expiry_order():
    dam = MemoryDam()
    for n, ttl in enumerate((5, 1, 3, None)):
        dam.put(f"other:{n}", {}, origin="lbu1", ttl=ttl, now=0)
    dam.touch("other:1", 10, 0.5)
    for _ in range(3000):  # stale heap entries are compacted away
        dam.touch("other:0", 5, 0)
    assert dam.sweep(2) == 0
    assert dam.sweep(5) == 2
    assert [c.key for c in dam.poll_changes() if c.op == "expire"] == ["other:2", "other:0"]
    dam.maintain(10.5)
    assert sorted(a.key for a in dam.scan("", None, 10, 10.5)[0]) == ["other:3"]
    assert dam.stats()["operations"]["expired"] == 3


def test_memory_feed_is_bounded():
    dam = MemoryDam(feed_limit=2)
    for n in range(3):
        dam.put(ROUTE, {"n": n}, origin="lbu1", ttl=None, now=0)
    assert [c.atom.data for c in dam.poll_changes(max_items=1)] == [{"n": 1}]
    assert dam.stats()["feed_dropped"] == 1 and dam.stats()["feed_pending"] == 1


def test_two_redis_instances_share_atoms_and_changes(redis_server):
    redis.Redis.from_url(redis_server.url).flushdb()
    one, two = RedisDam(redis_server.url, prefix="test:"), RedisDam(redis_server.url, prefix="test:")
    other = RedisDam(redis_server.url, prefix="other:")
    try:
        now = time.time()
        written = one.put(SESSION, {"endpoint": "10.0.0.11:8080"}, origin="lbu1", ttl=60, now=now)
        assert two.get(SESSION, now) == written
        assert other.get(SESSION, now) is None
        with pytest.raises(VersionConflict):
            two.put(SESSION, {}, origin="lbu2", ttl=60, now=now, expected_version=0)
        two.delete(SESSION, now, expected_version=1)
        assert one.get(SESSION, now) is None
        expected = [Change("put", SESSION, written), Change("delete", SESSION, None)]
        assert changes(one, 2) == expected
        assert changes(two, 2) == expected
        assert other.poll_changes() == []
    finally:
        for dam in (one, two, other):
            dam.close()


def test_redis_outage_queues_writes_and_replays_them():
    server = RedisServer()
    server.start()
    dam = RedisDam(server.url, prefix="test:")
    try:
        now = time.time()
        dam.put(ROUTE, {"n": 0}, origin="lbu1", ttl=60, now=now)
        server.stop()
        started = time.monotonic()
        queued = dam.put(ROUTE, {"n": 1}, origin="lbu1", ttl=60, now=now)
        assert queued.version == 0 and dam.degraded
        assert dam.get(ROUTE, now) is None
        assert dam.put(SESSION, {"s": 1}, origin="lbu1", ttl=60, now=now).version == 0
        assert dam.put("other:gone", {}, origin="lbu1", ttl=0.05, now=now).version == 0
        assert dam.delete(SESSION, now) is False
        assert dam.put(SESSION, {"s": 2}, origin="lbu1", ttl=60, now=now, expected_version=0).version == 0
        assert dam.touch(ROUTE, 120, now) is False
        assert dam.scan("", None, 10, now) == ([], None) and dam.poll_changes() == []
        assert dam.replay(now) == 0 and dam.degraded
        assert time.monotonic() - started < 2.0  # short timeouts: nothing hangs
        stats = dam.stats()
        assert (stats["degraded"], stats["queued"], stats["atoms"]) == (True, 6, None)
        assert stats["operations"]["degraded_reads"] == 2
        server.start()  # same port
        assert dam.replay(now + 0.1) == 5
        stats = dam.stats()
        assert (stats["degraded"], stats["queued"], stats["replayed"]) == (False, 0, 5)
        assert (stats["replay_expired"], stats["replay_conflicts"], stats["feed_resets"]) == (1, 0, 1)
        assert stats["atoms"] == {"route": 1, "session": 1, "other": 0, "total": 2}
        assert dam.get(ROUTE, now) == Atom(ROUTE, {"n": 1}, 1, "lbu1", now + 120)  # the server lost n=0
        assert dam.get(SESSION, now) == Atom(SESSION, {"s": 2}, 1, "lbu1", now + 60)
        dam.put(ROUTE, {"n": 2}, origin="lbu1", ttl=60, now=now)
        assert [c.op for c in changes(dam, 5)] == ["put", "put", "delete", "put", "put"]  # replayed, then new
    finally:
        dam.close()
        server.cleanup()


def test_a_read_only_redis_degrades_until_it_is_a_primary_again(redis_server):
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushdb()
    dam = RedisDam(redis_server.url, prefix="test:")
    try:
        admin.replicaof("127.0.0.1", free_port())  # demoted, as after a failover; its primary is unreachable
        now = time.time()
        assert dam.put(SESSION, {"s": 1}, origin="lbu1", ttl=60, now=now).version == 0 and dam.degraded
        assert dam.replay(now) == 0 and dam.degraded and dam.stats()["queued"] == 1
        admin.replicaof("NO", "ONE")
        assert dam.replay(now) == 1 and not dam.degraded
        assert dam.get(SESSION, now).data == {"s": 1}
    finally:
        admin.replicaof("NO", "ONE")
        dam.close()


def test_redis_write_queue_is_bounded_and_drops_the_oldest():
    server = RedisServer(free_port())
    dam = RedisDam(server.url, prefix="test:", queue_limit=3)
    try:
        now = time.time()
        assert dam.degraded  # nothing listens yet: usable from the start
        for n in range(5):
            dam.put(ROUTE, {"n": n}, origin="lbu1", ttl=None, now=now)
        assert (dam.stats()["queued"], dam.stats()["dropped_writes"]) == (3, 2)
        dam.put(SESSION, {}, origin="lbu1", ttl=None, now=now, expected_version=0)
        dam.put(SESSION, {}, origin="lbu1", ttl=None, now=now, expected_version=0)
        server.start()
        assert dam.replay(now) == 2
        stats = dam.stats()
        assert (stats["degraded"], stats["replay_conflicts"], stats["dropped_writes"]) == (False, 1, 4)
        assert dam.get(ROUTE, now) == Atom(ROUTE, {"n": 4}, 1, "lbu1", None)
    finally:
        dam.close()
        server.cleanup()


def test_a_silent_store_costs_one_timeout_and_then_nothing():
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        dam = RedisDam(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.2)
        assert dam.degraded and time.monotonic() - started < 1.0
        started = time.monotonic()
        for n in range(100):
            dam.put(ROUTE, {"n": n}, origin="lbu1", ttl=None, now=0)
            assert dam.get(ROUTE, 0) is None
        assert time.monotonic() - started < 0.5 and dam.stats()["queued"] == 100
        started = time.monotonic()
        assert dam.replay(0) == 0 and dam.degraded and time.monotonic() - started < 1.0
        dam.close()


def test_scan_listings_interleave_and_skip_atoms_deleted_meanwhile(harness):
    dam = harness.make()
    now = harness.now()
    routes = [route_key("10.0.0.1", port, "10.0.0.100", 80) for port in range(1000, 1060)]
    sessions = [session_key("app", f"s{n:02}") for n in range(30)]
    for key in routes + sessions:
        dam.put(key, {}, origin="lbu1", ttl=None, now=now)
    seen: dict[str, list[str]] = {"conn:": [], "sess:": []}
    cursors: dict[str, str | None] = {"conn:": None, "sess:": None}
    listing = ["conn:", "sess:"]
    for step in range(1000):
        if not listing:
            break
        prefix = listing[step % len(listing)]
        page, cursors[prefix] = dam.scan(prefix, cursors[prefix], 7, now)
        seen[prefix] += [atom.key for atom in page]
        if cursors[prefix] is None:
            listing.remove(prefix)
        if step == 2:
            victim = next(key for key in reversed(routes) if key not in seen["conn:"])
            assert dam.delete(victim, now)
    assert not listing
    routes.remove(victim)
    assert sorted(seen["conn:"]) == routes and sorted(seen["sess:"]) == sessions


def test_route_keys_bracket_ipv6_addresses_and_parse_back() -> None:
    key = route_key("fd00::1", 40000, "fd00::100", 80)
    assert key == "conn:tcp:[fd00::1]:40000:[fd00::100]:80"
    assert parse_route_key(key) == ("fd00::1", 40000, "fd00::100", 80)
    assert parse_route_key(route_key("10.0.0.1", 1, "10.0.0.100", 80)) == ("10.0.0.1", 1, "10.0.0.100", 80)
    for bad in ("conn:tcp:[fd00::1:40000:[fd00::100]:80", "conn:udp:[fd00::1]:1:[fd00::2]:80", "conn:tcp:1:2:3"):
        with pytest.raises(ValueError):
            parse_route_key(bad)
