"""Sessions and live routes come back when the DAM store loses them (issue 12): the epoch marker tells a flushed or
restarted store, the core re-puts what this LBU owns, and the shell ties the two through its event loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from nlb_sdn.affinity.sessions import Session
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import DamVerb
from nlb_sdn.dam import Atom, MemoryDam, RedisDam, route_key, session_key
from nlb_sdn.flows.pipeline import Table
from tests.frames import syn_frame
from tests.lib.configs import WEB_VIP, web_config, web_member
from tests.lib.net import free_port
from tests.lib.redis_server import RedisServer
from tests.unit.test_dam_bad_data import PREFIX, redis_classifier

ROUTE = route_key("10.0.0.1", 40000, WEB_VIP, 80)
OWN_SESSION = session_key("client_ip", "web@10.0.0.1")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server shared by this module's tests."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


def losses(dam: RedisDam, now: float, rounds: int = 3) -> list[bool]:
    """``take_data_loss`` after each of ``rounds`` maintenance rounds (a restart may take two: fail, reconnect)."""
    seen = []
    for _ in range(rounds):
        dam.maintain(now)
        seen.append(dam.take_data_loss())
    return seen


def test_a_flushed_store_is_noticed_once_by_every_instance(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushall()
    one, two = RedisDam(redis_server.url, prefix=PREFIX), RedisDam(redis_server.url, prefix=PREFIX)
    other = RedisDam(redis_server.url, prefix="other:")
    try:
        now = time.time()
        assert losses(one, now) == losses(two, now) == losses(other, now) == [False] * 3
        one.put(ROUTE, {}, origin="lbu1", ttl=None, now=now)
        assert one.stats()["atoms"]["total"] == 1, "the marker is not an atom"
        admin.flushdb()
        assert losses(one, now) == [True, False, False]
        assert losses(two, now) == [True, False, False], "the first to notice writes a new epoch; others see it"
        assert losses(other, now) == [True, False, False]
        assert (one.stats()["data_losses"], MemoryDam().take_data_loss()) == (1, False)
    finally:
        for dam in (one, two, other):
            dam.close()
        admin.close()


def test_a_store_restarted_empty_is_noticed_after_the_reconnect() -> None:
    server = RedisServer()
    server.start()
    dam = RedisDam(server.url, prefix=PREFIX)
    late = RedisDam(f"redis://127.0.0.1:{free_port()}/0", prefix=PREFIX)  # unreachable at start
    try:
        now = time.time()
        dam.put(ROUTE, {}, origin="lbu1", ttl=None, now=now)
        server.stop()
        server.start()  # no persistence: empty
        assert losses(dam, now).count(True) == 1, "at once, or after the reconnect"
        assert late.degraded and losses(late, now) == [False] * 3, "a store first seen after a start lost nothing"
    finally:
        dam.close()
        late.close()
        server.cleanup()


def affinity_lb(now: float) -> LoadBalancer:
    """VIP web with client_ip affinity, and client 10.0.0.1's first connection (a route and a session) at ``now``."""
    lb = LoadBalancer(web_config([web_member(i) for i in (1, 2, 3)], affinity="client_ip"))
    frame = syn_frame("10.0.0.1", 40000, WEB_VIP, 80)
    lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now)
    return lb


def test_republish_puts_own_live_sessions_with_their_remaining_time_and_every_tracked_route() -> None:
    lb = affinity_lb(100.0)
    own = lb.ctx.affinity.sessions.sessions[OWN_SESSION]
    theirs = Session("s1", "app", "web", "h1", "10.0.0.11", 80, "10.0.0.2", "h1", 1000.0, "lbu9")
    lb.apply_dam_change("put", theirs.key, Atom(theirs.key, theirs.to_data(), 1, "lbu9", 1000.0), 100.0)
    expired = Session("s2", "app", "web", "h1", "10.0.0.11", 80, "10.0.0.3", "h1", 350.0, lb.origin)
    lb.ctx.affinity.sessions.upsert(expired)
    assert len(lb.ctx.affinity.sessions) == 3
    effects = lb.republish(400.0)
    assert not effects.messages and not effects.datagrams
    puts = {op.key: op for op in effects.dam}
    assert set(puts) == {OWN_SESSION, ROUTE} and {op.verb for op in effects.dam} == {DamVerb.PUT}
    assert (puts[OWN_SESSION].data, puts[OWN_SESSION].ttl) == (own.to_data(), own.expires_at - 400.0)
    conn = lb.ctx.table.get(("10.0.0.1", 40000, WEB_VIP, 80))
    assert conn is not None and (puts[ROUTE].data, puts[ROUTE].ttl) == (conn.atom_data(), None)


def test_the_controller_republishes_its_sessions_and_routes_after_a_flush(
    redis_server: RedisServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlb_sdn.apps.classifier import EventDamChanges

    admin = redis.Redis.from_url(redis_server.url)
    admin.flushall()
    app = redis_classifier(redis_server.url, tmp_path, monkeypatch, affinity="client_ip")
    posted: list[Any] = []
    app.post = posted.append
    try:
        frame = syn_frame("10.0.0.1", 40000, WEB_VIP, 80)
        app.carry_out(app.lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, time.time()))
        app.dam_round(time.time(), maintain=True)
        before = app.dam.get_many([ROUTE, OWN_SESSION], time.time())
        assert set(before) == {ROUTE, OWN_SESSION} and not posted[-1].republish
        admin.flushall()
        app.dam_round(time.time(), maintain=True)
        event = posted[-1]
        assert isinstance(event, EventDamChanges) and event.republish
        app.on_dam_changes(event)  # the event loop
        app.dam_round(time.time(), maintain=False)
        after = app.dam.get_many([ROUTE, OWN_SESSION], time.time())
        assert {key: atom.data for key, atom in after.items()} == {key: atom.data for key, atom in before.items()}
        assert after[ROUTE].expires_at is None
        assert abs(after[OWN_SESSION].expires_at - before[OWN_SESSION].expires_at) < 1.0, "its remaining time"
    finally:
        app.dam.close()
        admin.close()
