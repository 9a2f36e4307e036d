"""Redis clients from a URL: a plain ``redis://``, ``rediss://`` or ``unix://`` server, or a primary behind Sentinel.

``redis+sentinel://[:password@]host:port[,host:port...]/<service_name>[/<db>]`` names the Sentinels (Debian
``redis-sentinel``) that watch ``service_name``: the client asks them for the current primary on every new connection,
so after a failover it follows the promoted replica (the password, if any, is the primary's; Sentinels have none).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
"""The URL scheme of a primary found through Sentinels."""
SENTINEL_PORT = 26379
"""The Sentinel port when a host in the URL gives none."""
URL_PATTERN = r"^(redis|rediss|unix|redis\+sentinel)://"
"""What a Redis URL in the config must start with."""


class SentinelUrl(NamedTuple):
    """A ``redis+sentinel://`` URL taken apart: the Sentinels, the service they watch, the database and password."""

    sentinels: list[tuple[str, int]]
    service_name: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"{url!r}: expected the scheme {SENTINEL_SCHEME}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = (unquote(userinfo.partition(":")[2]) or None) if userinfo else None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), str(SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: expected host:port for every Sentinel, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url!r}: expected /<service_name>[/<db>] after the Sentinels")
    return SentinelUrl(sentinels, path[0], int(path[1]) if len(path) == 2 else 0, password)


def check_url(url: str) -> str:
    """``url`` itself if it is usable (a ``redis+sentinel://`` one is parsed); ValueError naming what is wrong."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        parse_sentinel_url(url)
    return url


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client of the server (or, through Sentinels, of the current primary) at ``url``; calls fail fast, no retry.

    A Sentinel-managed client asks the Sentinels for the primary whenever it opens a connection, and drops a
    connection to a server that turned replica, so callers only need to retry after a ``ConnectionError``.
    """
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
    parsed = parse_sentinel_url(url)
    sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service_name,
        db=parsed.db,
        password=parsed.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


def database(url: str, client: redis.Redis) -> int:
    """The database number ``client`` (made from ``url``) uses."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        return parse_sentinel_url(url).db
    return int(client.connection_pool.connection_kwargs.get("db", 0))


def location(url: str, client: redis.Redis) -> str:
    """Where ``client`` (made from ``url``) points, without password, for logs: ``host:port/db``, a socket, or the
    Sentinels and service."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        parsed = parse_sentinel_url(url)
        hosts = ",".join(f"{host}:{port}" for host, port in parsed.sentinels)
        return f"sentinel {hosts} service {parsed.service_name}/{parsed.db}"
    where = client.connection_pool.connection_kwargs
    return str(where.get("path") or f"{where.get('host')}:{where.get('port')}/{where.get('db', 0)}")
