"""The Redis DAM backend: atoms shared by LBU instances through Redis, with a bounded write queue while it is down.

Each atom is one Redis string ``<prefix><key>`` holding four concatenated msgpack objects: version, origin,
expires_at and data. Writes are compare-and-set Lua scripts that also publish the change on ``<prefix>changes``;
expiry is the key's Redis TTL (``PXAT``). Placement, replication and failover are Redis's own.

Bad data never stops a reader: a value that is not an atom (or a key that is not UTF-8, or a value of another Redis
type) is skipped as absent, counted and logged once per key. An epoch marker beside the atoms tells a store that lost
them (flushed, or restarted without persistence) from one that holds them, so their owners can re-publish them.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import msgpack
import redis

from nlb_sdn.dam.atoms import (
    CHANGE_OPS,
    Atom,
    BadAtomLog,
    Change,
    CorruptAtom,
    Dam,
    VersionConflict,
    atom_from_fields,
    expiry,
    kind_of,
    pack_data,
)
from nlb_sdn.dam.sentinel import database, location, redis_client

LOG = logging.getLogger(__name__)
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.InvalidResponse,
)
"""Errors that mean the store cannot take our calls now (down, silent, a read-only replica, not Redis at all)."""
OPERATIONS = ("put", "get", "hits", "misses", "delete", "touch", "scan", "conflicts", "degraded_reads")
COUNTERS = (
    "dropped_writes",
    "failed_writes",
    "replayed",
    "replay_conflicts",
    "replay_expired",
    "feed_resets",
    "data_losses",
)
STATS_SCAN_COUNT = 1000
UNREADABLE = (ValueError, TypeError, msgpack.UnpackException)
"""What msgpack raises for bytes that are not the objects we stored (bad format, truncated, unhashable map keys)."""
EPOCH_KEY = "#epoch:"
"""Redis key of the epoch marker, before the prefix: outside every prefix's atoms (``#`` is not allowed in one)."""

# Shared prologue: the stored version of KEYS[1], 0 if absent, expired at ARGV[2] (the caller's ``now``) or not an
# atom at all (not msgpack, or a value of another Redis type): a corrupt atom is overwritten, deleted or left alone.
_STORED = """
local old = redis.pcall('GET', KEYS[1])
if type(old) == 'table' then old = true end
local version = 0
if type(old) == 'string' then
  local ok, _, v, _, e = pcall(cmsgpack.unpack_limit, old, 3)
  if ok and type(v) == 'number' and (e == nil or (type(e) == 'number' and e > tonumber(ARGV[2]))) then
    version = v
  end
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
# KEYS: the epoch marker; ARGV: a new epoch. The stored epoch, written first if there was none.
EPOCH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


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


def parse_blob(key: str, blob: bytes) -> Atom:
    """The atom stored as ``blob`` (version, origin, expires_at, data); CorruptAtom if it is not one."""
    try:
        fields = msgpack.unpackb(b"\x94" + blob, raw=False, strict_map_key=False)
    except UNREADABLE as exc:
        raise CorruptAtom(key, f"not the four msgpack objects of an atom ({type(exc).__name__}: {exc})") from None
    return atom_from_fields(key, *fields)


def decode(key: str, blob: bytes | None, now: float) -> Atom | None:
    """The atom stored as ``blob``, or None if absent or expired at ``now``; CorruptAtom if it is not an atom."""
    if blob is None:
        return None
    atom = parse_blob(key, blob)
    if atom.expires_at is not None and atom.expires_at <= now:
        return None
    return atom


def _pxat(expires_at: float | None) -> str:
    """The ``PXAT`` argument (Unix ms, rounded up) for an expiry, or '' for none."""
    return "" if expires_at is None else str(math.ceil(expires_at * 1000))


def parse_change(data: bytes) -> Change:
    """The change a message on the change channel carries: op, key and, for a put, the atom; CorruptAtom if not one."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    try:
        op, key = unpacker.unpack(), unpacker.unpack()
    except UNREADABLE as exc:
        raise CorruptAtom("<change message>", f"no op and key ({type(exc).__name__}: {exc})") from None
    if op not in CHANGE_OPS or not isinstance(key, str):
        raise CorruptAtom(repr(key), f"not a change: op {op!r}")
    if op != "put":
        return Change(op, key, None)
    return Change(op, key, parse_blob(key, data[unpacker.tell() :]))


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
        self._client = redis_client(url, timeout)
        self._prefix = prefix
        self._channel = prefix + "changes"
        self._where = location(url, self._client)
        self._expired_channel = f"__keyevent@{database(url, self._client)}__:expired"
        self._timeout = timeout
        self._put = self._client.register_script(PUT_LUA)
        self._delete = self._client.register_script(DELETE_LUA)
        self._touch = self._client.register_script(TOUCH_LUA)
        self._epoch_script = self._client.register_script(EPOCH_LUA)
        self._epoch_key = EPOCH_KEY + prefix
        self._epoch: bytes | None = None
        """The store's epoch when last seen; another (or none) later means the store lost our atoms."""
        self._data_lost = False
        self._epoch_unreadable = False
        self._pubsub: redis.client.PubSub | None = None
        self._queue: deque[Write] = deque(maxlen=queue_limit)
        self._ops = dict.fromkeys(OPERATIONS, 0)
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._corrupt_atoms = BadAtomLog(LOG)
        self._corrupt_changes = BadAtomLog(LOG)
        self.degraded = False
        if not self._connect():
            self._fail("unreachable at start")
        else:
            self._check_epoch()

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
        """Execute ``write``, or queue it if the store is unreachable (None); a write Redis refuses raises alone."""
        if not self.degraded:
            try:
                return self._apply(write, now)
            except UNREACHABLE as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
            except redis.exceptions.RedisError:
                self._counters["failed_writes"] += 1
                raise
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

    def _read(self, key: str, blob: bytes | None, now: float) -> Atom | None:
        """The live atom stored as ``blob``; a corrupt one reads as absent, and is counted and logged (once)."""
        try:
            return decode(key, blob, now)
        except CorruptAtom as exc:
            self._corrupt_atoms.report(exc.key, exc.reason)
            return None

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
            key: atom for key, blob in zip(keys, blobs, strict=True) if (atom := self._read(key, blob, now)) is not None
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
            keys = sorted(self._atom_keys(raw_keys))
            blobs = self._mget(keys) if keys else []
        except UNREACHABLE as exc:
            self._unreachable_read(exc)
            return [], None
        atoms = [
            atom for key, blob in zip(keys, blobs, strict=True) if (atom := self._read(key, blob, now)) is not None
        ]
        return atoms, (str(after) if after else None)

    def _atom_keys(self, raw_keys: list[bytes]) -> list[str]:
        """The atom keys of Redis key names of our prefix; a name that is not UTF-8 is skipped and reported."""
        keys = []
        for raw in raw_keys:
            try:
                keys.append(raw.decode()[len(self._prefix) :])
            except UnicodeDecodeError:
                self._corrupt_atoms.report(raw.decode(errors="backslashreplace"), "the Redis key name is not UTF-8")
        return keys

    def _change(self, message: dict[str, Any]) -> Change | None:
        """The change carried by a pub/sub message, if it is one of ours (a corrupt one is reported and skipped)."""
        if message["type"] != "message":
            return None
        try:
            if message["channel"] == self._expired_channel.encode():
                return self._expired(message["data"])
            return parse_change(message["data"])
        except CorruptAtom as exc:
            self._corrupt_changes.report(exc.key, exc.reason)
            return None

    def _expired(self, name: bytes) -> Change | None:
        """The ``expire`` change of a Redis expiry event, if the expired key is one of our atoms."""
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise CorruptAtom(
                name.decode(errors="backslashreplace"), "an expired Redis key name is not UTF-8"
            ) from None
        return Change("expire", text[len(self._prefix) :], None) if text.startswith(self._prefix) else None

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
            except redis.exceptions.RedisError as exc:  # refused (a script error, no permission): it fails alone
                self._counters["failed_writes"] += 1
                LOG.warning(
                    "DAM store %s: queued %s of %r failed and is dropped: %s", self._where, write.op, write.key, exc
                )
            self._queue.popleft()
        else:
            self.degraded = False
            LOG.warning("DAM store %s: reachable again; %d queued writes replayed", self._where, applied)
        self._counters["replayed"] += applied
        return applied

    def maintain(self, now: float) -> None:
        """Reconnect, resubscribe and replay queued writes if needed; then check whether the store lost its atoms."""
        self.replay(now)
        if not self.degraded:
            self._check_epoch()

    def _check_epoch(self) -> None:
        """Read the store's epoch marker, writing one if there is none; a new epoch means the store lost its atoms.

        Another epoch than last time, or none, means the store was flushed, restarted without persistence, or failed
        over to an empty replica since: ``data_losses`` counts it and :meth:`take_data_loss` reports it once.
        """
        try:
            epoch = cast(bytes, self._epoch_script(keys=[self._epoch_key], args=[uuid.uuid4().hex]))
        except UNREACHABLE as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        except redis.exceptions.RedisError as exc:  # e.g. no permission on the marker: data loss goes unnoticed
            if not self._epoch_unreadable:
                LOG.warning(
                    "DAM store %s: epoch marker %r unusable, data loss is not detected: %s",
                    self._where,
                    self._epoch_key,
                    exc,
                )
            self._epoch_unreadable = True
            return
        if self._epoch is not None and epoch != self._epoch:
            self._data_lost = True
            self._counters["data_losses"] += 1
            LOG.warning("DAM store %s: the store lost its atoms (new epoch); they are re-published", self._where)
        self._epoch = epoch

    def take_data_loss(self) -> bool:
        """Whether the store lost its atoms since the last call (seen by :meth:`maintain`); the flag is cleared."""
        lost, self._data_lost = self._data_lost, False
        return lost

    def _count(self) -> dict[str, int] | None:
        """Atoms by kind from a full SCAN of the prefix (O(atoms)), or None if unreachable."""
        kinds = {"route": 0, "session": 0, "other": 0}
        try:
            for raw in self._client.scan_iter(match=glob_escape(self._prefix) + "*", count=STATS_SCAN_COUNT):
                kinds[kind_of(raw.decode(errors="replace")[len(self._prefix) :])] += 1
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
            "corrupt_atoms": self._corrupt_atoms.count,
            "corrupt_changes": self._corrupt_changes.count,
        }

    def close(self) -> None:
        """Close the feed subscription and the connection pool."""
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        self._client.close()
