"""The agent state machine (pure): check results, load samples, directives, sessions and messages in; messages out."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace
from typing import Any

from nlb_sdn.agent.checks import CheckState
from nlb_sdn.agent.config import AgentConfig
from nlb_sdn.health.protocol import MAX_SID, MAX_STYPE, SESSION_TYPE_PATTERN, body_ok
from nlb_sdn.health.table import Change, HLTable
from nlb_sdn.signed import Message

Address = tuple[str, int]
GOODBYE_COUNT = 3
SESSION_TTL = 600.0
MAX_SESSION_TTL = 86400.0
MAX_SESSIONS = 4096
DEFAULT_STYPE = "app"


@dataclass(frozen=True)
class Session:
    """One row of the host's session table 2014 (FIG. 23A): a lease of ``ttl_s`` seconds ending at ``expires_at``.

    ``refresh_at`` is when it is next re-announced to every controller (``announced_at + ttl_s / 2``).
    """

    stype: str
    sid: str
    app_id: str
    vip: str
    vport: int
    proto: str
    pip: str
    pport: int
    client: str
    ttl_s: float
    announced_at: float
    expires_at: float
    refresh_at: float

    @property
    def key(self) -> tuple[str, str, int, str]:
        """What names the session at a controller besides its sid: a change of any of these needs a session_down."""
        return (self.stype, self.vip, self.vport, self.client)

    def up_body(self, host_id: str, now: float) -> dict[str, Any]:
        """The ``session_up`` body; ``ttl_s`` is what is left of the lease (at least 1 ms)."""
        return {
            "host_id": host_id,
            "stype": self.stype,
            "sid": self.sid,
            "vip": self.vip,
            "vport": self.vport,
            "proto": self.proto,
            "pip": self.pip,
            "pport": self.pport,
            "client": self.client,
            "ttl_s": max(0.001, round(self.expires_at - now, 3)),
        }

    def down_body(self, host_id: str) -> dict[str, Any]:
        """The ``session_down`` body."""
        return {
            "host_id": host_id,
            "stype": self.stype,
            "sid": self.sid,
            "vip": self.vip,
            "vport": self.vport,
            "client": self.client,
        }

    def to_dict(self, now: float) -> dict[str, Any]:
        """The session as the ``sessions`` control command shows it (``expires_in``: seconds left)."""
        return {
            "sid": self.sid,
            "stype": self.stype,
            "app_id": self.app_id,
            "vip": self.vip,
            "vport": self.vport,
            "proto": self.proto,
            "pip": self.pip,
            "pport": self.pport,
            "client": self.client,
            "ttl_s": self.ttl_s,
            "expires_at": self.expires_at,
            "expires_in": round(self.expires_at - now, 3),
        }


@dataclass(frozen=True)
class Outgoing:
    """A message to sign and send to every address in ``to``."""

    type: str
    body: dict[str, Any]
    to: tuple[Address, ...]


class AgentCore:
    """One host's H&L table and the protocol around it (docs/health.md); time comes in as ``now``."""

    def __init__(self, config: AgentConfig, now: float) -> None:
        """The table of ``config``'s apps (health unknown), with the first heartbeat due at ``now``."""
        self.host_id = config.host_id
        self.hb_period = config.hb_period
        self.controllers: tuple[Address, ...] = tuple(config.controller_addresses)
        self.table = HLTable(app.initial_row() for app in config.apps)
        self.next_heartbeat = now
        self.sessions: dict[str, Session] = {}
        self._checks = {app.app_id: CheckState(app.health.rise, app.health.fall) for app in config.apps}

    def start(self) -> list[Outgoing]:
        """What to send once at start: a postulate of this table's checksum to every controller."""
        body = {"from": self.host_id, "host_id": self.host_id, "checksum": self.table.checksum}
        return [Outgoing("postulate", body, self.controllers)]

    def tick(self, now: float) -> list[Outgoing]:
        """A heartbeat when one is due (or the clock stepped back), then the session timers (see
        :meth:`session_timers`)."""
        sent: list[Outgoing] = []
        if not self.next_heartbeat - 2 * self.hb_period <= now < self.next_heartbeat:
            self.next_heartbeat = now + self.hb_period
            body = {
                "host_id": self.host_id,
                "checksum": self.table.checksum,
                "row_count": len(self.table),
                "period_ms": round(self.hb_period * 1000),
            }
            sent.append(Outgoing("heartbeat", body, self.controllers))
        return sent + self.session_timers(now)

    def next_deadline(self) -> float:
        """When :meth:`tick` next has something to do: the next heartbeat, session refresh or session expiry."""
        return min([self.next_heartbeat, *(min(s.refresh_at, s.expires_at) for s in self.sessions.values())])

    def session_up(
        self, app_id: str, sid: str, client: str, now: float, ttl_s: float = SESSION_TTL, stype: str = DEFAULT_STYPE
    ) -> list[Outgoing]:
        """Record (or renew) session ``sid`` of ``client`` on ``app_id`` for ``ttl_s`` seconds; a session_up to every
        controller (after a session_down of the old one when the same sid changed type, service or client).

        KeyError: no such app; ValueError: a bad argument or a full table.
        """
        row = self.table.get(app_id)
        if row is None:
            raise KeyError(app_id)
        if not isinstance(sid, str) or not sid or not sid.isprintable() or len(sid.encode(errors="replace")) > MAX_SID:
            raise ValueError(f"sid must be printable text of 1 to {MAX_SID} bytes (UTF-8)")
        try:
            client = str(ipaddress.IPv4Address(client))
        except ValueError:
            raise ValueError(f"client must be an IPv4 address, got {client!r}") from None
        if type(ttl_s) not in (int, float) or not math.isfinite(ttl_s) or not 0 < ttl_s <= MAX_SESSION_TTL:
            raise ValueError(f"ttl must be a number of seconds > 0 and <= {MAX_SESSION_TTL:g}")
        if not isinstance(stype, str) or len(stype) > MAX_STYPE or not SESSION_TYPE_PATTERN.fullmatch(stype):
            raise ValueError(
                f"stype must be a lower-case letter, then letters, digits or '_' (at most {MAX_STYPE}), got {stype!r}"
            )
        old = self.sessions.get(sid)
        if old is None and len(self.sessions) >= MAX_SESSIONS:
            raise ValueError(f"the session table is full ({MAX_SESSIONS} sessions)")
        session = Session(
            stype=stype,
            sid=sid,
            app_id=app_id,
            vip=row.vip,
            vport=row.vport,
            proto=row.proto,
            pip=row.pip,
            pport=row.pport,
            client=client,
            ttl_s=float(ttl_s),
            announced_at=now,
            expires_at=now + ttl_s,
            refresh_at=now + ttl_s / 2,
        )
        body = session.up_body(self.host_id, now)
        if not body_ok("session_up", body):
            raise ValueError(f"session_up {body} would not pass the message schema")
        sent = []
        if old is not None and old.key != session.key:
            sent.append(Outgoing("session_down", old.down_body(self.host_id), self.controllers))
        self.sessions[sid] = session
        return [*sent, Outgoing("session_up", body, self.controllers)]

    def session_down(self, app_id: str, sid: str) -> list[Outgoing]:
        """End session ``sid`` of ``app_id``: a session_down to every controller.

        KeyError: no such session; ValueError: the session belongs to another app.
        """
        session = self.sessions.get(sid)
        if session is None:
            raise KeyError(sid)
        if session.app_id != app_id:
            raise ValueError(f"session {sid!r} belongs to {session.app_id}, not {app_id}")
        del self.sessions[sid]
        return [Outgoing("session_down", session.down_body(self.host_id), self.controllers)]

    def live_sessions(self) -> list[Session]:
        """The sessions, by sid."""
        return [self.sessions[sid] for sid in sorted(self.sessions)]

    def session_timers(self, now: float) -> list[Outgoing]:
        """Expire sessions whose lease ran out (a session_down each) and re-announce, to every controller, those
        half-way to their next refresh (a session_up each; the next one ``ttl_s / 2`` later).

        If the clock stepped back before a session's last announcement, its times move back by the same step.
        """
        sent: list[Outgoing] = []
        for sid in sorted(self.sessions):
            session = self.sessions[sid]
            if now < session.announced_at:
                step = now - session.announced_at
                session = replace(
                    session,
                    announced_at=now,
                    expires_at=session.expires_at + step,
                    refresh_at=session.refresh_at + step,
                )
                self.sessions[sid] = session
            if now >= session.expires_at:
                del self.sessions[sid]
                sent.append(Outgoing("session_down", session.down_body(self.host_id), self.controllers))
            elif now >= session.refresh_at:
                self.sessions[sid] = replace(session, announced_at=now, refresh_at=now + session.ttl_s / 2)
                sent.append(Outgoing("session_up", session.up_body(self.host_id, now), self.controllers))
        return sent

    def announce_sessions(self, to: tuple[Address, ...], now: float) -> list[Outgoing]:
        """A session_up of every live session for ``to`` (a controller that lost them); expired ones are left out."""
        return [
            Outgoing("session_up", session.up_body(self.host_id, now), to)
            for session in self.live_sessions()
            if now < session.expires_at
        ]

    def on_check(self, app_id: str, success: bool) -> list[Outgoing]:
        """Feed one probe result of ``app_id``'s health check; a row_change if its health changed."""
        return self._update(app_id, (), health=self._checks[app_id].observe(success))

    def on_load(self, app_id: str, load: float) -> list[Outgoing]:
        """Record a load reading of ``app_id`` (ValueError if negative or not finite); a row_change if it changed."""
        return self._update(app_id, (), load=load)

    def set_target(self, app_id: str, target: str, reply_to: Address | None = None) -> list[Outgoing]:
        """Set ``app_id``'s target state (KeyError: no such app; ValueError: bad state).

        The row_change goes to every controller (and ``reply_to``); a requester gets one even when nothing changed.
        """
        extra = () if reply_to is None else (reply_to,)
        sent = self._update(app_id, extra, target=target)
        if sent or reply_to is None:
            return sent
        checksum = self.table.checksum
        unchanged = Change("update", app_id, self.table.get(app_id), checksum, checksum)
        return [Outgoing("row_change", unchanged.body(self.host_id), extra)]

    def on_message(self, message: Message, sender: Address, now: float) -> list[Outgoing]:
        """Answer a verified message from ``sender``; messages for another host or not for agents are ignored.

        A snapshot request (``get_snapshot`` or ``postulate_wrong``: the controller lost or doubts our state, e.g. it
        restarted) is answered with the snapshot, then a session_up of every live session.
        """
        body = message.body
        if message.type == "set_target_state":
            return self.set_target(body["app_id"], body["target"], sender) if body["app_id"] in self.table else []
        if body.get("host_id") != self.host_id:
            return []
        if message.type in ("get_snapshot", "postulate_wrong"):
            return [self.snapshot((sender,)), *self.announce_sessions((sender,), now)]
        if message.type == "postulate" and body["from"] != self.host_id:
            return self._postulated(body, sender)
        return []

    def snapshot(self, to: tuple[Address, ...]) -> Outgoing:
        """A snapshot of the whole table for ``to``."""
        body = {
            "host_id": self.host_id,
            "rows": [row.to_dict() for row in self.table.rows()],
            "checksum": self.table.checksum,
        }
        return Outgoing("snapshot", body, to)

    def stop(self, reason: str) -> list[Outgoing]:
        """What to send on a graceful stop: a goodbye to every controller, three times."""
        return [
            Outgoing("goodbye", {"host_id": self.host_id, "reason": reason}, self.controllers)
            for _ in range(GOODBYE_COUNT)
        ]

    def _postulated(self, body: dict[str, Any], sender: Address) -> list[Outgoing]:
        """Compare a controller's checksum with ours (postulate_wrong if different), then record its ``current``."""
        sent: list[Outgoing] = []
        if body["checksum"] != self.table.checksum:
            wrong = {"from": self.host_id, "host_id": self.host_id, "checksum_actual": self.table.checksum}
            sent.append(Outgoing("postulate_wrong", wrong, (sender,)))
        for app_id, state in sorted(body.get("current", {}).items()):
            if app_id in self.table:
                sent += self._update(app_id, (sender,), current=state)
        return sent

    def _update(self, app_id: str, extra: tuple[Address, ...], **fields: Any) -> list[Outgoing]:
        """Change fields of a row; a row_change to every controller (and ``extra``) if the row changed."""
        row = self.table.get(app_id)
        if row is None:
            raise KeyError(app_id)
        change = self.table.upsert(replace(row, **fields))
        if change is None:
            return []
        to = self.controllers + tuple(address for address in extra if address not in self.controllers)
        return [Outgoing("row_change", change.body(self.host_id), to)]
