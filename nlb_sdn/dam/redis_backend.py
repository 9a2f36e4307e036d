"""The Redis DAM backend: atoms shared by LBU instances through Redis, with a bounded write queue while it is down.

Each atom is one Redis string ``<prefix><key>`` holding four concatenated msgpack objects: version, origin,
expires_at and data. Writes are compare-and-set Lua scripts that also publish the change on ``<prefix>changes``;
expiry is the key's Redis TTL (``PXAT``). Placement, replication and failover are Redis's own.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from nlb_sdn.dam.atoms import Atom, Change, Dam, VersionConflict, expiry, kind_of, pack_data

LOG = logging.getLogger(__name__)
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.InvalidResponse,
)
"""Errors that mean the store cannot take our calls now (down, silent, a read-only replica, not Redis at all)."""
OPERATIONS = ("put", "get", "hits", "misses", "delete", "touch", "scan", "conflicts", "degraded_reads")
STATS_SCAN_COUNT = 1000

# Shared prologue: the stored version of KEYS[1], 0 if absent or expired at ARGV[2] (the caller's ``now``).
_STORED = """
local old = redis.call('GET', KEYS[1])
local version = 0
if old then
  local _, v, _, e = cmsgpack.unpack_limit(old, 3)
  if not e or e > tonumber(ARGV[2]) then version = v end
end
"""
# ARGV: expected version ('' = any), now, tail (origin, expires_at, data), PXAT ms ('' = none), channel, key.
PUT_LUA = (
    _STORED
    + """
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= version then return {0, version} end
local blob = cmsgpack.pack(version + 1) .. ARGV[3]
if ARGV[4] == '' then redis.call('SET', KEYS[1], blob) else redis.call('SET', KEYS[1], blob, 'PXAT', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], cmsgpack.pack('put') .. cmsgpack.pack(ARGV[6]) .. blob)
return {1, version + 1}
"""
)
# ARGV: expected version ('' = any), now, (unused), (unused), channel, key.
DELETE_LUA = (
    _STORED
    + """
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= version then return {0, version} end
if not old then return {1, 0} end
redis.call('DEL', KEYS[1])
local op = 'delete'
if version == 0 then op = 'expire' end
redis.call('PUBLISH', ARGV[5], cmsgpack.pack(op) .. cmsgpack.pack(ARGV[6]))
return {1, version}
"""
)
# ARGV: (unused), now, packed expires_at, PXAT ms ('' = none).
TOUCH_LUA = (
    _STORED
    + """
if version == 0 then return {1, 0} end
local off, v, o = cmsgpack.unpack_limit(old, 3)
local blob = cmsgpack.pack(v) .. cmsgpack.pack(o) .. ARGV[3] .. string.sub(old, off + 1)
if ARGV[4] == '' then redis.call('SET', KEYS[1], blob) else redis.call('SET', KEYS[1], blob, 'PXAT', ARGV[4]) end
return {1, version}
"""
)


class Write(NamedTuple):
    """A write as executed, or queued while the store is unreachable."""

    op: str  # put | delete | touch
    key: str
    payload: bytes  # put: origin, expires_at and data packed; touch: expires_at packed; delete: empty
    expires_at: float | None
    expected_version: int | None


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for a literal ``MATCH`` prefix."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def decode(key: str, blob: bytes | None, now: float) -> Atom | None:
    """The atom stored as ``blob`` (version, origin, expires_at, data), or None if absent or expired at ``now``."""
    if blob is None:
        return None
    version, origin, expires_at, data = msgpack.unpackb(b"\x94" + blob, raw=False, strict_map_key=False)
    if expires_at is not None and expires_at <= now:
        return None
    return Atom(key, data, version, origin, None if expires_at is None else float(expires_at))


def _pxat(expires_at: float | None) -> str:
    """The ``PXAT`` argument (Unix ms, rounded up) for an expiry, or '' for none."""
    return "" if expires_at is None else str(math.ceil(expires_at * 1000))


class RedisDam(Dam):
    """Atoms in Redis shared by LBU instances: compare-and-set scripts, a pub/sub feed, and a degraded mode.

    While Redis is unreachable reads miss at once and writes queue (bounded) until :meth:`replay` succeeds.
    """

    backend = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "nlb:",
        queue_limit: int = 10_000,
        timeout: float = 0.2,
    ) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._prefix = prefix
        self._channel = prefix + "changes"
        where = self._client.connection_pool.connection_kwargs
        self._where = where.get("path") or f"{where.get('host')}:{where.get('port')}/{where.get('db', 0)}"
        self._expired_channel = f"__keyevent@{where.get('db', 0)}__:expired"
        self._timeout = timeout
        self._put = self._client.register_script(PUT_LUA)
        self._delete = self._client.register_script(DELETE_LUA)
        self._touch = self._client.register_script(TOUCH_LUA)
        self._pubsub: redis.client.PubSub | None = None
        self._queue: deque[Write] = deque(maxlen=queue_limit)
        self._ops = dict.fromkeys(OPERATIONS, 0)
        self._counters = dict.fromkeys(
            ("dropped_writes", "replayed", "replay_conflicts", "replay_expired", "feed_resets"), 0
        )
        self.degraded = False
        if not self._connect():
            self._fail("unreachable at start")

    def _connect(self) -> bool:
        """Check the store and (re)subscribe the change feed; False if Redis is unreachable."""
        pubsub = None
        try:
            self._client.ping()
            if self._pubsub is None:
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pubsub.subscribe(self._channel, self._expired_channel)
                # One SUBSCRIBE for both channels: Redis sends both confirmations before any message.
                for _ in range(2):
                    message = pubsub.get_message(timeout=self._timeout)
                    if message is None or message["type"] != "subscribe":
                        raise redis.exceptions.TimeoutError("no subscribe confirmation")
                self._pubsub = pubsub
        except UNREACHABLE:
            if pubsub is not None:
                pubsub.close()
            return False
        return True

    def _drop_feed(self) -> None:
        """Close a broken feed subscription (changes published meanwhile are lost; ``feed_resets`` counts this)."""
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
            self._counters["feed_resets"] += 1

    def _fail(self, reason: str) -> None:
        """Enter degraded mode (reads miss, writes queue) and drop the feed subscription."""
        if not self.degraded:
            LOG.warning("DAM store %s: %s; degraded to local decisions, queueing writes", self._where, reason)
        self.degraded = True
        self._drop_feed()

    def _enqueue(self, write: Write) -> None:
        """Queue a write for replay, dropping (and counting) the oldest when the queue is full."""
        if len(self._queue) == self._queue.maxlen:
            self._counters["dropped_writes"] += 1
        self._queue.append(write)

    def _apply(self, write: Write, now: float) -> int:
        """Execute ``write`` atomically; the stored version after it (put) or before it (delete, touch)."""
        script = {"put": self._put, "delete": self._delete, "touch": self._touch}[write.op]
        expected = "" if write.expected_version is None else str(write.expected_version)
        ok, version = script(
            keys=[self._prefix + write.key],
            args=[expected, repr(now), write.payload, _pxat(write.expires_at), self._channel, write.key],
        )
        if not ok:
            self._ops["conflicts"] += 1
            raise VersionConflict(write.key, write.expected_version or 0, version)
        return int(version)

    def _write(self, write: Write, now: float) -> int | None:
        """Execute ``write``, or queue it if the store is unreachable (None)."""
        if not self.degraded:
            try:
                return self._apply(write, now)
            except UNREACHABLE as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
        self._enqueue(write)
        return None

    def put(
        self,
        key: str,
        data: dict[str, Any],
        *,
        origin: str,
        ttl: float | None,
        now: float,
        expected_version: int | None = None,
    ) -> Atom:
        """Write ``data`` under ``key`` with version stored+1 (compare-and-set with ``expected_version``).

        While degraded the write is queued and the returned atom has version 0 (not yet stored).
        """
        expires_at = expiry(ttl, now)
        payload = msgpack.packb(origin) + msgpack.packb(expires_at) + pack_data(data)
        self._ops["put"] += 1
        version = self._write(Write("put", key, payload, expires_at, expected_version), now)
        return Atom(key, data, version or 0, origin, expires_at)

    def _unreachable_read(self, exc: Exception | None) -> None:
        """Count a read that the store could not answer (and enter degraded mode on ``exc``)."""
        if exc is not None:
            self._fail(f"{type(exc).__name__}: {exc}")
        self._ops["degraded_reads"] += 1

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        """The stored blobs of ``keys``, in order (redis-py types every reply as maybe awaitable; ours is not)."""
        return cast(list[bytes | None], self._client.mget([self._prefix + key for key in keys]))

    def get(self, key: str, now: float) -> Atom | None:
        """The live atom under ``key``; None while degraded."""
        return self.get_many((key,), now).get(key)

    def get_many(self, keys: Iterable[str], now: float) -> dict[str, Atom]:
        """The live atoms among ``keys``, by key (one MGET); empty while degraded."""
        keys = list(keys)
        self._ops["get"] += len(keys)
        blobs: list[bytes | None] = [None] * len(keys)
        if self.degraded:
            self._unreachable_read(None)
        elif keys:
            try:
                blobs = self._mget(keys)
            except UNREACHABLE as exc:
                self._unreachable_read(exc)
        found = {
            key: atom for key, blob in zip(keys, blobs, strict=True) if (atom := decode(key, blob, now)) is not None
        }
        self._ops["hits"] += len(found)
        self._ops["misses"] += len(keys) - len(found)
        return found

    def delete(self, key: str, now: float, expected_version: int | None = None) -> bool:
        """Delete the atom under ``key``; True if a live atom was deleted (False while degraded: queued)."""
        self._ops["delete"] += 1
        return bool(self._write(Write("delete", key, b"", None, expected_version), now))

    def touch(self, key: str, ttl: float | None, now: float) -> bool:
        """Set a live atom's expiry to ``now + ttl`` (None: never), keeping its version (False while degraded)."""
        expires_at = expiry(ttl, now)
        self._ops["touch"] += 1
        return bool(self._write(Write("touch", key, msgpack.packb(expires_at), expires_at, None), now))

    def scan(self, prefix: str, cursor: str | None, count: int, now: float) -> tuple[list[Atom], str | None]:
        """One SCAN step over ``<prefix>*`` (a page may be empty before the end); ``([], None)`` while degraded."""
        if count < 1:
            raise ValueError(f"count: expected >= 1, got {count}")
        self._ops["scan"] += 1
        if self.degraded:
            self._unreachable_read(None)
            return [], None
        try:
            after, raw_keys = cast(
                tuple[int, list[bytes]],
                self._client.scan(int(cursor or 0), match=glob_escape(self._prefix + prefix) + "*", count=count),
            )
            keys = sorted(raw.decode()[len(self._prefix) :] for raw in raw_keys)
            blobs = self._mget(keys) if keys else []
        except UNREACHABLE as exc:
            self._unreachable_read(exc)
            return [], None
        atoms = [atom for key, blob in zip(keys, blobs, strict=True) if (atom := decode(key, blob, now)) is not None]
        return atoms, (str(after) if after else None)

    def _change(self, message: dict[str, Any]) -> Change | None:
        """The change carried by a pub/sub message, if it is one of ours."""
        if message["type"] != "message":
            return None
        if message["channel"].decode() == self._expired_channel:
            name = message["data"].decode()
            return Change("expire", name[len(self._prefix) :], None) if name.startswith(self._prefix) else None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(message["data"])
        op, key, *rest = unpacker
        if op != "put":
            return Change(op, key, None)
        version, origin, expires_at, data = rest
        return Change(op, key, Atom(key, data, version, origin, None if expires_at is None else float(expires_at)))

    def poll_changes(self, max_items: int = 1000) -> list[Change]:
        """Up to ``max_items`` changes from the pub/sub feed (every instance's writes and Redis expiries)."""
        changes: list[Change] = []
        try:
            while self._pubsub is not None and len(changes) < max_items:
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                change = self._change(message)
                if change is not None:
                    changes.append(change)
        except UNREACHABLE:
            self._drop_feed()
        return changes

    def replay(self, now: float) -> int:
        """Reconnect, resubscribe and replay the queued writes in order if degraded; the number applied.

        Degraded mode ends once the queue is empty. A queued put already expired at ``now`` is skipped, and a write
        refused by compare-and-set is dropped (both counted). Also resubscribes a feed lost while not degraded.
        """
        if not self.degraded and self._pubsub is not None:
            return 0
        if not self._connect() or not self.degraded:
            return 0
        applied = 0
        while self._queue:
            write = self._queue[0]
            try:
                if write.op == "put" and write.expires_at is not None and write.expires_at <= now:
                    self._counters["replay_expired"] += 1
                else:
                    self._apply(write, now)
                    applied += 1
            except VersionConflict:
                self._counters["replay_conflicts"] += 1
            except UNREACHABLE as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
                break
            self._queue.popleft()
        else:
            self.degraded = False
            LOG.warning("DAM store %s: reachable again; %d queued writes replayed", self._where, applied)
        self._counters["replayed"] += applied
        return applied

    def maintain(self, now: float) -> None:
        """Reconnect, resubscribe and replay queued writes if needed."""
        self.replay(now)

    def _count(self) -> dict[str, int] | None:
        """Atoms by kind from a full SCAN of the prefix (O(atoms)), or None if unreachable."""
        kinds = {"route": 0, "session": 0, "other": 0}
        try:
            for raw in self._client.scan_iter(match=glob_escape(self._prefix) + "*", count=STATS_SCAN_COUNT):
                kinds[kind_of(raw.decode()[len(self._prefix) :])] += 1
        except UNREACHABLE as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        return {**kinds, "total": sum(kinds.values())}

    def stats(self) -> dict[str, Any]:
        """Atoms by kind (None while degraded), operation counters, degraded state, queue and replay counters."""
        return {
            "backend": self.backend,
            "atoms": None if self.degraded else self._count(),
            "operations": dict(self._ops),
            "degraded": self.degraded,
            "queued": len(self._queue),
            **self._counters,
        }

    def close(self) -> None:
        """Close the feed subscription and the connection pool."""
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        self._client.close()
