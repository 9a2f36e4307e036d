"""The agent state machine (pure): check results, load samples, directives and messages in; messages to send out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nlb_sdn.agent.checks import CheckState
from nlb_sdn.agent.config import AgentConfig
from nlb_sdn.health.protocol import Message
from nlb_sdn.health.table import Change, HLTable

Address = tuple[str, int]
GOODBYE_COUNT = 3


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
        self._checks = {app.app_id: CheckState(app.health.rise, app.health.fall) for app in config.apps}

    def start(self) -> list[Outgoing]:
        """What to send once at start: a postulate of this table's checksum to every controller."""
        body = {"from": self.host_id, "host_id": self.host_id, "checksum": self.table.checksum}
        return [Outgoing("postulate", body, self.controllers)]

    def tick(self, now: float) -> list[Outgoing]:
        """A heartbeat when one is due (or the clock stepped back), else nothing."""
        if self.next_heartbeat - 2 * self.hb_period <= now < self.next_heartbeat:
            return []
        self.next_heartbeat = now + self.hb_period
        body = {"host_id": self.host_id, "checksum": self.table.checksum, "row_count": len(self.table),
                "period_ms": round(self.hb_period * 1000)}
        return [Outgoing("heartbeat", body, self.controllers)]

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

    def on_message(self, message: Message, sender: Address) -> list[Outgoing]:
        """Answer a verified message from ``sender``; messages for another host or not for agents are ignored."""
        body = message.body
        if message.type == "set_target_state":
            return self.set_target(body["app_id"], body["target"], sender) if body["app_id"] in self.table else []
        if body.get("host_id") != self.host_id:
            return []
        if message.type in ("get_snapshot", "postulate_wrong"):
            return [self.snapshot((sender,))]
        if message.type == "postulate" and body["from"] != self.host_id:
            return self._postulated(body, sender)
        return []

    def snapshot(self, to: tuple[Address, ...]) -> Outgoing:
        """A snapshot of the whole table for ``to``."""
        body = {"host_id": self.host_id, "rows": [row.to_dict() for row in self.table.rows()],
                "checksum": self.table.checksum}
        return Outgoing("snapshot", body, to)

    def stop(self, reason: str) -> list[Outgoing]:
        """What to send on a graceful stop: a goodbye to every controller, three times."""
        return [Outgoing("goodbye", {"host_id": self.host_id, "reason": reason}, self.controllers)
                for _ in range(GOODBYE_COUNT)]

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
