"""Redis Sentinel: the URL form, the config, and a real failover on 127.0.0.1 followed by the DAM and the store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pydantic
import pytest
import redis

from nlb_sdn.config.state import StateSettings
from nlb_sdn.dam import Change, DamConfig, RedisDam, make_dam, route_key, session_key
from nlb_sdn.dam.sentinel import SentinelUrl, location, parse_sentinel_url, redis_client
from nlb_sdn.store import StateError
from nlb_sdn.store.redis_store import RedisStore
from tests.lib.polling import poll_until
from tests.lib.redis_server import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelGroup

PREFIX = "sent:"
FOLLOW_TIMEOUT = DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000
"""Seconds the clients may take to follow the promoted replica: the Sentinels' down-after time plus the failover."""


def test_sentinel_urls_are_parsed() -> None:
    assert parse_sentinel_url("redis+sentinel://127.0.0.1:26379,[::1]:26380,sentinel3/mymaster/2") == SentinelUrl(
        [("127.0.0.1", 26379), ("::1", 26380), ("sentinel3", 26379)], "mymaster", 2, None
    )
    assert parse_sentinel_url("redis+sentinel://:s%40cret@h:1/svc") == SentinelUrl([("h", 1)], "svc", 0, "s@cret")


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/",
        "redis+sentinel://h:port/svc",
        "redis+sentinel://h:1,/svc",
        "redis+sentinel://h:70000/svc",
        "redis+sentinel://h:1/svc/db",
        "redis+sentinel://h:1/svc/0/more",
    ],
)
def test_bad_sentinel_urls_are_rejected_by_the_config(url: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_sentinel_url(url)
    with pytest.raises(pydantic.ValidationError, match="url"):
        DamConfig(url=url)
    with pytest.raises(pydantic.ValidationError, match="url"):
        StateSettings(url=url)


def test_sentinel_urls_are_accepted_by_the_config_and_logged_without_password() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/1"
    assert DamConfig(backend="redis", url=url).url == url
    assert StateSettings(url=url).url == url
    client = redis_client(url, 0.2)
    assert location(url, client) == "sentinel 127.0.0.1:26379,127.0.0.1:26380 service mymaster/1"
    client.close()


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    """A primary, a replica and three Sentinels, all stopped by PID at the end."""
    servers = SentinelGroup()
    servers.start()
    yield servers
    servers.cleanup()


def _replicated(group: SentinelGroup) -> None:
    """Wait until the replica acknowledged every write so far (Redis replication is asynchronous)."""
    primary = redis.Redis(port=group.primary.port)
    assert primary.execute_command("WAIT", 1, 2000) == 1
    primary.close()


def _follows(dam: RedisDam, now: float) -> bool:
    """Run the DAM's periodic maintenance once; whether it is out of degraded mode with its queue replayed."""
    dam.maintain(now)
    return not dam.degraded and dam.stats()["queued"] == 0


def test_the_dam_and_the_state_store_follow_a_failover(group: SentinelGroup) -> None:
    now = time.time()
    one = make_dam(DamConfig(backend="redis", url=group.url, prefix=PREFIX))
    two = RedisDam(group.url, prefix=PREFIX)
    store = RedisStore(group.url, PREFIX)
    route = route_key("10.0.0.1", 40000, "10.0.0.100", 80)
    session = session_key("http_cookie", "abc")
    try:
        assert isinstance(one, RedisDam)
        assert store.changed()  # first call subscribes
        stored = one.put(route, {"endpoint": "10.0.0.11:80"}, origin="lbu1", ttl=None, now=now)
        one.put(session, {"endpoint": "10.0.0.12:80"}, origin="lbu1", ttl=600, now=now)
        version = store.save([{"name": "web"}], {"web": 1}, None)
        assert two.poll_changes(10)[0] == Change("put", route, stored)
        _replicated(group)

        group.primary.kill()
        # While the Sentinels agree the primary is down, writes queue (degraded) and are replayed on the new primary.
        queued = route_key("10.0.0.2", 40001, "10.0.0.100", 80)
        one.put(queued, {"endpoint": "10.0.0.13:80"}, origin="lbu1", ttl=None, now=now)
        assert one.degraded and one.stats()["queued"] == 1
        started = time.monotonic()
        assert poll_until(lambda: _follows(one, time.time()), FOLLOW_TIMEOUT, 0.1)
        assert time.monotonic() - started < FOLLOW_TIMEOUT
        assert group.primary_port() == group.replica.port
        assert poll_until(lambda: _follows(two, time.time()), FOLLOW_TIMEOUT, 0.1)

        now = time.time()
        assert set(two.get_many([route, session, queued], now)) == {route, session, queued}
        assert two.get(route, now) == stored
        assert one.stats()["replayed"] == 1
        # The promoted replica holds the same epoch marker: no data loss is reported, nothing is re-published.
        assert not one.take_data_loss() and not two.take_data_loss()
        # The feed broke with the old primary (counted); the next maintenance subscribes it on the new one.
        assert two.poll_changes(100) == [] and two.stats()["feed_resets"] == 1
        two.maintain(now)
        again = one.put(route, {"endpoint": "10.0.0.14:80"}, origin="lbu1", ttl=None, now=now)
        assert again.version == stored.version + 1
        assert poll_until(lambda: Change("put", route, again) in two.poll_changes(10), 2.0, 0.05)

        _store_follows(store, version)
    finally:
        for dam in (one, two):
            dam.close()
        store.close()


def _store_follows(store: RedisStore, version: int) -> None:
    """The state store reads the replicated state from the new primary, and saves and publishes there."""
    loaded = store.load()
    assert loaded is not None and loaded.version == version and loaded.vip_ids == {"web": 1}
    # The feed broke with the old primary: the next call resubscribes (on the new one) and says "maybe changed".
    assert poll_until(lambda: _changed(store), FOLLOW_TIMEOUT, 0.1)
    assert store.save([{"name": "web"}, {"name": "api"}], {"web": 1, "api": 2}, version) == version + 1
    assert poll_until(lambda: _changed(store), 2.0, 0.05)


def _changed(store: RedisStore) -> bool:
    """Whether the store's change feed reports a change; False while it cannot reach a primary."""
    try:
        return store.changed()
    except StateError:  # while no primary answers
        return False
