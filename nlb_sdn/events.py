"""The controller's event log: a bounded ring of what happened, for operators (``GET /v1/events``).

Health and state changes of members, REST edits (who, what, before and after), switch connects, disconnects and
refusals, mastership changes, and refused or capped connections. The core records into it through its context (it is
plain data: no clock, ``at`` comes in with the event), the shell and the REST API record the rest. A burst of the
same event (a SYN flood meeting the connection cap) is coalesced into one entry whose ``count`` grows, so that a
flood cannot push every other event out of the ring.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EVENT_CAPACITY = 10_000
"""Events the log keeps; the oldest go first."""
COALESCE_WINDOW = 1.0
"""Seconds during which repeats of a coalescing event (same kind, VIP and key) only raise the first one's count."""


class EventKind(StrEnum):
    """What an event is about (the ``kind`` filter of ``GET /v1/events``)."""

    HEALTH = "health"
    STATE = "state"
    REST_EDIT = "rest_edit"
    MASTERSHIP = "mastership"
    SWITCH_CONNECT = "switch_connect"
    SWITCH_DISCONNECT = "switch_disconnect"
    SWITCH_REFUSED = "switch_refused"
    PORT_DOWN = "port_down"
    PORT_UP = "port_up"
    CONNECTION_REFUSED = "connection_refused"
    CONFIG_RELOAD = "config_reload"
    WARNING = "warning"
    WARNING_CLEARED = "warning_cleared"


@dataclass(slots=True)
class Event:
    """One entry of the log: a sequence number (the paging marker), when, what kind, its VIP and its details."""

    id: int
    at: float
    kind: EventKind
    vip: str | None
    detail: dict[str, Any]
    count: int = 1
    last_at: float = field(default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """The JSON view of ``GET /v1/events``."""
        view: dict[str, Any] = {"id": self.id, "at": self.at, "kind": str(self.kind), "vip": self.vip, **self.detail}
        if self.count > 1:
            view["count"] = self.count
            view["last_at"] = self.last_at
        return view


class EventLog:
    """A bounded, filterable ring of events, oldest first, with counts of every event ever recorded by kind."""

    def __init__(self, capacity: int = EVENT_CAPACITY) -> None:
        self.events: deque[Event] = deque(maxlen=capacity)
        self.recorded: Counter[EventKind] = Counter({kind: 0 for kind in EventKind})
        """Events recorded by kind since start (including the coalesced repeats and those the ring dropped)."""
        self.next_id = 1
        self._coalescing: dict[tuple[EventKind, str | None, str], Event] = {}

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def record(self, kind: EventKind, at: float, vip: str | None = None, **detail: Any) -> Event:
        """Append an event (the oldest goes when the ring is full); the new event."""
        event = Event(self.next_id, at, kind, vip, detail, last_at=at)
        self.next_id += 1
        self.events.append(event)
        self.recorded[kind] += 1
        return event

    def record_coalesced(self, kind: EventKind, at: float, vip: str | None, key: str, **detail: Any) -> Event:
        """Like ``record``, but a repeat of (kind, vip, key) within ``COALESCE_WINDOW`` of the first only counts."""
        first = self._coalescing.get((kind, vip, key))
        if first is not None and at - first.at < COALESCE_WINDOW:
            first.count += 1
            first.last_at = at
            self.recorded[kind] += 1
            return first
        event = self.record(kind, at, vip, **detail)
        if len(self._coalescing) >= (self.events.maxlen or EVENT_CAPACITY):
            self._coalescing.clear()
        self._coalescing[(kind, vip, key)] = event
        return event

    def select(
        self,
        kind: EventKind | None = None,
        vip: str | None = None,
        since: float | None = None,
        marker: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events oldest first: of ``kind``, of ``vip``, at or after ``since``, after the id ``marker``, at most
        ``limit``."""
        found: list[Event] = []
        for event in self.events:
            if marker is not None and event.id <= marker:
                continue
            if kind is not None and event.kind != kind:
                continue
            if vip is not None and event.vip != vip:
                continue
            if since is not None and event.last_at < since:
                continue
            found.append(event)
            if limit is not None and len(found) >= limit:
                break
        return found


def log_new_events(events: EventLog, after: int, log: logging.Logger) -> int:
    """Log (INFO, one JSON line each) the events recorded after the id ``after``; the id of the last one logged."""
    for event in events.select(marker=after):
        log.info("event %s", json.dumps(event.as_dict(), default=str, sort_keys=True))
        after = event.id
    return after
