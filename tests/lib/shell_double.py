"""A stand-in for the app shell in core tests: it carries out a LoadBalancer's effects the way the shell does.

Each call returns what the shell would send for the event (the messages for the event's switch, or per switch), and
collects the DAM operations and datagrams of every event, in order, in :attr:`ShellDouble.dam_ops` and
:attr:`ShellDouble.datagrams`. Everything else is read from the core itself.
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import DamOp, Datagram, Effects, Out
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.signed import KeyRing


class ShellDouble:
    """A LoadBalancer core driven as the shell drives it, with the effects of every event recorded."""

    def __init__(self, config: Config, hl_key: KeyRing | bytes = b"", now: float = 0.0) -> None:
        self.core = LoadBalancer(config, hl_key, now)
        self.dam_ops: list[DamOp] = []
        self.datagrams: list[Datagram] = []
        self.effects: list[Effects] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)

    def _record(self, effects: Effects) -> Effects:
        """Keep an event's effects, its DAM operations and datagrams."""
        self.effects.append(effects)
        self.dam_ops += effects.dam
        self.datagrams += effects.datagrams
        return effects

    @staticmethod
    def _per_dpid(effects: Effects) -> dict[int, list[Any]]:
        """The messages of an event, per switch, as lists."""
        return {dpid: list(msgs) for dpid, msgs in effects.messages.items()}

    def handle_packet_in(self, dpid: int, *args: Any, **kwargs: Any) -> list[Any]:
        """A packet-in; the answer for its switch."""
        return self._record(self.core.handle_packet_in(dpid, *args, **kwargs)).to(dpid)

    def handle_flow_removed(self, dpid: int, *args: Any, **kwargs: Any) -> list[Any]:
        """A flow-removed; the answer for its switch."""
        return self._record(self.core.handle_flow_removed(dpid, *args, **kwargs)).to(dpid)

    def reconcile(self, dpid: int, *args: Any, **kwargs: Any) -> list[Any]:
        """A switch's flow stats; the deletes for it."""
        return self._record(self.core.reconcile(dpid, *args, **kwargs)).to(dpid)

    def apply_config(self, new: Config, dpids: Any, now: float = 0.0) -> dict[int, list[Any]]:
        """A config change; the flow changes for each of ``dpids`` (empty where nothing changes)."""
        effects = self._record(self.core.apply_config(new, dpids, now))
        return {dpid: effects.to(dpid) for dpid in dpids}

    def dispatch_updates(self, now: float, dpids: Any) -> dict[int, list[Any]]:
        """Group changes per switch."""
        return self._per_dpid(self._record(self.core.dispatch_updates(now, dpids)))

    def conntrack_audits(self, now: float) -> dict[int, list[Any]]:
        """Audit entries per switch."""
        return self._per_dpid(self._record(self.core.conntrack_audits(now)))

    def tick(self, now: float, dpids: Any = ()) -> tuple[list[Datagram], dict[int, list[Any]]]:
        """The timer; its datagrams and messages per switch."""
        effects = self._record(self.core.tick(now, dpids))
        return list(effects.datagrams), self._per_dpid(effects)

    def handle_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> list[Datagram]:
        """An agent's datagram; the replies."""
        return list(self._record(self.core.handle_datagram(data, addr, now)).datagrams)

    def move_connection(self, *args: Any) -> tuple[int, list[Any]]:
        """An l7 connection moved; its switch and the flow-mods for it."""
        [(dpid, msgs)] = self._record(self.core.move_connection(*args)).messages.items()
        return dpid, list(msgs)

    def commit_migration(self, *args: Any, **kwargs: Any) -> tuple[int | None, list[Any], Any]:
        """A migration commit; the connection's switch, the flow-mods and the migration record."""
        effects, migration = self.core.commit_migration(*args, **kwargs)
        return (*self._single(self._record(effects)), migration)

    def report_migration(self, *args: Any, **kwargs: Any) -> tuple[int | None, list[Any], Any]:
        """A migration report; the connection's switch (None when nothing moved), the flow-mods and the record."""
        effects, migration = self.core.report_migration(*args, **kwargs)
        return (*self._single(self._record(effects)), migration)

    @staticmethod
    def _single(effects: Effects) -> tuple[int | None, list[Any]]:
        """The one switch an event's messages go to, and those messages ((None, []) when there are none)."""
        if not effects.messages:
            return None, []
        [(dpid, msgs)] = effects.messages.items()
        return dpid, list(msgs)

    def delete_session(self, key: str) -> bool:
        """A session deleted on request; False when there was none."""
        try:
            self._record(self.core.delete_session(key))
        except LookupError:
            return False
        return True

    def probe_reply(self, segment: TcpSegment) -> list[Any]:
        """A probe reply from table 0 (as the packet-in path hands it over); the packet-outs it causes."""
        out = Out()
        self.core.hl.probe_reply(segment, 0, 0, out)
        return out.effects().to(0)

    @property
    def connections_by_key(self) -> dict[Any, Any]:
        """The connection table."""
        return self.core.ctx.table.by_key

    @property
    def lingering(self) -> dict[Any, Any]:
        """Routes lingering after their flows."""
        return self.core.ctx.table.lingering

    @property
    def session_flows(self) -> dict[Any, str]:
        """Per-session flow pairs in switches."""
        return self.core.ctx.affinity.session_flows

    @property
    def sessions(self) -> Any:
        """The session table."""
        return self.core.ctx.affinity.sessions

    def vip_id(self, name: str) -> int:
        """The id a VIP service's cookies carry."""
        state = self.core.ctx.vips.by_name(name)
        assert state is not None, name
        return state.vip_id

    def has_mac(self, member: Any) -> bool:
        """The core's predicate: can packets be rewritten toward the member."""
        return self.core.ctx.fabric.has_mac(member)
