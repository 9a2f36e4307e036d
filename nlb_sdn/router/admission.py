"""Admission of accepted connections: an exact cap on the router's open connections and a per-client limit.

A slot is taken in the accepting task right after ``accept`` returns, with no ``await`` in between, so the check and
the count can never race (the event loop runs one task at a time). It is given back exactly once, when the router
has closed the connection, migrated it away, or its proxy relay has ended.
"""

from __future__ import annotations

import enum
import socket
from collections import Counter


class Refusal(enum.StrEnum):
    """Why an accepted connection was refused at once (the reason counted in the router's stats)."""

    OVER_CAPACITY = "over_capacity"
    """The router already holds ``max_connections`` connections."""
    OVER_CLIENT_LIMIT = "over_client_limit"
    """The client's address already holds ``max_connections_per_client`` connections."""


class Admission:
    """The connections the router holds (being peeked at, decided, migrated or relayed), by client address."""

    def __init__(self, max_connections: int, max_per_client: int) -> None:
        """At most ``max_connections`` connections in all and ``max_per_client`` from one client address."""
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._held: dict[socket.socket, str] = {}
        self._per_client: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Connections holding a slot."""
        return len(self._held)

    @property
    def clients(self) -> int:
        """Client addresses holding at least one slot."""
        return len(self._per_client)

    def held_by(self, client: str) -> int:
        """Connections ``client`` holds."""
        return self._per_client[client]

    def admit(self, conn: socket.socket, client: str) -> Refusal | None:
        """Take a slot for ``conn`` from ``client``, or say why not (call it in the accepting task, with no await)."""
        if len(self._held) >= self.max_connections:
            return Refusal.OVER_CAPACITY
        if self._per_client[client] >= self.max_per_client:
            return Refusal.OVER_CLIENT_LIMIT
        self._held[conn] = client
        self._per_client[client] += 1
        return None

    def release(self, conn: socket.socket) -> None:
        """Give back the slot of ``conn``; a second release of the same connection does nothing."""
        client = self._held.pop(conn, None)
        if client is None:
            return
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def close_all(self) -> None:
        """Close every connection still holding a slot and give the slots back (the router is stopping)."""
        for conn in list(self._held):
            conn.close()
        self._held.clear()
        self._per_client.clear()
