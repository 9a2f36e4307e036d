"""The load balancer core of one LBU instance: classification, connection table, config diff and counters.

It never touches a socket or a datapath. The app shell feeds it switch, packet-in and flow-removed events and sends
the OpenFlow messages it returns; REST reads it and changes its config through ``apply_config``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Config, Member, Vip
from nlb_sdn.core.fabric import forwarding_tables
from nlb_sdn.core.frames import ArpRequest, FrameError, TcpSegment, parse_frame
from nlb_sdn.core import l7
from nlb_sdn.affinity.sessions import (APP, CLIENT_IP, Session, SessionTable, client_ip_sid, client_of_match,
                                      client_prefix)
from nlb_sdn.flows import builders, dispatch, tunnel
from nlb_sdn.flows import templates
from nlb_sdn.health.allotment import largest_remainder
from nlb_sdn.health.handler import Attachment, Datagram, HealthHandler
from nlb_sdn.flows.pipeline import KIND_MASK, MAX_VIP_ID, Cookie, CookieKind, Table, make_cookie

ConnKey = tuple[str, int, str, int]
REINJECT_WINDOW = 1.0
"""Seconds within which a second miss of the same segment's connection in the switch-learned table drops it."""
MAX_REINJECTED = 100_000
CT_RETIRE_MAX = 3600.0
"""Seconds a member removed from every conntrack pool keeps its entries at most (its connections' end copies may
have been lost)."""
DamOp = tuple[Any, ...]
"""A write for the shell's DAM writer: ("put", key, data, ttl), ("touch", key, ttl) or ("delete", key)."""
MAX_AUDITS = 2000
"""Conntrack audit entries installed per tick at most (each one is a flow-table change in the switch)."""
SYN_TAG_MASK = 0xFF
"""The bits of a SYN's sequence number kept per connection (1 new connection in 256 on a reused port is taken for a
retransmitted SYN and goes where the old one went)."""


def route_key(key: ConnKey) -> str:
    """The DAM key of a connection's route atom."""
    client_ip, client_port, vip_ip, vip_port = key
    return f"conn:tcp:{client_ip}:{client_port}:{vip_ip}:{vip_port}"


@dataclass(slots=True)
class Connection:
    """One tracked connection: where it was plumbed and to which member."""

    dpid: int
    vip: str
    member: str
    route: builders.NatRoute
    installed_at: float
    dispatch: str = "controller"
    syn_tag: int | None = None
    """The low byte of its SYN's sequence number (a small int: no allocation): a SYN with another one is a new
    connection from the same client port. None when not known (adopted, or dispatched by the switch)."""

    def atom_data(self) -> dict[str, Any]:
        """The route atom's data: enough for any LBU to re-plumb the connection to the same endpoint."""
        route = self.route
        return {"vip": self.vip, "member": self.member, "pip": route.member_ip, "pport": route.member_port,
                "mac": route.member_mac, "mode": self.mode, "flow_id": 0, "dpid": self.dpid, "dispatch": self.dispatch}

    def as_dict(self, key: ConnKey) -> dict[str, Any]:
        """A JSON-friendly view for REST."""
        client_ip, client_port, vip_ip, vip_port = key
        return {
            "client": f"{client_ip}:{client_port}", "vip": self.vip, "vip_address": f"{vip_ip}:{vip_port}",
            "member": self.member, "member_address": f"{self.route.member_ip}:{self.route.member_port}",
            "dpid": self.dpid, "mode": self.mode, **self._tunnel_fields(), "dispatch": self.dispatch,
            "cookie": f"0x{self.route.cookie:016x}",
            "installed_at": self.installed_at,
        }

    @property
    def mode(self) -> str:
        """The forwarding mode the connection is plumbed in: ``nat`` or ``tunnel``."""
        return tunnel.route_mode(self.route)

    def _tunnel_fields(self) -> dict[str, int]:
        """The MPLS label of a tunnel connection's host, for REST (nothing for nat)."""
        return {"label": self.route.label} if isinstance(self.route, tunnel.TunnelRoute) else {}


class VipState:
    """Runtime state of one VIP service: its id in cookies and its model (members also by endpoint id)."""

    __slots__ = ("_vip", "vip_id", "_by_endpoint")

    def __init__(self, vip: Vip, vip_id: int) -> None:
        self.vip_id = vip_id
        self.vip = vip

    @property
    def vip(self) -> Vip:
        """The VIP service's model."""
        return self._vip

    @vip.setter
    def vip(self, vip: Vip) -> None:
        self._vip = vip
        self._by_endpoint = {member.endpoint_id: member for member in vip.members}

    def member_by_endpoint(self, endpoint_id: int) -> Member | None:
        """The member whose endpoint id a cookie carries, if it is still one."""
        return self._by_endpoint.get(endpoint_id)


def _syn_punted(vip: Vip) -> bool:
    """Whether every SYN to the VIP service goes to the controller: it dispatches it, and per connection."""
    return vip.dispatch == "controller" and vip.granularity == "connection"


def _flow_key(table_id: int, priority: int, match: dict[str, Any]) -> tuple[int, int, frozenset[tuple[str, Any]]]:
    """A hashable identity of a flow entry: table, priority and match fields."""
    return table_id, priority, frozenset((name, tuple(value) if isinstance(value, list) else value)
                                         for name, value in match.items())


class LoadBalancer:
    """Pure state machine of the classifier: events in, OpenFlow messages out."""

    def __init__(self, config: Config, hl_key: bytes = b"", now: float = 0.0) -> None:
        self._config = Config()
        self.health = HealthHandler(config, hl_key, now)
        self.relays: list[Datagram] = []
        self.sessions = SessionTable()
        self.dam_ops: list[DamOp] = []
        self.lingering: dict[ConnKey, tuple[Connection, float]] = {}
        self.session_flows: dict[tuple[int, str, str], str] = {}
        self.affinity: Counter[str] = Counter()
        self.origin = f"lbu:{config.controller.lbu_id}"
        self.rebuilt_connections = 0
        self._vips: dict[str, VipState] = {}
        self._services: dict[tuple[str, int], VipState] = {}
        self._by_id: dict[int, VipState] = {}
        self._host_macs: dict[str, str] = {}
        self._hosts_by_ip: dict[str, Any] = {}
        self._dpids: dict[str, int] = {}
        self._forwarding: dict[int, dict[str, int]] = {}
        self._labels: dict[str, int] = {}
        self.connections_by_key: dict[ConnKey, Connection] = {}
        self.dispatch_slots: dict[str, list[int]] = {}
        self.switch_dispatch: Counter[str] = Counter()
        self.reinjected: dict[ConnKey, float] = {}
        self.ct_index: dict[ConnKey, ConnKey] = {}
        self.ct_audit_due: list[tuple[float, ConnKey, float]] = []
        """Heap of (due, connection key, installed_at): conntrack-pinned connections to audit once they are due."""
        self.ct_audited: dict[ConnKey, float] = {}
        """Audited connections, by their NATed key (as table 8 sees them): the installed_at their audit entry is for."""
        self.ct_retired: dict[int, tuple[dispatch.SwitchTarget, float]] = {}
        self.member_connections: Counter[tuple[str, str]] = Counter()
        self.packet_in: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.selections: Counter[tuple[str, str]] = Counter()
        self.migrations = l7.MigrationLog()
        self.router_picker = l7.RouterPicker()
        self.apply_config(config, dpids=(), now=now)

    @property
    def config(self) -> Config:
        """The current model."""
        return self._config

    @property
    def lbu_id(self) -> int:
        """This LBU instance's id, carried in every cookie."""
        return self._config.controller.lbu_id

    def switch_flows(self, dpid: int) -> list[Any]:
        """Everything a (re)connecting switch needs: the base pipeline, VIP entries and fabric paths."""
        controller = self._config.controller
        msgs = builders.base_flows(self.lbu_id, controller.packet_in_max_len)
        for state in self._vips.values():
            msgs += builders.vip_flows(self.lbu_id, state.vip_id, state.vip.address, state.vip.port)
            msgs += self._vip_syn_flows(state, state.vip)
        msgs += builders.forward_flows(self.lbu_id, self._forwarding.get(dpid, {}))
        msgs += self._tunnel_flows(dpid)
        msgs += dispatch.dispatch_base_flows(self.lbu_id, controller.packet_in_max_len)
        msgs += dispatch.ct_base_flows(self.lbu_id)
        msgs += self._ct_shared_flows()
        for state in self._switch_states():
            msgs += dispatch.group_add(state.vip_id, self.dispatch_slots.get(state.vip.name, []))
            msgs += dispatch.switch_vip_flows(self._switch_vip(state.vip, state.vip_id),
                                              self._switch_targets(state.vip))
        return msgs

    def _vip_syn_flows(self, state: VipState, new: Vip | None, old: Vip | None = None) -> list[Any]:
        """The SYN entry of a VIP service the controller dispatches per connection: added when it starts being one,
        deleted when it stops (it is removed, or dispatched by the switch, or pinned per session)."""
        had = old is not None and _syn_punted(old)
        if new is not None and _syn_punted(new) and not had:
            return [builders.vip_syn_flow(self.lbu_id, state.vip_id, new.address, new.port)]
        if old is not None and had and (new is None or not _syn_punted(new)):
            return [builders.vip_syn_delete(old.address, old.port)]
        return []

    def _switch_states(self) -> list[VipState]:
        """The VIP services the switches dispatch themselves."""
        return [state for state in self._vips.values() if state.vip.dispatch == "switch"]

    def _switch_vip(self, vip: Vip, vip_id: int) -> dispatch.SwitchVip:
        """A VIP service as the switch-dispatch flows need it (client_ip affinity also pins whole clients)."""
        prefix = vip.affinity_prefix if vip.affinity == CLIENT_IP else None
        return dispatch.SwitchVip(self.lbu_id, vip_id, vip.address, vip.port, vip.mac, vip.idle_timeout,
                                  vip.hard_timeout, prefix, vip.session_flow_idle, vip.switch_pinning or "learn")

    def _ct_targets(self) -> dict[int, dispatch.SwitchTarget]:
        """The members of every conntrack-pinned VIP service, by endpoint id."""
        return {target.endpoint_id: target for state in self._switch_states()
                if state.vip.switch_pinning == "conntrack" for target in self._switch_targets(state.vip)}

    def _ct_shared_flows(self) -> list[Any]:
        """The per-member conntrack entries, shared by the VIP services; retired members keep theirs for a while."""
        targets = {endpoint: target for endpoint, (target, _since) in self.ct_retired.items()}
        targets.update(self._ct_targets())
        return dispatch.ct_shared_flows(self.lbu_id, list(targets.values()))

    def _retire_ct_targets(self, before: dict[int, dispatch.SwitchTarget], now: float) -> None:
        """Members that left every conntrack pool keep their entries while their tracked connections run on."""
        current = self._ct_targets()
        for endpoint, target in before.items():
            if endpoint not in current:
                self.ct_retired.setdefault(endpoint, (target, now))
        for endpoint in current:
            self.ct_retired.pop(endpoint, None)

    def _expire_ct_targets(self, now: float) -> list[Any]:
        """Deletes of retired members' entries once none of their connections is left (or after CT_RETIRE_MAX)."""
        if not self.ct_retired:
            return []
        before = self._ct_shared_flows()
        live = {(conn.route.member_ip, conn.route.member_port) for conn in self.connections_by_key.values()
                if conn.dispatch == "switch"}
        for endpoint, (target, since) in list(self.ct_retired.items()):
            if (target.member_ip, target.member_port) not in live or now - since > CT_RETIRE_MAX:
                del self.ct_retired[endpoint]
        return self._ct_shared_changes(before)[1]

    def _ct_shared_changes(self, before: list[Any]) -> tuple[list[Any], list[Any]]:
        """(adds, deletes) that take the shared conntrack entries from ``before`` to what the model wants now."""
        def keyed(msgs: list[Any]) -> dict[Any, Any]:
            return {_flow_key(m.table_id, m.priority, dict(m.match.items())): m for m in msgs}

        old, new = keyed(before), keyed(self._ct_shared_flows())
        adds = [msg for key, msg in new.items() if key not in old]
        deletes = [builders.flow_delete_strict(msg.table_id, msg.priority, msg.match)
                   for key, msg in old.items() if key not in new]
        return adds, deletes

    def _switch_targets(self, vip: Vip) -> list[dispatch.SwitchTarget]:
        """The members the switch can rewrite toward (those with a known MAC)."""
        return [dispatch.SwitchTarget(m.endpoint_id, m.address, m.port, self._member_mac(m.address, m.mac))
                for m in vip.members if self._has_mac(m)]

    def _slots(self, vip: Vip, now: float) -> list[int]:
        """The VIP's group buckets: each slot names a member's endpoint id, as many as its allotment share."""
        if self.health.needs_warm_cache(vip) and not self.health.cache.warm(now):
            return []
        shares = self.health.allotment_for(vip, self._has_mac, now).values
        counts = largest_remainder({name: float(value) for name, value in shares.items()}, dispatch.SLOTS)
        ids = {member.name: member.endpoint_id for member in vip.members}
        return [ids[name] for name in sorted(counts) for _ in range(counts[name])]

    def dispatch_updates(self, now: float, dpids: Any) -> dict[int, list[Any]]:
        """Group changes for switch-dispatched VIPs whose allotment moved, and retired conntrack members' deletes."""
        msgs: list[Any] = self._expire_ct_targets(now)
        for state in self._switch_states():
            slots = self._slots(state.vip, now)
            if slots != self.dispatch_slots.get(state.vip.name):
                self.dispatch_slots[state.vip.name] = slots
                self.switch_dispatch["group_updates"] += 1
                msgs.append(dispatch.group_modify(state.vip_id, slots))
        return {dpid: list(msgs) for dpid in dpids} if msgs else {}

    def _schedule_audit(self, key: ConnKey, conn: Connection) -> None:
        """Audit a conntrack-pinned connection once it has lived its VIP's ``idle_timeout``."""
        state = self._services.get((key[2], key[3]))
        if state is not None:
            heapq.heappush(self.ct_audit_due, (conn.installed_at + state.vip.idle_timeout, key, conn.installed_at))

    def conntrack_audits(self, now: float) -> dict[int, list[Any]]:
        """Exact table 8 entries for conntrack-pinned connections that are due (at most ``MAX_AUDITS`` per call).

        The controller hears of a conntrack-pinned connection's end only from the copy of its FIN or RST. A copy the
        switch dropped, or that came while the controller was away, would leave the connection listed (and its member
        never ``drained``). Each connection that lives ``idle_timeout`` gets its own entry with that idle timeout;
        its flow-removed ends the connection here. Short connections end (by their copies) before they are due.
        """
        per_dpid: dict[int, list[Any]] = {}
        count = 0
        while self.ct_audit_due and self.ct_audit_due[0][0] <= now and count < MAX_AUDITS:
            _due, key, installed_at = heapq.heappop(self.ct_audit_due)
            conn = self.connections_by_key.get(key)
            state = self._services.get((key[2], key[3]))
            if conn is None or conn.installed_at != installed_at or state is None:
                continue
            member = state.vip.member(conn.member)
            if member is None or state.vip.dispatch != "switch" or state.vip.switch_pinning != "conntrack":
                continue
            route = conn.route
            target = dispatch.SwitchTarget(member.endpoint_id, route.member_ip, route.member_port, route.member_mac)
            per_dpid.setdefault(conn.dpid, []).append(
                dispatch.ct_audit_flow(self._switch_vip(state.vip, state.vip_id), target, key[0], key[1]))
            self.ct_audited[(key[0], key[1], route.member_ip, route.member_port)] = installed_at
            self.switch_dispatch["conntrack_audits"] += 1
            count += 1
        return per_dpid

    def _ct_audit_removed(self, match: dict[str, Any], idle: bool) -> list[Any]:
        """An audit entry idled out: its connection ended unseen (or has been idle ``idle_timeout``); forget it."""
        try:
            nat_key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
        except KeyError:
            self.dropped["flow_removed_bad_match"] += 1
            return []
        audited_at = self.ct_audited.pop(nat_key, None)
        key = self.ct_index.get(nat_key)
        conn = self.connections_by_key.get(key) if key is not None else None
        if not idle or conn is None or conn.installed_at != audited_at:
            return []
        self._ct_ended(key, "conntrack_audit_ended")
        return []

    def dispatch_shares(self, vip: str) -> dict[str, int]:
        """How many of the group's slots each member holds (switch-dispatched VIPs)."""
        service = self._config.vip(vip)
        slots = self.dispatch_slots.get(vip, [])
        return {m.name: slots.count(m.endpoint_id) for m in service.members} if service else {}

    def reconcile(self, dpid: int, entries: list[tuple[int, int, dict[str, Any], int]],
                  now: float = 0.0) -> list[Any]:
        """Deletes for flows a switch holds that the current model does not want (after a reconnect or restart).

        ``entries`` are the switch's flows as (table_id, priority, match fields, cookie), from flow stats. Our base
        and fabric entries not in ``switch_flows`` go, and so do connection flows of VIP services that no longer
        exist. Flows with cookies of other kinds are left alone. Connection and session flows of live VIP services
        that the tables do not know (after a controller restart) are adopted: the cookie names VIP and member.
        """
        wanted = {_flow_key(msg.table_id, msg.priority, dict(msg.match.items())) for msg in self.switch_flows(dpid)
                  if isinstance(msg, builders.parser.OFPFlowMod)}
        msgs: list[Any] = []
        for table_id, priority, match, cookie in entries:
            kind = Cookie.decode(cookie).kind
            if kind in (CookieKind.BASE, CookieKind.FABRIC):
                stale = _flow_key(table_id, priority, match) not in wanted
            elif kind == CookieKind.TUNNEL:
                stale = self._reconcile_tunnel(dpid, table_id, Cookie.decode(cookie), match, now)
            elif kind in (CookieKind.NAT, CookieKind.SESSION):
                stale = Cookie.decode(cookie).vip_id not in self._by_id
                if not stale and table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS):
                    self._adopt(dpid, Cookie.decode(cookie), match, now, table_id == Table.SWITCH_CONNECTIONS)
            else:
                stale = False
            if stale:
                msgs.append(builders.flow_delete_strict(table_id, priority, builders.match_from_fields(match)))
        return msgs

    def _adopt(self, dpid: int, cookie: Cookie, match: dict[str, Any], now: float, learned: bool = False) -> None:
        """Take a connection or session flow found in a switch into the tables.

        After a restart that rebuilds the tables; for switch-dispatched VIPs (``learned``: the switch made the entry
        itself) it is how the controller hears about their connections and sessions.
        """
        state = self._by_id[cookie.vip_id]
        member = state.member_by_endpoint(cookie.endpoint_id)
        if member is None:
            return
        if cookie.kind == CookieKind.SESSION:
            self._session_flow_adopt(dpid, state, member, match)
            if learned:
                self._learned_session(state, member, match, now)
            return
        try:
            key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
        except KeyError:
            return
        if key in self.connections_by_key:
            return
        conn = Connection(dpid, state.vip.name, member.name, self._route(state, member, key[0], key[1]), now,
                          "switch" if learned else "controller")
        self.connections_by_key[key] = conn
        self.member_connections[(conn.vip, conn.member)] += 1
        self.lingering.pop(key, None)
        self.rebuilt_connections += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))

    def _learned_session(self, state: VipState, member: Member, match: dict[str, Any], now: float) -> None:
        """A client the switch pinned to a member (client_ip affinity): record its session here and in the DAM."""
        value = match.get("ipv4_src")
        vip = state.vip
        if value is None:
            return
        client = client_of_match(value)
        sid = client_ip_sid(vip.name, client.split("/")[0], vip.affinity_prefix)
        session = self.sessions.lookup(CLIENT_IP, vip.name, client, now)
        if session is not None and session.member == member.name:
            return
        session = Session(sid, CLIENT_IP, vip.name, member.name, member.address, member.port, client, "",
                          now + vip.session_ttl, self.origin)
        self.sessions.upsert(session)
        self.affinity["learned"] += 1
        self.dam_ops.append(("put", session.key, session.to_data(), vip.session_ttl))

    def _session_flow_adopt(self, dpid: int, state: VipState, member: Member, match: dict[str, Any]) -> None:
        """Take a per-session flow found in a switch into the session-flow table."""
        value = match.get("ipv4_src")
        if value is not None:
            self.session_flows[(dpid, state.vip.name, client_of_match(value))] = member.name

    def load_atoms(self, atoms: list[Any], now: float) -> None:
        """Rebuild from the DAM at start: live routes become connections, lingering ones re-plumbable, and sessions."""
        for atom in atoms:
            try:
                if atom.key.startswith("sess:"):
                    self.sessions.upsert(Session.from_data(atom.data, atom.expires_at or now + 600.0, atom.origin))
                elif atom.key.startswith("conn:"):
                    self._load_route(atom, now)
            except (KeyError, TypeError, ValueError):
                self.dropped["dam_bad_atom"] += 1

    def _route_atom(self, key: str, data: dict[str, Any], now: float) -> tuple[ConnKey, Connection] | None:
        """The connection a route atom describes, if its VIP service and member still exist."""
        _conn, _tcp, client_ip, client_port, vip_ip, vip_port = key.split(":")
        state = self._services.get((vip_ip, int(vip_port)))
        member = state.vip.member(data.get("member", "")) if state else None
        if state is None or member is None:
            return None
        conn = Connection(int(data.get("dpid", 0)), state.vip.name, member.name,
                          self._route(state, member, client_ip, int(client_port)), now)
        return (client_ip, int(client_port), vip_ip, int(vip_port)), conn

    def _load_route(self, atom: Any, now: float) -> None:
        """One route atom into the connection table (no expiry: live) or the lingering routes."""
        found = self._route_atom(atom.key, atom.data, now)
        if found is None:
            return
        key, conn = found
        if atom.expires_at is None:
            if key not in self.connections_by_key:
                self.connections_by_key[key] = conn
                self.member_connections[(conn.vip, conn.member)] += 1
            if atom.data.get("dispatch") == "switch":
                conn.dispatch = "switch"
                self.ct_index[(key[0], key[1], conn.route.member_ip, conn.route.member_port)] = key
                self._schedule_audit(key, conn)
        else:
            self.lingering[key] = (conn, atom.expires_at)

    def apply_dam_change(self, op: str, key: str, atom: Any | None, now: float) -> None:
        """Another LBU changed an atom: keep the local session table and re-plumbable routes in step."""
        if atom is not None and atom.origin == self.origin:
            return
        if key.startswith("sess:"):
            if op == "put" and atom is not None:
                self.load_atoms([atom], now)
            else:
                self.sessions.remove(key)
        elif key.startswith("conn:") and op == "put" and atom is not None:
            found = self._route_atom(key, atom.data, now)
            if found is not None and found[0] not in self.connections_by_key:
                until = atom.expires_at if atom.expires_at is not None else (
                    now + self._config.controller.dam.route_linger)
                self.lingering[found[0]] = (found[1], until)

    def known_switch(self, dpid: int) -> bool:
        """Whether the static fabric lists this dpid."""
        return dpid in self._forwarding

    def apply_config(self, new: Config, dpids: Any, now: float = 0.0) -> dict[int, list[Any]]:
        """Switch to ``new`` and return, per connected dpid, the flow changes that take the switches there.

        Directive changes of agent members are queued in ``relays`` (datagrams for the shell to send).
        """
        old = self._config
        ct_before = self._ct_shared_flows()
        ct_targets_before = self._ct_targets()
        fabric_changed = new.fabric != old.fabric
        if fabric_changed or not self._host_macs:
            self._host_macs = {host.ip: host.mac for host in new.fabric.hosts}
            self._hosts_by_ip = {host.ip: host for host in new.fabric.hosts}
            self._dpids = {switch.name: switch.dpid for switch in new.fabric.switches}
            self._forwarding = forwarding_tables(new.fabric)
            self._labels = tunnel.host_labels(new.fabric)
        common: list[tuple[str, Any]] = []
        new_names = {vip.name: vip for vip in new.vips}
        for name in list(self._vips):
            state = self._vips[name]
            replacement = new_names.get(name)
            if replacement is None or (replacement.address, replacement.port) != (state.vip.address, state.vip.port):
                common.append(("delete", state))
                self._drop_vip(state)
        self._config = new
        remaining_ips = {vip.address for vip in new.vips}
        for vip in new.vips:
            state = self._vips.get(vip.name)
            if state is None:
                state = VipState(vip, self._free_vip_id())
                self._vips[vip.name] = state
                self._services[(vip.address, vip.port)] = state
                self._by_id[state.vip_id] = state
                common.append(("add", state))
            else:
                common.append(("update", (state, state.vip)))
                state.vip = vip
        self.relays += self.health.set_config(new, self._attachment, now)
        self._retire_ct_targets(ct_targets_before, now)
        ct_adds, ct_deletes = self._ct_shared_changes(ct_before)
        switch_msgs: list[Any] = list(ct_adds)
        for action, item in common:
            if action == "delete":
                switch_msgs += self._switch_dispatch_removal(item)
            elif action == "add":
                switch_msgs += self._switch_dispatch_change(item, None, now)
            else:
                switch_msgs += self._switch_dispatch_change(item[0], item[1], now)
        switch_msgs += ct_deletes
        changes: dict[int, list[Any]] = {}
        for dpid in dpids:
            msgs: list[Any] = []
            syn_entries: list[Any] = []  # after switch_msgs: leaving switch dispatch deletes by the VIP's cookie
            for action, item in common:
                if action == "delete":
                    msgs += builders.vip_flow_deletes(self.lbu_id, item.vip_id, item.vip.address, item.vip.port,
                                                      remaining_ips)
                    syn_entries += self._vip_syn_flows(item, None, item.vip)
                elif action == "add":
                    msgs += builders.vip_flows(self.lbu_id, item.vip_id, item.vip.address, item.vip.port)
                    syn_entries += self._vip_syn_flows(item, item.vip)
                else:
                    syn_entries += self._vip_syn_flows(item[0], item[0].vip, item[1])
            msgs += switch_msgs
            msgs += syn_entries
            msgs += self._tunnel_changes(dpid, old, common, fabric_changed)
            if fabric_changed:
                msgs.append(builders.flow_delete(Table.FORWARD, make_cookie(CookieKind.FABRIC), KIND_MASK))
                msgs += builders.forward_flows(self.lbu_id, self._forwarding.get(dpid, {}))
            changes[dpid] = msgs
        return changes

    def _switch_dispatch_removal(self, state: VipState) -> list[Any]:
        """A removed VIP service: its switch-dispatch entries and group, and every connection the switch learned."""
        self.dispatch_slots.pop(state.vip.name, None)
        msgs = dispatch.learned_flow_deletes(self.lbu_id, state.vip_id)
        if state.vip.dispatch == "switch":
            msgs = dispatch.switch_vip_deletes(self._switch_vip(state.vip, state.vip_id)) + msgs
        return msgs

    def _switch_dispatch_change(self, state: VipState, old: Vip | None, now: float) -> list[Any]:
        """Switch-dispatch changes for an added (``old`` None) or changed VIP service; learned connections stay."""
        new = state.vip
        was_switch = old is not None and old.dispatch == "switch"
        if new.dispatch != "switch":
            self.dispatch_slots.pop(new.name, None)
            return dispatch.switch_vip_deletes(self._switch_vip(old, state.vip_id)) if was_switch else []
        switch_vip, targets = self._switch_vip(new, state.vip_id), self._switch_targets(new)
        slots = self._slots(new, now)
        self.dispatch_slots[new.name] = slots
        if not was_switch or old.switch_pinning != new.switch_pinning:
            removal = dispatch.switch_vip_deletes(self._switch_vip(old, state.vip_id)) if was_switch else []
            return removal + dispatch.group_add(state.vip_id, slots) + dispatch.switch_vip_flows(switch_vip, targets)
        kept = {target.endpoint_id for target in targets}
        gone = [target for target in self._switch_targets(old) if target.endpoint_id not in kept]
        return ([dispatch.group_modify(state.vip_id, slots)]
                + dispatch.switch_vip_flows(switch_vip, targets)
                + dispatch.select_flow_strict_deletes(self._switch_vip(old, state.vip_id), gone))

    def _has_mac(self, member: Member) -> bool:
        """Whether packets can be rewritten toward the member (its MAC is configured or a fabric host's)."""
        return bool(self._member_mac(member.address, member.mac))

    def _attachment(self, member: Member) -> Attachment | None:
        """Where the member is attached (for controller probes), if the fabric lists it."""
        host = self._hosts_by_ip.get(member.address)
        dpid = self._dpids.get(host.switch) if host else None
        if host is None or dpid is None:
            return None
        return Attachment(dpid, host.port, self._member_mac(member.address, member.mac))

    def _member_mac(self, address: str, configured: str) -> str:
        """The MAC to rewrite toward a member: configured, or the fabric host's."""
        return configured or self._host_macs.get(address, "")

    def _free_vip_id(self) -> int:
        """The lowest VIP service id not in use (ids appear in cookies)."""
        for vip_id in range(1, MAX_VIP_ID + 1):
            if vip_id not in self._by_id:
                return vip_id
        raise RuntimeError("no free VIP service id")

    def _drop_vip(self, state: VipState) -> None:
        """Forget a VIP service and its connections (their flows are deleted by cookie)."""
        del self._vips[state.vip.name]
        del self._services[(state.vip.address, state.vip.port)]
        del self._by_id[state.vip_id]
        for key in [k for k, conn in self.connections_by_key.items() if conn.vip == state.vip.name]:
            self._forget(key)

    def _forget(self, key: ConnKey) -> Connection | None:
        """Remove a connection from the table and the per-member counts."""
        conn = self.connections_by_key.pop(key, None)
        if conn is not None:
            pair = (conn.vip, conn.member)
            self.member_connections[pair] -= 1
            if self.member_connections[pair] <= 0:
                del self.member_connections[pair]
        return conn

    def handle_packet_in(self, dpid: int, in_port: int, data: bytes, total_len: int, table_id: int,
                         now: float, cookie: int = 0) -> list[Any]:
        """Classify one punted frame; return the messages to send to that datapath (flows first).

        ``cookie`` is the cookie of the entry that sent it (it names VIP and member in conntrack copies).
        """
        self.packet_in["total"] += 1
        try:
            frame = parse_frame(data, total_len)
        except FrameError as exc:
            self.dropped[exc.reason] += 1
            return []
        if isinstance(frame, ArpRequest):
            return self._answer_arp(frame, in_port)
        if table_id == Table.CLASSIFY:
            return self._probe_reply(frame)
        if table_id in (Table.SWITCH_SELECT, Table.CT_FORWARD, Table.CT_REVERSE):
            self._ct_copy(dpid, table_id, frame, Cookie.decode(cookie), now)
            return []
        if table_id not in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS):
            self.dropped["unexpected_table"] += 1
            return []
        if table_id == Table.SWITCH_CONNECTIONS and self._switch_dispatched(frame):
            return self._switch_punt(frame, in_port, data, total_len, now)
        return self._classify(dpid, in_port, frame, data, total_len, now)

    def _ct_copy(self, dpid: int, table_id: int, segment: TcpSegment, cookie: Cookie, now: float) -> None:
        """A copy of a conntrack-pinned connection's SYN (it started) or of its FIN or RST (it ends).

        The switch already forwarded the original: this only keeps the connection table, drain and the DAM right.
        """
        self.packet_in["conntrack_copy"] += 1
        if table_id == Table.SWITCH_SELECT:
            self._ct_started(dpid, segment, cookie, now)
            return
        if table_id == Table.CT_FORWARD:
            key = self.ct_index.pop((segment.src_ip, segment.src_port, segment.dst_ip, segment.dst_port), None)
        else:
            key = (segment.dst_ip, segment.dst_port, segment.src_ip, segment.src_port)
        if key is not None:
            self._ct_ended(key, "conntrack_ended")

    def _ct_ended(self, key: ConnKey, counter: str) -> None:
        """A conntrack-pinned connection ended (a copy said so, or its audit entry idled out): forget it everywhere."""
        conn = self._forget(key)
        if conn is None:
            return
        self.ct_index.pop((key[0], key[1], conn.route.member_ip, conn.route.member_port), None)
        self.switch_dispatch[counter] += 1
        self.dam_ops.append(("delete", route_key(key)))

    def _ct_started(self, dpid: int, segment: TcpSegment, cookie: Cookie, now: float) -> None:
        """The switch committed a new connection to the member its cookie names: track it (asynchronously)."""
        state = self._by_id.get(cookie.vip_id)
        member = state.member_by_endpoint(cookie.endpoint_id) if state else None
        key = (segment.src_ip, segment.src_port, segment.dst_ip, segment.dst_port)
        if state is None or member is None or key in self.connections_by_key:
            return
        if len(self.connections_by_key) >= self._config.controller.max_connections:
            self.switch_dispatch["untracked_over_cap"] += 1  # the switch carries it; the table stays bounded
            return
        conn = Connection(dpid, state.vip.name, member.name, self._route(state, member, key[0], key[1]), now,
                          "switch")
        self.connections_by_key[key] = conn
        self.member_connections[(conn.vip, conn.member)] += 1
        self.ct_index[(key[0], key[1], member.address, member.port)] = key
        self._schedule_audit(key, conn)
        self.selections[(conn.vip, conn.member)] += 1
        self.switch_dispatch["conntrack_started"] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))

    def _switch_dispatched(self, segment: TcpSegment) -> bool:
        """Whether the segment is for a VIP service the switches dispatch themselves."""
        state = self._services.get((segment.dst_ip, segment.dst_port))
        return state is not None and state.vip.dispatch == "switch"

    def _switch_punt(self, segment: TcpSegment, in_port: int, data: bytes, total_len: int, now: float) -> list[Any]:
        """A segment of a switch-dispatched VIP that met no learned entry: released once more, dropped after that.

        Open vSwitch makes the entries a SYN learned visible a little after the SYN has gone on, so a fast client's
        next segment can miss them; going round once through the controller is enough for it to find them. A
        segment that misses twice within ``REINJECT_WINDOW`` belongs to no connection the switch knows (its entries
        idled out): it is dropped, and nothing is re-plumbed from memory, because a new connection may reuse the
        port and the switch, not the controller, chose its member.
        """
        key = (segment.src_ip, segment.src_port, segment.dst_ip, segment.dst_port)
        first = self.reinjected.get(key)
        if (first is None or now - first > REINJECT_WINDOW) and len(data) >= total_len and not segment.is_pure_syn:
            if len(self.reinjected) >= MAX_REINJECTED:
                self.reinjected.clear()
            self.reinjected[key] = now
            self.switch_dispatch["reinjected"] += 1
            return [builders.packet_out_table(in_port, data)]
        self.switch_dispatch["orphan"] += 1
        return []

    def _probe_reply(self, segment: TcpSegment) -> list[Any]:
        """A member's answer to a controller health probe: record it and reset the half-open connection."""
        sends = self.health.handle_probe_reply(segment, self._has_mac)
        if sends is None:
            self.dropped["probe_reply_unmatched"] += 1
            return []
        self.packet_in["probe_reply"] += 1
        return [builders.packet_out_port(send.port, send.frame) for send in sends]

    def handle_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> list[Datagram]:
        """An H&L message from an agent: the replies to send back (application sessions are recorded here)."""
        replies, session_message = self.health.handle_datagram(data, addr, now, self._has_mac)
        if session_message is not None:
            self._app_session(session_message.type, session_message.body, now)
        return replies

    def _app_session(self, kind: str, body: dict[str, Any], now: float) -> None:
        """Record a host's ``session_up`` or forget its ``session_down`` (idempotent; refreshed by the agent)."""
        state = self._services.get((body.get("vip"), body.get("vport")))
        key = f"sess:{body.get('stype', APP)}:{body.get('sid')}"
        if kind == "session_down":
            self.affinity["app_down"] += 1
            self._drop_session(key)
            return
        member = next((m for m in state.vip.members if (m.address, m.port) == (body.get("pip"), body.get("pport"))),
                      None) if state else None
        if state is None or member is None:
            self.affinity["app_unknown_endpoint"] += 1
            return
        ttl = float(body.get("ttl_s", state.vip.session_ttl))
        session = Session(str(body["sid"]), str(body.get("stype", APP)), state.vip.name, member.name, member.address,
                          member.port, str(body["client"]), str(body.get("host_id", "")), now + ttl, self.origin)
        self.sessions.upsert(session)
        self.affinity["app_up"] += 1
        self.dam_ops.append(("put", session.key, session.to_data(), ttl))

    def tick(self, now: float) -> tuple[list[Datagram], dict[int, list[Any]]]:
        """Periodic H&L work: datagrams for agents, and probe packet-outs per dpid."""
        datagrams, sends = self.health.tick(now, self._live, self._has_mac)
        datagrams, self.relays = self.relays + datagrams, []
        per_dpid: dict[int, list[Any]] = {}
        for send in sends:
            per_dpid.setdefault(send.dpid, []).append(builders.packet_out_port(send.port, send.frame))
        return datagrams, per_dpid

    def _live(self, vip: str, member: str) -> int:
        """Live connections and per-session flows of one member of one VIP."""
        sessions = sum(1 for (_dpid, name, _client), owner in self.session_flows.items()
                       if name == vip and owner == member)
        return self.member_connections.get((vip, member), 0) + sessions

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """Target and current state of a member: ``draining`` becomes ``drained`` when its last connection is gone."""
        service = self._config.vip(vip)
        found = service.member(member) if service else None
        if service is None or found is None:
            raise KeyError(f"{vip}/{member}")
        return self.health.member_state(service, found, self._live(vip, found.name))

    def allotment(self, vip: str, now: float) -> dict[str, Any]:
        """The VIP's allotment in use, with every candidate's eligibility."""
        service = self._config.vip(vip)
        if service is None:
            raise KeyError(vip)
        return self.health.allotment_view(service, self._has_mac, now)

    def _answer_arp(self, request: ArpRequest, in_port: int) -> list[Any]:
        """Answer ARP for VIPs and fabric hosts; nothing is ever flooded."""
        mac = next((s.vip.mac for s in self._vips.values() if s.vip.address == request.target_ip), None)
        mac = mac or self._host_macs.get(request.target_ip)
        if mac is None:
            self.dropped["arp_unknown_target"] += 1
            return []
        self.packet_in["arp"] += 1
        frame = builders.arp_reply_frame(mac, request.target_ip, request.sender_mac, request.sender_ip)
        return [builders.packet_out_port(in_port, frame)]

    def _classify(self, dpid: int, in_port: int, seg: TcpSegment, data: bytes, total_len: int,
                  now: float) -> list[Any]:
        """Pick a member for a new connection (or reuse the known one) and plumb both directions."""
        state = self._services.get((seg.dst_ip, seg.dst_port))
        if state is None:
            self.dropped["not_vip_service"] += 1
            return []
        key = (seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port)
        conn = self.connections_by_key.get(key)
        if conn is not None and seg.is_pure_syn and self._reused_ports(state.vip, conn, seg):
            self.packet_in["port_reuse"] += 1
            self._forget(key)
            conn = None
        if conn is not None:
            self.packet_in["syn_retransmit" if seg.is_pure_syn else "existing_connection"] += 1
            conn.dpid = dpid
            return self._plumb(conn.route, in_port, data, total_len, seg.is_pure_syn)
        if not seg.is_pure_syn:
            return self._replumb(dpid, key, in_port, data, total_len, now)
        if len(self.connections_by_key) >= self._config.controller.max_connections:
            self.refused["cap"] += 1
            return []
        vip = state.vip
        if vip.mode == "l7":
            return self._classify_l7(dpid, in_port, state, seg, data, total_len, now)
        member = self._session_member(vip, seg.src_ip, now)
        if member is None:
            member_name = self.health.pick(vip, self._has_mac, now)
            member = vip.member(member_name) if member_name else None
            if member is None:
                return []
            if vip.affinity == CLIENT_IP:
                self._remember_client(vip, member, seg.src_ip, now)
        if vip.granularity == "session":
            return self._plumb_session(dpid, state, member, seg.src_ip, in_port, data, total_len)
        route = self._route(state, member, seg.src_ip, seg.src_port)
        self.selections[(vip.name, member.name)] += 1
        self.packet_in["new_connection"] += 1
        msgs = self._plumb(route, in_port, data, total_len, syn=True)
        conn = Connection(dpid, vip.name, member.name, route, now, syn_tag=seg.seq & SYN_TAG_MASK)
        self.connections_by_key[key] = conn
        self.member_connections[(vip.name, member.name)] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))
        return msgs

    @staticmethod
    def _reused_ports(vip: Vip, conn: Connection, seg: TcpSegment) -> bool:
        """Whether a SYN for a known connection opens a new one from the same client port (rather than repeating
        the first SYN): its sequence number differs, or (l7) the known one has already moved to a host, which only
        happens after its handshake."""
        if vip.mode == "l7" and conn.member not in vip.routers:
            return True
        return conn.syn_tag is not None and conn.syn_tag != seg.seq & SYN_TAG_MASK

    def _route(self, state: VipState, member: Member, client_ip: str, client_port: int,
               kind: CookieKind = CookieKind.NAT) -> builders.NatRoute:
        """The rewrite toward ``member`` for one client connection (or, with kind SESSION, a client's session)."""
        if kind == CookieKind.NAT and state.vip.mode in ("tunnel", "l7"):
            return self._tunnel_route(state, member, client_ip, client_port)
        vip = state.vip
        session = kind == CookieKind.SESSION
        return builders.NatRoute(
            client_ip=client_ip, client_port=client_port, vip_ip=vip.address, vip_port=vip.port, vip_mac=vip.mac,
            member_ip=member.address, member_port=member.port, member_mac=self._member_mac(member.address, member.mac),
            cookie=make_cookie(kind, self.lbu_id, state.vip_id, member.endpoint_id),
            idle_timeout=vip.session_flow_idle if session else vip.idle_timeout, hard_timeout=vip.hard_timeout)

    def _tunnel_route(self, state: VipState, member: Member, client_ip: str, client_port: int) -> tunnel.TunnelRoute:
        """The label toward the host of ``member`` for one client connection of a tunnel-mode VIP service."""
        vip = state.vip
        host_mac = self._hosts_by_ip[member.address].mac
        return tunnel.TunnelRoute(
            client_ip=client_ip, client_port=client_port, vip_ip=vip.address, vip_port=vip.port, vip_mac=vip.mac,
            member_ip=member.address, member_port=member.port, member_mac=host_mac,
            cookie=make_cookie(CookieKind.TUNNEL, self.lbu_id, state.vip_id, member.endpoint_id),
            idle_timeout=vip.idle_timeout, hard_timeout=vip.hard_timeout, label=self._labels[host_mac])

    def _tunnel_flows(self, dpid: int) -> list[Any]:
        """A switch's tunnel skeleton and label entries, while any VIP service is in tunnel mode."""
        if not tunnel.uses_tunnels(self._config):
            return []
        hops = tunnel.label_hops(self._config.fabric, dpid, self._forwarding.get(dpid, {}), self._labels)
        return tunnel.tunnel_base_flows(self.lbu_id) + tunnel.label_flows(self.lbu_id, hops)

    def _tunnel_changes(self, dpid: int, old: Config, common: list[tuple[str, Any]], fabric_changed: bool) -> list[Any]:
        """Tunnel flow changes for one switch after a config change.

        Removed VIP services, and those that leave tunnel mode, lose their tunnel connections (nat cannot take over a
        connection whose host answers from the VIP); the label entries come with the first tunnel-mode VIP service,
        follow fabric changes and go with the last one.
        """
        left = [self._vips[vip.name] for vip in old.vips if vip.mode == "tunnel" and vip.name in self._vips
                and self._vips[vip.name].vip.mode != "tunnel"]
        gone = [state for action, state in common if action == "delete"] + left
        msgs = [msg for state in gone for msg in tunnel.tunnel_vip_deletes(self.lbu_id, state.vip_id)]
        had, has = tunnel.uses_tunnels(old), tunnel.uses_tunnels(self._config)
        if had and not has:
            msgs += tunnel.label_deletes() + tunnel.tunnel_base_deletes()
        elif has and (fabric_changed or not had):
            msgs += tunnel.label_deletes() + self._tunnel_flows(dpid)
        return msgs

    def _reconcile_tunnel(self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any], now: float) -> bool:
        """Whether a tunnel connection entry found in a switch is stale (its VIP is gone or left tunnel mode).

        Live ones are adopted.
        """
        state = self._by_id.get(cookie.vip_id)
        if state is None or state.vip.mode != "tunnel":
            return True
        if table_id == Table.CONNECTIONS:
            self._adopt(dpid, cookie, match, now)
        return False

    def _tunnel_flow_removed(self, dpid: int, table_id: int, match: dict[str, Any], idle: bool,
                             now: float) -> list[Any]:
        """A tunnel connection's only entry is gone: forget the connection (its route lingers after an idle end)."""
        if table_id != Table.CONNECTIONS:
            return []
        try:
            key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
        except KeyError:
            self.dropped["flow_removed_bad_match"] += 1
            return []
        conn = self.connections_by_key.get(key)
        if conn is None or conn.dpid != dpid:
            return []
        self._forget(key)
        self._route_ended(key, conn, idle, now)
        return []

    def _session_member(self, vip: Vip, client_ip: str, now: float) -> Member | None:
        """The member a live session pins this client to, if the member may still take it (else the session goes)."""
        if vip.affinity == "none":
            return None
        client = client_prefix(client_ip, vip.affinity_prefix) if vip.affinity == CLIENT_IP else client_ip
        session = self.sessions.lookup(vip.affinity, vip.name, client, now)
        if session is None:
            self.affinity["miss"] += 1
            return None
        member = vip.member(session.member)
        if member is None or not self.health.session_eligible(vip, member, self._has_mac):
            self.affinity["dropped_ineligible"] += 1
            self._drop_session(session.key)
            return None
        self.affinity["hit"] += 1
        if vip.affinity == CLIENT_IP:
            session.expires_at = now + vip.session_ttl
            self.dam_ops.append(("touch", session.key, vip.session_ttl))
        return member

    def _remember_client(self, vip: Vip, member: Member, client_ip: str, now: float) -> None:
        """Create the inferred ``client_ip`` session of a client's first connection."""
        client = client_prefix(client_ip, vip.affinity_prefix)
        session = Session(client_ip_sid(vip.name, client_ip, vip.affinity_prefix), CLIENT_IP, vip.name, member.name,
                          member.address, member.port, client, "", now + vip.session_ttl, self.origin)
        self.sessions.upsert(session)
        self.affinity["created"] += 1
        self.dam_ops.append(("put", session.key, session.to_data(), vip.session_ttl))

    def delete_session(self, key: str) -> bool:
        """Forget a session on request (REST); False if there is none."""
        if key not in self.sessions.sessions:
            return False
        self._drop_session(key)
        return True

    def _drop_session(self, key: str) -> None:
        """Forget a session here and in the DAM."""
        if self.sessions.remove(key) is not None:
            self.dam_ops.append(("delete", key))

    def _plumb_session(self, dpid: int, state: VipState, member: Member, client_ip: str, in_port: int, data: bytes,
                       total_len: int) -> list[Any]:
        """One flow pair for all of a client's connections to the VIP, then the SYN released through it."""
        vip = state.vip
        client = client_prefix(client_ip, vip.affinity_prefix)
        route = self._route(state, member, client_ip, 0, CookieKind.SESSION)
        flow_key = (dpid, vip.name, client)
        if flow_key in self.session_flows:
            self.packet_in["session_flow_pending"] += 1
        else:
            self.packet_in["new_session"] += 1
            self.selections[(vip.name, member.name)] += 1
        self.session_flows[flow_key] = member.name
        msgs = builders.session_flows(client, route)
        if len(data) >= total_len:
            msgs.append(builders.packet_out_table(in_port, data))
        return msgs

    def _replumb(self, dpid: int, key: ConnKey, in_port: int, data: bytes, total_len: int, now: float) -> list[Any]:
        """A later segment of a connection whose entry is gone: re-plumb its remembered route, or drop an orphan."""
        remembered = self.lingering.pop(key, None)
        if remembered is None or remembered[1] <= now:
            self.dropped["orphan"] += 1
            return []
        conn = remembered[0]
        conn.dpid = dpid
        self.connections_by_key[key] = conn
        self.member_connections[(conn.vip, conn.member)] += 1
        self.packet_in["replumb"] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))
        return self._plumb(conn.route, in_port, data, total_len)

    def _plumb(self, route: builders.NatRoute, in_port: int, data: bytes, total_len: int,
               syn: bool = False) -> list[Any]:
        """Flows for both directions, then the punted packet released through them when it arrived whole.

        Nat flow-mods and the packet-out are prepared messages (``templates``): packed from bytes, not serialised.
        A SYN is released with its entry's own actions: through table 0 it would meet the VIP's SYN entry again.
        """
        if isinstance(route, tunnel.TunnelRoute):
            msgs = tunnel.tunnel_connection_flows(route)
            release = (tunnel.tunnel_packet_out(route, in_port, data) if syn
                       else templates.packet_out_table(in_port, data))
        else:
            msgs = templates.nat_connection_flows(route)
            release = (templates.nat_packet_out(route, in_port, data) if syn
                       else templates.packet_out_table(in_port, data))
        if len(data) >= total_len:
            msgs.append(release)
        else:
            self.packet_in["held_truncated"] += 1
        return msgs

    def handle_flow_removed(self, dpid: int, table_id: int, cookie: int, match: dict[str, Any],
                            idle: bool = True, now: float = 0.0) -> list[Any]:
        """Keep the connection table exact: forget the connection and remove its other direction.

        A connection whose flows idled out is remembered for the route linger time (locally and in its route atom),
        so a late segment re-plumbs it to the same member; one deleted on purpose is forgotten. A connection the
        switch learned (``dispatch: switch``) is forgotten either way: the switch, not the controller, picks the
        member of a new connection that reuses its ports.
        """
        decoded = Cookie.decode(cookie)
        if decoded.kind == CookieKind.SESSION:
            return self._session_flow_removed(dpid, table_id, decoded, match)
        if decoded.kind == CookieKind.TUNNEL:
            return self._tunnel_flow_removed(dpid, table_id, match, idle, now)
        if decoded.kind != CookieKind.NAT:
            return []
        if table_id == Table.CT_FORWARD:
            return self._ct_audit_removed(match, idle)
        learned = table_id in (Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE)
        try:
            if table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS):
                key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
            elif table_id in (Table.REVERSE, Table.SWITCH_REVERSE):
                state = self._by_id.get(decoded.vip_id)
                if state is None:
                    return []
                key = (match["ipv4_dst"], match["tcp_dst"], state.vip.address, state.vip.port)
            else:
                return []
        except KeyError:
            self.dropped["flow_removed_bad_match"] += 1
            return []
        conn = self.connections_by_key.get(key)
        if conn is not None and conn.dpid == dpid:
            self._forget(key)
            if learned:
                self.dam_ops.append(("delete", route_key(key)))
        elif learned and idle:
            conn = self._learned_connection(dpid, decoded, key, now)
            if conn is None:
                return []
        else:
            return []
        if learned:
            self.switch_dispatch["connections_ended"] += 1
            return builders.nat_connection_deletes(conn.route, learned)
        self._route_ended(key, conn, idle, now)
        return builders.nat_connection_deletes(conn.route, learned)

    def _route_ended(self, key: ConnKey, conn: Connection, idle: bool, now: float) -> None:
        """Flows gone: after an idle end the route lingers (a late segment re-plumbs it); otherwise it is forgotten."""
        if idle:
            linger = self._config.controller.dam.route_linger
            self.lingering[key] = (conn, now + linger)
            self.dam_ops.append(("touch", route_key(key), linger))
        else:
            self.dam_ops.append(("delete", route_key(key)))

    def _learned_connection(self, dpid: int, cookie: Cookie, key: ConnKey, now: float) -> Connection | None:
        """A connection the switch dispatched and the controller had not heard of yet (its entry idled out first)."""
        state = self._by_id.get(cookie.vip_id)
        member = state.member_by_endpoint(cookie.endpoint_id) if state else None
        if state is None or member is None:
            return None
        return Connection(dpid, state.vip.name, member.name, self._route(state, member, key[0], key[1]), now,
                          "switch")

    def _session_flow_removed(self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any]) -> list[Any]:
        """A per-session flow expired: forget it (the session itself lives on until its TTL)."""
        state = self._by_id.get(cookie.vip_id)
        field = "ipv4_src" if table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS) else "ipv4_dst"
        value = match.get(field)
        if state is None or value is None:
            return []
        self.session_flows.pop((dpid, state.vip.name, client_of_match(value)), None)
        return []

    def expire(self, now: float) -> None:
        """Drop lingering routes and sessions whose time is up."""
        for key in [k for k, (_conn, until) in self.lingering.items() if until <= now]:
            del self.lingering[key]
        for key in [k for k, first in self.reinjected.items() if now - first > REINJECT_WINDOW]:
            del self.reinjected[key]
        for key in [k for k, conn_key in self.ct_index.items() if conn_key not in self.connections_by_key]:
            del self.ct_index[key]
        for key in [k for k in self.ct_audited if k not in self.ct_index]:
            del self.ct_audited[key]
        self.sessions.expire(now)

    def _classify_l7(self, dpid: int, in_port: int, state: VipState, seg: TcpSegment, data: bytes, total_len: int,
                     now: float) -> list[Any]:
        """A new connection to an l7 VIP service: tunnel it to a request router (FIG. 33, 3302)."""
        vip = state.vip
        switch = next((name for name, value in self._dpids.items() if value == dpid), None)
        statuses = {host_id: entry.status for host_id, entry in self.health.cache.hosts.items()}
        routers = l7.live_routers(l7.vip_routers(vip, self._config.fabric), statuses)
        router = self.router_picker.pick(vip.name, routers, switch)
        if router is None:
            self.refused["no_router"] += 1
            return []
        target = l7.router_member(vip, router)
        route = self._tunnel_route(state, target, seg.src_ip, seg.src_port)
        self.selections[(vip.name, target.name)] += 1
        self.packet_in["new_connection"] += 1
        msgs = self._plumb(route, in_port, data, total_len, syn=True)
        key = (seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port)
        conn = Connection(dpid, vip.name, target.name, route, now, syn_tag=seg.seq & SYN_TAG_MASK)
        self.connections_by_key[key] = conn
        self.member_connections[(vip.name, target.name)] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))
        return msgs

    def move_connection(self, vip_name: str, client_ip: str, client_port: int, target: str) -> tuple[int, list[Any]]:
        """Re-plumb an l7 connection to ``target`` (a member, or one of the VIP's routers): its dpid and flow-mods.

        The connection's table-1 entry is replaced (OFPFC_ADD with the same match and priority) by one that carries
        the label of the target's host; the connection table, the per-member counts and the route atom follow.
        Raises LookupError naming what is unknown, ValueError when the VIP is not in mode l7.
        """
        state = self._vips.get(vip_name)
        if state is None:
            raise LookupError(f"vip {vip_name!r} does not exist")
        vip = state.vip
        if vip.mode != "l7":
            raise ValueError(f"vip {vip_name!r} is in mode {vip.mode}, not l7")
        key = (client_ip, client_port, vip.address, vip.port)
        conn = self.connections_by_key.get(key)
        if conn is None:
            raise LookupError(f"no connection from {client_ip}:{client_port} to vip {vip_name!r}")
        routers = [l7.router_member(vip, r) for r in l7.vip_routers(vip, self._config.fabric)]
        member = vip.member(target) or next((r for r in routers if target in (r.name, r.address)), None)
        if member is None:
            raise LookupError(f"vip {vip_name!r} has no member or router {target!r}")
        route = self._tunnel_route(state, member, client_ip, client_port)
        self._forget(key)
        conn.member, conn.route = member.name, route
        self.connections_by_key[key] = conn
        self.member_connections[(vip.name, member.name)] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))
        return conn.dpid, tunnel.connection_flows(route)

    def commit_migration(self, migration_id: str, vip: str, client_ip: str, client_port: int, member: str,
                         now: float) -> tuple[int, list[Any], l7.Migration]:
        """The migration commit (SPEC §2.6): move the connection from its router to ``member`` and record it."""
        key = self._l7_key(vip, client_ip, client_port)
        conn = self.connections_by_key.get(key)
        router = conn.member if conn is not None else ""
        dpid, msgs = self.move_connection(vip, client_ip, client_port, member)
        migration = self.migrations.committed(migration_id, f"{client_ip}:{client_port}", vip, router,
                                              self.connections_by_key[key].member, now)
        return dpid, msgs, migration

    def report_migration(self, migration_id: str, vip: str, client_ip: str, client_port: int, router: str,
                         member: str, outcome: str, reason: str, duration_ms: float | None,
                         now: float) -> tuple[int | None, list[Any], l7.Migration]:
        """A router's report of how a migration ended; a committed one that did not migrate goes back to its router."""
        migration, was_committed = self.migrations.reported(migration_id, f"{client_ip}:{client_port}", vip, router,
                                                            member, outcome, reason, duration_ms, now)
        if not was_committed or outcome == "migrated" or not migration.router:
            return None, [], migration
        try:
            dpid, msgs = self.move_connection(vip, client_ip, client_port, migration.router)
        except LookupError:
            return None, [], migration
        self.migrations.counters["returned_to_router"] += 1
        return dpid, msgs, migration

    def _l7_key(self, vip: str, client_ip: str, client_port: int) -> ConnKey:
        """The connection key of a client's connection to the VIP service called ``vip`` (LookupError if unknown)."""
        state = self._vips.get(vip)
        if state is None:
            raise LookupError(f"vip {vip!r} does not exist")
        return client_ip, client_port, state.vip.address, state.vip.port

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """Tracked connections, optionally only those of one VIP and/or member."""
        return [conn.as_dict(key) for key, conn in self.connections_by_key.items()
                if (vip is None or conn.vip == vip) and (member is None or conn.member == member)]

    def stats(self) -> dict[str, Any]:
        """Counters of the core: packet-ins by outcome, drops by reason, refusals, connections and selections."""
        per_member: dict[str, dict[str, int]] = {}
        for (vip, member), count in sorted(self.member_connections.items()):
            per_member.setdefault(vip, {})[member] = count
        selections: dict[str, dict[str, int]] = {}
        for (vip, member), count in sorted(self.selections.items()):
            selections.setdefault(vip, {})[member] = count
        return {
            "packet_in": dict(self.packet_in),
            "dropped": dict(self.dropped),
            "refused": dict(self.refused + self.health.refused),
            "connections": {"total": len(self.connections_by_key), "per_member": per_member,
                            "cap": self._config.controller.max_connections},
            "selections": selections,
            "health": self.health.stats(),
            "sessions": {"total": len(self.sessions), "session_flows": len(self.session_flows),
                         "affinity": dict(self.affinity)},
            "lingering_routes": len(self.lingering),
            "switch_dispatch": {"counters": dict(self.switch_dispatch),
                                "slots": {name: self.dispatch_shares(name) for name in self.dispatch_slots}},
            "rebuilt_connections": self.rebuilt_connections,
            "migrations": dict(self.migrations.counters),
        }
