"""The consolidated H&L cache 1208 (controller side): every host's rows, liveness and sync state (docs/health.md).

Pure: no sockets, no clock. The controller shell verifies each datagram (``protocol.Verifier``), passes the message to
:meth:`HLCache.apply` and encodes and sends the ``Outgoing`` messages it gets back; it calls :meth:`HLCache.tick`
about once per ``hb_period`` and :meth:`HLCache.postulates` every 5 s. Both ``apply`` and ``tick`` say which
endpoints ``(pip, pport)`` may have changed eligibility, so the classifier knows which allotments to revoke and
re-compute; eligibility itself is always read back with :meth:`HLCache.endpoint_status`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nlb_sdn.health.table import TARGET_STATES, Row, table_checksum
from nlb_sdn.signed import Message

Address = tuple[str, int]
Endpoint = tuple[str, int]
"""``(pip, pport)`` of an application endpoint."""
ServiceEndpoint = tuple[str, int, str, int]
"""``(vip, vport, pip, pport)``: the index key of rows."""

ALIVE, FAILED, GONE = "alive", "failed", "gone"
UNKNOWN = "unknown"
"""The old status in the event of a host heard from for the first time."""
EMPTY_CHECKSUM = table_checksum(())


class Outgoing(NamedTuple):
    """A message for the shell to encode (``src = "lbu:<id>"``, next seq, ``ts = now``) and send to ``addr``."""

    addr: Address
    type: str
    body: dict[str, Any]


class HostEvent(NamedTuple):
    """A host changed status (``old`` is ``"unknown"`` for a new host); ``endpoints`` are all its rows' endpoints."""

    host_id: str
    old: str
    new: str
    endpoints: frozenset[Endpoint]


class Applied(NamedTuple):
    """What applying one message did: messages to send, endpoints whose eligibility may have changed, host events."""

    outgoing: list[Outgoing]
    changed: set[Endpoint]
    events: list[HostEvent]


@dataclass(slots=True)
class HostEntry:
    """One host in the cache: where it sends from, its rows by ``app_id`` and its liveness and sync state."""

    host_id: str
    address: Address
    rows: dict[str, Row] = field(default_factory=dict)
    checksum: int = EMPTY_CHECKSUM
    last_seq: int = -1
    last_heartbeat: float = 0.0
    status: str = ALIVE
    warm: bool = False
    reported_checksum: int | None = None
    last_postulate: float | None = None

    def endpoints(self) -> frozenset[Endpoint]:
        """The ``(pip, pport)`` of every row."""
        return frozenset((row.pip, row.pport) for row in self.rows.values())

    def as_dict(self, now: float) -> dict[str, Any]:
        """A JSON-friendly view for ``GET /v1/hl/cache``: status, liveness age, checksums, warm and every row."""
        return {
            "host_id": self.host_id,
            "address": f"{self.address[0]}:{self.address[1]}",
            "status": self.status,
            "age": now - self.last_heartbeat,
            "last_heartbeat": self.last_heartbeat,
            "last_seq": self.last_seq,
            "warm": self.warm,
            "checksum": {
                "cached": self.checksum,
                "reported": self.reported_checksum,
                "in_sync": self.checksum == self.reported_checksum,
            },
            "last_postulate": self.last_postulate,
            "row_count": len(self.rows),
            "rows": [self.rows[app_id].to_dict() for app_id in sorted(self.rows)],
        }


def _eligibility(row: Row | None) -> tuple[str, str] | None:
    """The row fields that decide eligibility (None: no row)."""
    return None if row is None else (row.health, row.target)


def agent_eligibility(alive: bool, row: Row | None) -> tuple[bool, str]:
    """Whether an agent-reported endpoint may take new connections, and if not why (for ``Candidate.reason``)."""
    if row is None:
        return False, "no row from any agent"
    if not alive:
        return False, "host not alive"
    if row.health != "ok":
        return False, f"health {row.health}"
    if row.target != "active":
        return False, f"target {row.target}"
    return True, ""


class HLCache:
    """The consolidated H&L cache 1208 of one controller: messages in, replies and eligibility changes out."""

    def __init__(self, hb_period: float = 1.0, miss_limit: int = 3, lbu_id: int = 1, started_at: float = 0.0) -> None:
        self.hb_period = hb_period
        self.miss_limit = miss_limit
        self.lbu_id = lbu_id
        self.started_at = started_at
        self.hosts: dict[str, HostEntry] = {}
        self.applied: Counter[str] = Counter()
        self.resyncs: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self._index: dict[ServiceEndpoint, set[tuple[str, str]]] = {}
        self.revision = 0
        """Counts every change of a row or a host's status: what eligibility and allotments are computed from."""
        self.touched: set[Endpoint] = set()
        """Endpoints whose rows changed in any way since the owner last cleared this."""
        self._warm = False
        self._handlers: dict[str, Callable[[Message, Address, float, Applied], bool]] = {
            "heartbeat": self._heartbeat,
            "goodbye": self._goodbye,
            "row_change": self._row_change,
            "snapshot": self._snapshot,
            "postulate": self._postulate,
            "postulate_wrong": self._postulate_wrong,
        }

    @property
    def src(self) -> str:
        """This controller's sender id."""
        return f"lbu:{self.lbu_id}"

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Messages applied by type, snapshots requested by reason, messages ignored and anomalies by reason."""
        return {
            "applied": dict(self.applied),
            "resyncs": dict(self.resyncs),
            "ignored": dict(self.ignored),
            "anomalies": dict(self.anomalies),
        }

    def apply(self, msg: Message, addr: Address, now: float) -> Applied:
        """Apply one verified message from ``addr``.

        Returns the replies to send (``get_snapshot`` for an unknown host, a heartbeat checksum that differs from the
        cached one, a host not yet warm, a row change whose ``prev_checksum`` or resulting checksum differs;
        ``postulate_wrong`` plus ``get_snapshot`` for an agent's postulate that differs), the endpoints whose
        eligibility may have changed (a row added, deleted or changed health or target, or every endpoint of a host
        that changed status) and the host status events. A row change is applied even when a snapshot is requested:
        the verifier drops reordered messages, so it is always newer than what the cache holds.
        """
        result = Applied([], set(), [])
        handler = self._handlers.get(msg.type)
        if handler is None:
            self.ignored["unexpected_type"] += 1
            return result
        if msg.body.get("host_id") != msg.src:
            self.ignored["src_mismatch"] += 1
            return result
        if handler(msg, addr, now, result):
            self.applied[msg.type] += 1
        return result

    def tick(self, now: float) -> list[HostEvent]:
        """Mark failed every alive host without a heartbeat for over ``miss_limit × hb_period``; the events."""
        events = []
        for host_id in sorted(self.hosts):
            entry = self.hosts[host_id]
            if entry.status == ALIVE and now - entry.last_heartbeat > self.miss_limit * self.hb_period:
                events.append(self._set_status(entry, FAILED))
        return events

    def warm(self, now: float) -> bool:
        """Warm-up gate: open once every alive host is warm and ``hb_period`` has passed, or after 2 × hb_period."""
        if not self._warm:
            elapsed = now - self.started_at
            alive = [entry for entry in self.hosts.values() if entry.status == ALIVE]
            heard = elapsed >= self.hb_period and bool(alive) and all(entry.warm for entry in alive)
            self._warm = heard or elapsed >= 2 * self.hb_period
        return self._warm

    def rows_for(self, pip: str, pport: int, vip: str, vport: int, proto: str = "tcp") -> list[tuple[HostEntry, Row]]:
        """Every cached row of this endpoint and VIP (any host status, any ``proto_info``), by host id and app id."""
        found = []
        for host_id, app_id in sorted(self._index.get((vip, vport, pip, pport), ())):
            entry = self.hosts[host_id]
            row = entry.rows[app_id]
            if row.proto == proto:
                found.append((entry, row))
        return found

    def endpoint_status(
        self, pip: str, pport: int, vip: str, vport: int, proto: str = "tcp", proto_info: str = ""
    ) -> tuple[bool, Row | None]:
        """Whether an alive host reports this endpoint, and its row (an alive host's first, by host id)."""
        rows = [
            (entry, row) for entry, row in self.rows_for(pip, pport, vip, vport, proto) if row.proto_info == proto_info
        ]
        for entry, row in rows:
            if entry.status == ALIVE:
                return True, row
        return False, rows[0][1] if rows else None

    def postulates(
        self, current_by_host: dict[str, dict[str, str]], now: float, host_ids: Iterable[str] | None = None
    ) -> list[Outgoing]:
        """A postulate 1512 to every alive, warm host (or those of ``host_ids`` that are): the checksum cached for it
        and the current states we report.

        Hosts not yet warm are skipped: a snapshot is already being requested for them on every heartbeat.
        """
        out = []
        for host_id in sorted(self.hosts) if host_ids is None else host_ids:
            entry = self.hosts.get(host_id)
            if entry is None or entry.status != ALIVE or not entry.warm:
                continue
            entry.last_postulate = now
            out.append(
                Outgoing(
                    entry.address,
                    "postulate",
                    {
                        "from": self.src,
                        "host_id": host_id,
                        "checksum": entry.checksum,
                        "current": dict(current_by_host.get(host_id, {})),
                    },
                )
            )
        return out

    def set_target(self, host_id: str, app_id: str, target: str) -> list[Outgoing]:
        """The ``set_target_state`` for one row of a host (the agent answers with a row change); KeyError if unknown."""
        if target not in TARGET_STATES:
            raise ValueError(f"target: expected one of {', '.join(TARGET_STATES)}, got {target!r}")
        entry = self.hosts[host_id]
        if app_id not in entry.rows:
            raise KeyError(app_id)
        return [
            Outgoing(entry.address, "set_target_state", {"lbu_id": self.lbu_id, "app_id": app_id, "target": target})
        ]

    def as_dict(self, now: float) -> dict[str, Any]:
        """A JSON-friendly view for ``GET /v1/hl/cache``."""
        return {
            "lbu_id": self.lbu_id,
            "hb_period": self.hb_period,
            "miss_limit": self.miss_limit,
            "started_at": self.started_at,
            "warm": self.warm(now),
            "hosts": [self.hosts[host_id].as_dict(now) for host_id in sorted(self.hosts)],
            "counters": self.counters,
        }

    # Message handlers: each gets a verified message whose body host_id is its src and says whether it applied it.

    def _heartbeat(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """Liveness: revive a failed or gone host; request a snapshot when new, out of sync or not yet warm."""
        entry = self._touch(msg, addr, now, result)
        entry.last_heartbeat = now
        entry.reported_checksum = msg.body["checksum"]
        if entry.status != ALIVE:
            self._record(self._set_status(entry, ALIVE), result)
        if entry.reported_checksum != entry.checksum:
            self._resync(entry, "checksum_mismatch", result)
        elif not entry.warm:
            self._resync(entry, "not_warm", result)
        return True

    def _goodbye(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """A graceful stop: the host is gone at once (repeats change nothing)."""
        entry = self.hosts.get(msg.src)
        if entry is None:
            self.ignored["goodbye_unknown_host"] += 1
            return False
        entry.address, entry.last_seq = addr, msg.seq
        if entry.status != GONE:
            self._record(self._set_status(entry, GONE), result)
        return True

    def _row_change(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """Apply one row change; request a snapshot when it does not chain onto or lead to the agent's checksum."""
        body = msg.body
        row = Row.from_dict(body["row"]) if body["op"] != "delete" else None
        entry = self._touch(msg, addr, now, result)
        entry.reported_checksum = body["checksum"]
        chained = body["prev_checksum"] == entry.checksum
        self._put(entry, body["app_id"], row, result)
        entry.checksum = table_checksum(entry.rows.values())
        if not chained:
            self._resync(entry, "prev_checksum_mismatch", result)
        elif entry.checksum != body["checksum"]:
            self._resync(entry, "checksum_mismatch", result)
        return True

    def _snapshot(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """Replace every row of the host; it is warm when the rows match the snapshot's checksum."""
        rows = {row.app_id: row for row in map(Row.from_dict, msg.body["rows"])}
        entry = self._touch(msg, addr, now, result)
        for app_id in sorted(set(entry.rows) | set(rows)):
            self._put(entry, app_id, rows.get(app_id), result)
        entry.checksum = table_checksum(entry.rows.values())
        entry.reported_checksum = msg.body["checksum"]
        if entry.checksum == entry.reported_checksum:
            entry.warm = True
        else:
            self.anomalies["snapshot_checksum_mismatch"] += 1
        return True

    def _postulate(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """An agent's postulate of what we cache for it: when wrong, say so and request a snapshot."""
        entry = self._touch(msg, addr, now, result)
        entry.reported_checksum = msg.body["checksum"]
        if entry.reported_checksum != entry.checksum:
            result.outgoing.append(
                Outgoing(
                    addr,
                    "postulate_wrong",
                    {"from": self.src, "host_id": entry.host_id, "checksum_actual": entry.checksum},
                )
            )
            self._resync(entry, "postulate_mismatch", result)
        return True

    def _postulate_wrong(self, msg: Message, addr: Address, now: float, result: Applied) -> bool:
        """The agent says our postulate was wrong: request a snapshot unless we have caught up meanwhile."""
        entry = self._touch(msg, addr, now, result)
        entry.reported_checksum = msg.body["checksum_actual"]
        if entry.reported_checksum != entry.checksum:
            self._resync(entry, "postulate_wrong", result)
        return True

    # State helpers.

    def _touch(self, msg: Message, addr: Address, now: float, result: Applied) -> HostEntry:
        """The sender's entry, created (alive, heard now, with a snapshot requested) for an unknown host."""
        entry = self.hosts.get(msg.src)
        if entry is None:
            entry = HostEntry(msg.src, addr, last_heartbeat=now)
            self.hosts[msg.src] = entry
            result.events.append(HostEvent(msg.src, UNKNOWN, ALIVE, frozenset()))
            if msg.type != "snapshot":
                self._resync(entry, "unknown_host", result)
        entry.address, entry.last_seq = addr, msg.seq
        return entry

    def _resync(self, entry: HostEntry, reason: str, result: Applied) -> None:
        """Request a snapshot of ``entry`` (at most one per message)."""
        if any(out.type == "get_snapshot" for out in result.outgoing):
            return
        self.resyncs[reason] += 1
        result.outgoing.append(
            Outgoing(entry.address, "get_snapshot", {"lbu_id": self.lbu_id, "host_id": entry.host_id, "reason": reason})
        )

    def _set_status(self, entry: HostEntry, status: str) -> HostEvent:
        """Change a host's status; the event."""
        event = HostEvent(entry.host_id, entry.status, status, entry.endpoints())
        entry.status = status
        self.revision += 1
        return event

    @staticmethod
    def _record(event: HostEvent, result: Applied) -> None:
        """Add a host event and its endpoints to a result."""
        result.events.append(event)
        result.changed.update(event.endpoints)

    def _put(self, entry: HostEntry, app_id: str, row: Row | None, result: Applied) -> None:
        """Set (or, with None, delete) one row of a host, keeping the index; note an eligibility change."""
        old = entry.rows.pop(app_id, None)
        if old is not None:
            key = (old.vip, old.vport, old.pip, old.pport)
            self._index[key].discard((entry.host_id, app_id))
            if not self._index[key]:
                del self._index[key]
        if row is not None:
            entry.rows[app_id] = row
            self._index.setdefault((row.vip, row.vport, row.pip, row.pport), set()).add((entry.host_id, app_id))
        if old != row:
            self.revision += 1
            self.touched.update((r.pip, r.pport) for r in (old, row) if r is not None)
        if _eligibility(old) != _eligibility(row):
            result.changed.update((r.pip, r.pport) for r in (old, row) if r is not None)
