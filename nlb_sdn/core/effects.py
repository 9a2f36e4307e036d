"""What the core asks the shell to do: the one return type of every core entry point.

The core never touches a datapath, a socket or the DAM. Each entry point collects what it wants done in an
:class:`Out` while it handles one event and returns it frozen as :class:`Effects`: OpenFlow messages per dpid, DAM
operations and H&L datagrams. The shell sends the messages in order, queues the DAM operations for its writer and
sends the datagrams.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

Datagram = tuple[tuple[str, int], bytes]
"""An H&L message for an agent: its (address, port) and its bytes."""


class DamVerb(StrEnum):
    """What a DAM operation does to its atom."""

    PUT = "put"
    TOUCH = "touch"
    DELETE = "delete"


class DamOp(NamedTuple):
    """One write for the shell's DAM writer."""

    verb: DamVerb
    key: str
    data: dict[str, Any] | None = None
    ttl: float | None = None

    @classmethod
    def put(cls, key: str, data: dict[str, Any], ttl: float | None = None) -> DamOp:
        """Store ``data`` under ``key`` (with no expiry when ``ttl`` is None)."""
        return cls(DamVerb.PUT, key, data, ttl)

    @classmethod
    def touch(cls, key: str, ttl: float) -> DamOp:
        """Let the atom under ``key`` expire ``ttl`` seconds from now."""
        return cls(DamVerb.TOUCH, key, None, ttl)

    @classmethod
    def delete(cls, key: str) -> DamOp:
        """Remove the atom under ``key``."""
        return cls(DamVerb.DELETE, key)


_NO_MESSAGES: Mapping[int, tuple[Any, ...]] = MappingProxyType({})


class Effects(NamedTuple):
    """What handling one event asks of the shell: messages per dpid (in order), DAM operations and datagrams.

    Immutable (a named tuple over a read-only mapping and tuples), and cheap to make: every packet-in makes one.
    """

    messages: Mapping[int, tuple[Any, ...]] = _NO_MESSAGES
    dam: tuple[DamOp, ...] = ()
    datagrams: tuple[Datagram, ...] = ()

    def to(self, dpid: int) -> list[Any]:
        """The messages for one datapath, in order (empty when there are none)."""
        return list(self.messages.get(dpid, ()))

    def __bool__(self) -> bool:
        return bool(self.messages or self.dam or self.datagrams)


NO_EFFECTS = Effects()
"""The effects of an event that changes nothing outside the core."""


class Out:
    """The effects of one event while it is being handled; :meth:`effects` freezes them."""

    __slots__ = ("dam", "datagrams", "messages")

    def __init__(self) -> None:
        self.messages: dict[int, list[Any]] = {}
        self.dam: list[DamOp] = []
        self.datagrams: list[Datagram] = []

    def send(self, dpid: int, msgs: Iterable[Any]) -> None:
        """Queue messages for one datapath, after those already queued for it."""
        queued = self.messages.get(dpid)
        if queued is None:
            self.messages[dpid] = list(msgs)
        else:
            queued.extend(msgs)

    def send_all(self, dpids: Iterable[int], msgs: list[Any]) -> None:
        """Queue the same messages for each of ``dpids``."""
        if msgs:
            for dpid in dpids:
                self.send(dpid, msgs)

    def put(self, key: str, data: dict[str, Any], ttl: float | None = None) -> None:
        """Queue a DAM put."""
        self.dam.append(DamOp(DamVerb.PUT, key, data, ttl))

    def touch(self, key: str, ttl: float) -> None:
        """Queue a DAM touch (a new expiry)."""
        self.dam.append(DamOp(DamVerb.TOUCH, key, None, ttl))

    def delete(self, key: str) -> None:
        """Queue a DAM delete."""
        self.dam.append(DamOp(DamVerb.DELETE, key))

    def effects(self) -> Effects:
        """The collected effects, frozen (dpids with no messages left out)."""
        messages = {dpid: tuple(msgs) for dpid, msgs in self.messages.items() if msgs}
        if not messages and not self.dam and not self.datagrams:
            return NO_EFFECTS
        return Effects(MappingProxyType(messages), tuple(self.dam), tuple(self.datagrams))
