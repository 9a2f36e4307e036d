"""Migration tickets: the controller's word that one connection may move to one host, and the channel key it grants.

Before a router moves a connection, it asks the controller for a ticket (``POST /v1/migrations``, phase ``ticket``).
The controller checks that it tracks that connection (client address and port, VIP address and port) at a router,
and signs a ticket for the target host with that host's own key (:mod:`nlb_sdn.signed`, kid = the host id) binding
host, VIP, 4-tuple, migration id, expiry and a random nonce. With it, the router gets the migration's channel key,
``HMAC-SHA256(host_key, CHANNEL_LABEL + nonce)``, which signs every message of that migration both ways.

The host's receiver (:class:`TicketChecker`) verifies the ticket with its own key, derives the same channel key,
restores only the 4-tuple and VIP the ticket names, and takes each ticket once. A router holds no host key: it
cannot forge a ticket, and a ticket for one host, connection or moment is refused anywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from nlb_sdn.health.protocol import is_ipv4, is_port
from nlb_sdn.migration.wire import MIGRATION_ID_PATTERN
from nlb_sdn.signed import MAX_SKEW, TCP_MAX_SIZE, OneKey, SignedVerifier, encode, is_ident

TICKET = "migration_ticket"
TICKET_TTL = 10.0
"""Seconds a ticket is valid after the controller issued it (a migration takes milliseconds, its timeout 1-2 s)."""
CHANNEL_LABEL = b"nlb-sdn migration channel v1\0"
NONCE_PATTERN = re.compile(r"[0-9a-f]{32}")
REFUSAL_REASONS = (
    "oversized",
    "unknown_kid",
    "bad_mac",
    "malformed",
    "unknown_type",
    "stale",
    "wrong_host",
    "expired",
    "replayed",
    "wrong_connection",
)
"""Why a receiver refused a migration's ticket: the verifier's drops (another host's key shows as unknown_kid), a
ticket for another host, past its expiry or already used, or a state whose VIP, 4-tuple or id it does not name."""


def _number(value: Any) -> bool:
    return type(value) in (int, float)


TICKET_FIELDS = {
    "id": lambda value: isinstance(value, str) and MIGRATION_ID_PATTERN.fullmatch(value) is not None,
    "host": is_ident,
    "vip": is_ipv4,
    "vport": is_port,
    "client": is_ipv4,
    "cport": is_port,
    "expires": _number,
    "nonce": lambda value: isinstance(value, str) and NONCE_PATTERN.fullmatch(value) is not None,
}
"""The body of a ticket and the check of each field."""


@dataclass(frozen=True)
class Ticket:
    """A verified ticket: migration ``id`` of ``client:cport`` → ``vip:vport`` to ``host``, until ``expires``."""

    id: str
    host: str
    vip: str
    vport: int
    client: str
    cport: int
    expires: float
    nonce: str

    def names(self, local: tuple[str, int], remote: tuple[str, int]) -> bool:
        """Whether the ticket is for the connection with this local (VIP) and remote (client) address."""
        return (self.vip, self.vport) == local and (self.client, self.cport) == remote


@dataclass(frozen=True)
class Grant:
    """What a router needs to move one connection: the signed ticket and the migration's channel key."""

    migration_id: str
    ticket: bytes
    channel_key: bytes

    def as_dict(self) -> dict[str, str]:
        """The JSON form the controller answers with (hex)."""
        return {"id": self.migration_id, "ticket": self.ticket.hex(), "channel_key": self.channel_key.hex()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        """The grant in a controller's answer; ValueError (or KeyError, TypeError) when it is not one."""
        return cls(str(data["id"]), bytes.fromhex(data["ticket"]), bytes.fromhex(data["channel_key"]))


def channel_key(host_key: bytes, nonce: str) -> bytes:
    """The key of the migration whose ticket has ``nonce``: ``HMAC-SHA256(host_key, CHANNEL_LABEL + nonce)``."""
    return hmac.new(host_key, CHANNEL_LABEL + nonce.encode(), hashlib.sha256).digest()


def issue(
    host_key: bytes,
    ticket: Ticket,
    src: str,
    seq: int,
    now: float,
) -> Grant:
    """Sign ``ticket`` with its host's key (as controller ``src``) and grant its channel key."""
    body = {name: getattr(ticket, name) for name in TICKET_FIELDS}
    data = encode(host_key, TICKET, src, seq, now, body, kid=ticket.host)
    return Grant(ticket.id, data, channel_key(host_key, ticket.nonce))


class TicketChecker:
    """A host's check of the tickets that come with migrations (thread-safe); counts refusals in ``refused``."""

    def __init__(self, host_id: str, host_key: bytes, max_skew: float = MAX_SKEW) -> None:
        """Tickets for ``host_id``, signed with its ``host_key``."""
        self.host_id = host_id
        self.host_key = host_key
        self.refused: Counter[str] = Counter()
        self._verifier = SignedVerifier(
            OneKey(host_id, host_key), TCP_MAX_SIZE, {TICKET: self._body_ok}, max_skew, bind_src=False, ordered=False
        )
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _body_ok(body: dict[str, Any]) -> bool:
        """Whether a ticket body has every field, each well formed."""
        return all(name in body and check(body[name]) for name, check in TICKET_FIELDS.items())

    def check(self, data: bytes, now: float) -> Ticket | None:
        """The ticket in ``data`` when it is for this host, unexpired and unused (it is used now); else None after
        counting why."""
        with self._lock:
            before = self._verifier.dropped.copy()
            message = self._verifier.verify(data, now)
            if message is None:
                return self._refuse(next(iter(self._verifier.dropped - before), "malformed"))
            ticket = Ticket(**{name: message.body[name] for name in TICKET_FIELDS})
            if ticket.host != self.host_id:
                return self._refuse("wrong_host")
            if now > ticket.expires:
                return self._refuse("expired")
            for nonce, expires in list(self._used.items()):
                if now > expires + MAX_SKEW:
                    del self._used[nonce]
            if ticket.nonce in self._used:
                return self._refuse("replayed")
            self._used[ticket.nonce] = float(ticket.expires)
            return ticket

    def refuse(self, reason: str) -> None:
        """Count a refusal found after the ticket itself checked out (``wrong_connection``)."""
        with self._lock:
            self.refused[reason] += 1

    def _refuse(self, reason: str) -> Ticket | None:
        """Count one refusal (the lock held); None, the ticket :meth:`check` gives for it."""
        self.refused[reason] += 1
        return None
