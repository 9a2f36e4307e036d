"""The load balancer core of one LBU instance: classification, connection table, config diff and counters.

It never touches a socket or a datapath. The app shell feeds it switch, packet-in and flow-removed events and sends
the OpenFlow messages it returns; REST reads it and changes its config through ``apply_config``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Config, Member, Vip
from nlb_sdn.core.fabric import forwarding_tables
from nlb_sdn.core.frames import ArpRequest, FrameError, TcpSegment, parse_frame
from nlb_sdn.affinity.sessions import (APP, CLIENT_IP, Session, SessionTable, client_ip_sid, client_of_match,
                                      client_prefix)
from nlb_sdn.flows import builders
from nlb_sdn.health.handler import Attachment, Datagram, HealthHandler
from nlb_sdn.flows.pipeline import KIND_MASK, MAX_VIP_ID, Cookie, CookieKind, Table, make_cookie

ConnKey = tuple[str, int, str, int]
DamOp = tuple[Any, ...]
"""A write for the shell's DAM writer: ("put", key, data, ttl), ("touch", key, ttl) or ("delete", key)."""


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

    def atom_data(self) -> dict[str, Any]:
        """The route atom's data: enough for any LBU to re-plumb the connection to the same endpoint."""
        route = self.route
        return {"vip": self.vip, "member": self.member, "pip": route.member_ip, "pport": route.member_port,
                "mac": route.member_mac, "mode": "nat", "flow_id": 0, "dpid": self.dpid}

    def as_dict(self, key: ConnKey) -> dict[str, Any]:
        """A JSON-friendly view for REST."""
        client_ip, client_port, vip_ip, vip_port = key
        return {
            "client": f"{client_ip}:{client_port}", "vip": self.vip, "vip_address": f"{vip_ip}:{vip_port}",
            "member": self.member, "member_address": f"{self.route.member_ip}:{self.route.member_port}",
            "dpid": self.dpid, "mode": "nat", "cookie": f"0x{self.route.cookie:016x}",
            "installed_at": self.installed_at,
        }


class VipState:
    """Runtime state of one VIP service: its id in cookies and its model."""

    __slots__ = ("vip", "vip_id")

    def __init__(self, vip: Vip, vip_id: int) -> None:
        self.vip = vip
        self.vip_id = vip_id


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
        self.connections_by_key: dict[ConnKey, Connection] = {}
        self.member_connections: Counter[tuple[str, str]] = Counter()
        self.packet_in: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.selections: Counter[tuple[str, str]] = Counter()
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
        msgs += builders.forward_flows(self.lbu_id, self._forwarding.get(dpid, {}))
        return msgs

    def reconcile(self, dpid: int, entries: list[tuple[int, int, dict[str, Any], int]],
                  now: float = 0.0) -> list[Any]:
        """Deletes for flows a switch holds that the current model does not want (after a reconnect or restart).

        ``entries`` are the switch's flows as (table_id, priority, match fields, cookie), from flow stats. Our base
        and fabric entries not in ``switch_flows`` go, and so do connection flows of VIP services that no longer
        exist. Flows with cookies of other kinds are left alone. Connection and session flows of live VIP services
        that the tables do not know (after a controller restart) are adopted: the cookie names VIP and member.
        """
        wanted = {_flow_key(msg.table_id, msg.priority, dict(msg.match.items())) for msg in self.switch_flows(dpid)}
        msgs: list[Any] = []
        for table_id, priority, match, cookie in entries:
            kind = Cookie.decode(cookie).kind
            if kind in (CookieKind.BASE, CookieKind.FABRIC):
                stale = _flow_key(table_id, priority, match) not in wanted
            elif kind in (CookieKind.NAT, CookieKind.SESSION):
                stale = Cookie.decode(cookie).vip_id not in self._by_id
                if not stale and table_id == Table.CONNECTIONS:
                    self._adopt(dpid, Cookie.decode(cookie), match, now)
            else:
                stale = False
            if stale:
                msgs.append(builders.flow_delete_strict(table_id, priority, builders.match_from_fields(match)))
        return msgs

    def _adopt(self, dpid: int, cookie: Cookie, match: dict[str, Any], now: float) -> None:
        """Take a connection or session flow found in a switch into the tables (rebuild after a restart)."""
        state = self._by_id[cookie.vip_id]
        member = next((m for m in state.vip.members if m.endpoint_id == cookie.endpoint_id), None)
        if member is None:
            return
        if cookie.kind == CookieKind.SESSION:
            self._session_flow_adopt(dpid, state, member, match)
            return
        try:
            key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
        except KeyError:
            return
        if key in self.connections_by_key:
            return
        conn = Connection(dpid, state.vip.name, member.name, self._route(state, member, key[0], key[1]), now)
        self.connections_by_key[key] = conn
        self.member_connections[(conn.vip, conn.member)] += 1
        self.lingering.pop(key, None)
        self.rebuilt_connections += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))

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
        fabric_changed = new.fabric != old.fabric
        if fabric_changed or not self._host_macs:
            self._host_macs = {host.ip: host.mac for host in new.fabric.hosts}
            self._hosts_by_ip = {host.ip: host for host in new.fabric.hosts}
            self._dpids = {switch.name: switch.dpid for switch in new.fabric.switches}
            self._forwarding = forwarding_tables(new.fabric)
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
                state.vip = vip
        self.relays += self.health.set_config(new, self._attachment, now)
        changes: dict[int, list[Any]] = {}
        for dpid in dpids:
            msgs: list[Any] = []
            for action, state in common:
                if action == "delete":
                    msgs += builders.vip_flow_deletes(self.lbu_id, state.vip_id, state.vip.address, state.vip.port,
                                                      remaining_ips)
                else:
                    msgs += builders.vip_flows(self.lbu_id, state.vip_id, state.vip.address, state.vip.port)
            if fabric_changed:
                msgs.append(builders.flow_delete(Table.FORWARD, make_cookie(CookieKind.FABRIC), KIND_MASK))
                msgs += builders.forward_flows(self.lbu_id, self._forwarding.get(dpid, {}))
            changes[dpid] = msgs
        return changes

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
                         now: float) -> list[Any]:
        """Classify one punted frame; return the messages to send to that datapath (flows first)."""
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
        if table_id != Table.CONNECTIONS:
            self.dropped["unexpected_table"] += 1
            return []
        return self._classify(dpid, in_port, frame, data, total_len, now)

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
        if conn is not None:
            self.packet_in["syn_retransmit" if seg.is_pure_syn else "existing_connection"] += 1
            conn.dpid = dpid
            return self._plumb(conn.route, in_port, data, total_len)
        if not seg.is_pure_syn:
            return self._replumb(dpid, key, in_port, data, total_len, now)
        if len(self.connections_by_key) >= self._config.controller.max_connections:
            self.refused["cap"] += 1
            return []
        vip = state.vip
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
        msgs = self._plumb(route, in_port, data, total_len)
        conn = Connection(dpid, vip.name, member.name, route, now)
        self.connections_by_key[key] = conn
        self.member_connections[(vip.name, member.name)] += 1
        self.dam_ops.append(("put", route_key(key), conn.atom_data(), None))
        return msgs

    def _route(self, state: VipState, member: Member, client_ip: str, client_port: int,
               kind: CookieKind = CookieKind.NAT) -> builders.NatRoute:
        """The rewrite toward ``member`` for one client connection (or, with kind SESSION, a client's session)."""
        vip = state.vip
        session = kind == CookieKind.SESSION
        return builders.NatRoute(
            client_ip=client_ip, client_port=client_port, vip_ip=vip.address, vip_port=vip.port, vip_mac=vip.mac,
            member_ip=member.address, member_port=member.port, member_mac=self._member_mac(member.address, member.mac),
            cookie=make_cookie(kind, self.lbu_id, state.vip_id, member.endpoint_id),
            idle_timeout=vip.session_flow_idle if session else vip.idle_timeout, hard_timeout=vip.hard_timeout)

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

    def _plumb(self, route: builders.NatRoute, in_port: int, data: bytes, total_len: int) -> list[Any]:
        """Flows for both directions, then the punted packet released through them when it arrived whole."""
        msgs = builders.nat_connection_flows(route)
        if len(data) >= total_len:
            msgs.append(builders.packet_out_table(in_port, data))
        else:
            self.packet_in["held_truncated"] += 1
        return msgs

    def handle_flow_removed(self, dpid: int, table_id: int, cookie: int, match: dict[str, Any],
                            idle: bool = True, now: float = 0.0) -> list[Any]:
        """Keep the connection table exact: forget the connection and remove its other direction.

        A connection whose flows idled out is remembered for the route linger time (locally and in its route atom),
        so a late segment re-plumbs it to the same member; one deleted on purpose is forgotten.
        """
        decoded = Cookie.decode(cookie)
        if decoded.kind == CookieKind.SESSION:
            return self._session_flow_removed(dpid, table_id, decoded, match)
        if decoded.kind != CookieKind.NAT:
            return []
        try:
            if table_id == Table.CONNECTIONS:
                key = (match["ipv4_src"], match["tcp_src"], match["ipv4_dst"], match["tcp_dst"])
            elif table_id == Table.REVERSE:
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
        if conn is None or conn.dpid != dpid:
            return []
        self._forget(key)
        if idle:
            linger = self._config.controller.dam.route_linger
            self.lingering[key] = (conn, now + linger)
            self.dam_ops.append(("touch", route_key(key), linger))
        else:
            self.dam_ops.append(("delete", route_key(key)))
        return builders.nat_connection_deletes(conn.route)

    def _session_flow_removed(self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any]) -> list[Any]:
        """A per-session flow expired: forget it (the session itself lives on until its TTL)."""
        state = self._by_id.get(cookie.vip_id)
        field = "ipv4_src" if table_id == Table.CONNECTIONS else "ipv4_dst"
        value = match.get(field)
        if state is None or value is None:
            return []
        self.session_flows.pop((dpid, state.vip.name, client_of_match(value)), None)
        return []

    def expire(self, now: float) -> None:
        """Drop lingering routes and sessions whose time is up."""
        for key in [k for k, (_conn, until) in self.lingering.items() if until <= now]:
            del self.lingering[key]
        self.sessions.expire(now)

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
            "rebuilt_connections": self.rebuilt_connections,
        }
