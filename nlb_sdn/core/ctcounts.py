"""Per-member connection counts of ``switch_tracking: counters`` VIPs, read from flow stats instead of packet copies.

A counters VIP's switch copies nothing per connection. Its per-member entries count instead, and the controller reads
their packet counts on the switch sync tick (``controller.switch_sync_period``):

- table 6: the member's commit entry of the VIP counts the connections the switch started toward it (one SYN each:
  the tracker sends a retransmitted SYN to the member's table 8 entry, not back to the group);
- table 8: the member's FIN and RST entries count the client's FIN and RST segments (its connections' ends), and its
  forwarding entry counts every other client packet of its tracked connections (the member is in use).

A member's live connections are estimated as started minus ended (at least 0), shared between the VIPs that use it
in proportion to what each started. A member none of whose entries counted a packet for its VIP's ``idle_timeout``
has none (the rule the per-connection audit entries of ``copies`` VIPs follow), so ``draining`` always turns
``drained``. The estimate is approximate: a retransmitted FIN, or a FIN and then an RST, counts one end twice; a
connection the member ends with an RST is only caught by the idle rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlb_sdn.flows.pipeline import Cookie, CookieKind, Priority, Table

CounterRow = tuple[int, int, int, int]
"""A flow entry as flow stats report it, for counting: (table id, priority, cookie, packet count)."""


@dataclass(slots=True)
class MemberCounts:
    """The latest packet counts of each switch's per-member entries, and when each member last saw a packet."""

    started: dict[tuple[int, int, int], int] = field(default_factory=dict)
    """Packets of table 6 commit entries, by (dpid, VIP service id, endpoint id): connections started."""
    ended: dict[tuple[int, int], int] = field(default_factory=dict)
    """Packets of table 8 FIN and RST entries, by (dpid, endpoint id): connections ended."""
    activity: dict[tuple[int, int, int], tuple[int, float]] = field(default_factory=dict)
    """Every packet a member's entries of a table counted and when that total last changed, by (dpid, table id,
    endpoint id)."""
    observed_at: float = 0.0
    """When flow stats were last read."""

    def observe(self, dpid: int, rows: list[CounterRow], now: float) -> None:
        """Take one switch's table 6 and/or table 8 from flow stats; a table the rows do not hold keeps its counts.

        The two tables come in separate replies (and other tables' replies hold neither), so each replaces only its own.
        """
        tables = {row[0] for row in rows} & {Table.SWITCH_SELECT, Table.CT_FORWARD}
        started: dict[tuple[int, int, int], int] = {}
        ended: dict[tuple[int, int], int] = {}
        packets: dict[tuple[int, int, int], int] = {}
        for table_id, priority, raw_cookie, packet_count in rows:
            cookie = Cookie.decode(raw_cookie)
            if cookie.kind != CookieKind.BASE or not cookie.endpoint_id or table_id not in tables:
                continue
            endpoint = cookie.endpoint_id
            if table_id == Table.SWITCH_SELECT and cookie.vip_id:
                started[(dpid, cookie.vip_id, endpoint)] = packet_count
            elif table_id == Table.CT_FORWARD and not cookie.vip_id:
                if priority == Priority.CT_END:
                    ended[(dpid, endpoint)] = ended.get((dpid, endpoint), 0) + packet_count
            else:
                continue
            packets[(dpid, table_id, endpoint)] = packets.get((dpid, table_id, endpoint), 0) + packet_count
        if Table.SWITCH_SELECT in tables:
            self.started = {key: count for key, count in self.started.items() if key[0] != dpid} | started
        if Table.CT_FORWARD in tables:
            self.ended = {key: count for key, count in self.ended.items() if key[0] != dpid} | ended
        for key, total in packets.items():
            before = self.activity.get(key)
            if before is None or before[0] != total:
                self.activity[key] = (total, now)
        for key in [
            key for key in self.activity if key[:2] in {(dpid, table) for table in tables} and key not in packets
        ]:
            del self.activity[key]
        self.observed_at = max(self.observed_at, now)

    def forget(self, dpid: int) -> None:
        """A switch is gone for good: its counts no longer say anything."""
        self.started = {key: count for key, count in self.started.items() if key[0] != dpid}
        self.ended = {key: count for key, count in self.ended.items() if key[0] != dpid}
        for key in [key for key in self.activity if key[0] == dpid]:
            del self.activity[key]

    def quiet(self, endpoint_id: int, idle: float) -> bool:
        """Whether no switch counted a packet of the member for ``idle`` seconds (up to the last flow stats)."""
        last = [since for (_d, _t, endpoint), (_total, since) in self.activity.items() if endpoint == endpoint_id]
        return not last or self.observed_at - max(last) >= idle

    def live(self, vip_id: int, endpoint_id: int, idle: float) -> int:
        """Estimated live connections of one member of one counters VIP (0 once quiet for ``idle`` seconds)."""
        if self.quiet(endpoint_id, idle):
            return 0
        mine = sum(
            count for (_d, vip, endpoint), count in self.started.items() if (vip, endpoint) == (vip_id, endpoint_id)
        )
        started = sum(count for (_d, _vip, endpoint), count in self.started.items() if endpoint == endpoint_id)
        ended = sum(count for (_d, endpoint), count in self.ended.items() if endpoint == endpoint_id)
        if not started:
            return 0
        return round(max(0, started - ended) * mine / started)

    def started_total(self, vip_id: int, endpoint_id: int) -> int:
        """Connections the switches started toward a member for one VIP, as last read."""
        return sum(
            count for (_d, vip, endpoint), count in self.started.items() if (vip, endpoint) == (vip_id, endpoint_id)
        )
