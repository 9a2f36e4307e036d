"""The in-process DAM backend: one LBU keeps its atoms in a dict of compact tuples, expiring them by ``now``."""

from __future__ import annotations

import bisect
import heapq
import sys
from collections import deque
from collections.abc import Iterable
from typing import Any

from nlb_sdn.dam.atoms import Atom, Change, ChangeOp, Dam, VersionConflict, expiry, kind_of, pack_data, unpack_data

Entry = tuple[int, str, float | None, bytes]
"""A stored atom: (version, origin, expires_at, msgpack of data)."""

OPERATIONS = ("put", "get", "hits", "misses", "delete", "touch", "scan", "conflicts", "expired")


class MemoryDam(Dam):
    """Atoms in process: a dict of tuples, an expiry heap, and a bounded change feed (the embedded default)."""

    backend = "memory"

    def __init__(self, feed_limit: int = 10_000) -> None:
        self._entries: dict[str, Entry] = {}
        self._expiry: list[tuple[float, str]] = []
        self._feed: deque[Change] = deque(maxlen=feed_limit)
        self._kinds: dict[str, int] = {"route": 0, "session": 0, "other": 0}
        self._ops = dict.fromkeys(OPERATIONS, 0)
        self._feed_dropped = 0
        self._listing: tuple[str, list[str]] | None = None

    def _emit(self, op: ChangeOp, key: str, atom: Atom | None) -> None:
        """Append a change to the feed, counting the oldest one dropped when it is full."""
        if len(self._feed) == self._feed.maxlen:
            self._feed_dropped += 1
        self._feed.append(Change(op, key, atom))

    def _remove(self, key: str) -> None:
        """Forget the entry under ``key`` (present)."""
        del self._entries[key]
        self._kinds[kind_of(key)] -= 1

    def _live(self, key: str, now: float) -> Entry | None:
        """The entry under ``key`` unless absent or expired; an expired one is removed (lazy expiry)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[2] is not None and entry[2] <= now:
            self._remove(key)
            self._ops["expired"] += 1
            self._emit("expire", key, None)
            return None
        return entry

    def _store(self, key: str, entry: Entry) -> None:
        """Store ``entry`` under ``key`` and schedule its expiry."""
        if key not in self._entries:
            self._kinds[kind_of(key)] += 1
        self._entries[key] = entry
        if entry[2] is not None:
            heapq.heappush(self._expiry, (entry[2], key))
            if len(self._expiry) > 2 * len(self._entries) + 1024:
                self._expiry = [(e[2], k) for k, e in self._entries.items() if e[2] is not None]
                heapq.heapify(self._expiry)

    @staticmethod
    def _atom(key: str, entry: Entry) -> Atom:
        """The Atom of a stored entry."""
        return Atom(key, unpack_data(entry[3]), entry[0], entry[1], entry[2])

    def _check(self, key: str, entry: Entry | None, expected_version: int | None) -> int:
        """The stored version (0 if none), after checking it against ``expected_version``."""
        stored = 0 if entry is None else entry[0]
        if expected_version is not None and expected_version != stored:
            self._ops["conflicts"] += 1
            raise VersionConflict(key, expected_version, stored)
        return stored

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
        """Write ``data`` under ``key`` with version stored+1 (compare-and-set with ``expected_version``)."""
        expires_at = expiry(ttl, now)
        raw = pack_data(data)
        self._ops["put"] += 1
        entry = self._entries.get(key)
        if entry is not None and entry[2] is not None and entry[2] <= now:
            entry = None
        version = self._check(key, entry, expected_version) + 1
        atom = Atom(key, data, version, origin, expires_at)
        self._store(key, (version, sys.intern(origin), expires_at, raw))
        self._emit("put", key, atom)
        return atom

    def get(self, key: str, now: float) -> Atom | None:
        """The live atom under ``key``, if any."""
        self._ops["get"] += 1
        entry = self._live(key, now)
        if entry is None:
            self._ops["misses"] += 1
            return None
        self._ops["hits"] += 1
        return self._atom(key, entry)

    def delete(self, key: str, now: float, expected_version: int | None = None) -> bool:
        """Delete the atom under ``key``; True if a live atom was deleted (compare-and-set as in put)."""
        self._ops["delete"] += 1
        entry = self._live(key, now)
        self._check(key, entry, expected_version)
        if entry is None:
            return False
        self._remove(key)
        self._emit("delete", key, None)
        return True

    def get_many(self, keys: Iterable[str], now: float) -> dict[str, Atom]:
        """The live atoms among ``keys``, by key."""
        return {key: atom for key in keys if (atom := self.get(key, now)) is not None}

    def touch(self, key: str, ttl: float | None, now: float) -> bool:
        """Set a live atom's expiry to ``now + ttl`` (None: never), keeping its version."""
        expires_at = expiry(ttl, now)
        self._ops["touch"] += 1
        entry = self._live(key, now)
        if entry is None:
            return False
        self._store(key, (entry[0], entry[1], expires_at, entry[3]))
        return True

    def scan(self, prefix: str, cursor: str | None, count: int, now: float) -> tuple[list[Atom], str | None]:
        """Up to ``count`` live atoms with keys after ``cursor`` in key order; the cursor is the last key passed.

        A listing sorts the matching keys once and pages through that snapshot (atoms added meanwhile may be
        missed, like SCAN); a cursor from another listing, or after the snapshot was dropped, re-sorts from there.
        """
        if count < 1:
            raise ValueError(f"count: expected >= 1, got {count}")
        self._ops["scan"] += 1
        if cursor is None or self._listing is None or self._listing[0] != prefix:
            after = cursor or ""
            self._listing = (prefix, sorted(k for k in self._entries if k.startswith(prefix) and k > after))
        keys = self._listing[1]
        index = bisect.bisect_right(keys, cursor) if cursor is not None else 0
        page: list[Atom] = []
        while index < len(keys) and len(page) < count:
            entry = self._entries.get(keys[index])
            if entry is not None and (entry[2] is None or entry[2] > now):
                page.append(self._atom(keys[index], entry))
            index += 1
        if index < len(keys):
            return page, keys[index - 1]
        self._listing = None
        return page, None

    def poll_changes(self, max_items: int = 1000) -> list[Change]:
        """Up to ``max_items`` changes since the last poll, oldest first."""
        return [self._feed.popleft() for _ in range(min(max_items, len(self._feed)))]

    def sweep(self, now: float) -> int:
        """Remove every atom expired at ``now`` (one ``expire`` change each); the number removed."""
        removed = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is not None and entry[2] == expires_at:
                self._remove(key)
                self._ops["expired"] += 1
                self._emit("expire", key, None)
                removed += 1
        return removed

    def maintain(self, now: float) -> None:
        """Sweep expired atoms."""
        self.sweep(now)

    def stats(self) -> dict[str, Any]:
        """Atoms by kind (expired ones count until swept), operation counters, and the (never) degraded state."""
        return {
            "backend": self.backend,
            "atoms": {**self._kinds, "total": len(self._entries)},
            "operations": dict(self._ops),
            "degraded": False,
            "queued": 0,
            "dropped_writes": 0,
            "replayed": 0,
            "failed_writes": 0,
            "data_losses": 0,
            "corrupt_atoms": 0,
            "feed_pending": len(self._feed),
            "feed_dropped": self._feed_dropped,
        }
