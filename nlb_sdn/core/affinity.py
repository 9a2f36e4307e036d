"""Affinity: the session table 2014, the per-session flows in switches, and application sessions from agents."""

from __future__ import annotations

from typing import Any

from nlb_sdn.affinity.sessions import (
    APP,
    CLIENT_IP,
    Session,
    SessionTable,
    client_ip_sid,
    client_of_match,
    client_prefix,
)
from nlb_sdn.config import Member, Vip
from nlb_sdn.core.effects import Out
from nlb_sdn.core.fabric import FabricView
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Affinity, Counters, VipState
from nlb_sdn.dam.atoms import any_type_session_key
from nlb_sdn.flows.family import match_address_or_none
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.health.handler import HealthHandler

SessionFlowKey = tuple[int, str, str]
"""A per-session flow pair in a switch: (dpid, VIP service name, client prefix)."""


class AffinityManager(Manager):
    """Keeps clients on their members: looks sessions up for new connections and keeps the table and DAM in step."""

    def __init__(self, origin: str, health: HealthHandler, fabric: FabricView, counters: Counters) -> None:
        self.origin = origin
        self.health = health
        self.fabric = fabric
        self.counters = counters
        self.sessions = SessionTable()
        self.session_flows: dict[SessionFlowKey, str] = {}
        """Per-session flow pairs installed in switches, and the member each one sends to."""

    def member_for(self, vip: Vip, client_ip: str, now: float, out: Out) -> Member | None:
        """The member a live session pins this client to, if the member may still take it (else the session goes)."""
        affinity = Affinity(vip.affinity)
        if affinity == Affinity.NONE:
            return None
        client = client_prefix(client_ip, vip.affinity_prefix) if affinity == Affinity.CLIENT_IP else client_ip
        session = self.sessions.lookup(vip.affinity, vip.name, client, now)
        if session is None:
            self.counters.affinity["miss"] += 1
            return None
        member = vip.member(session.member)
        if member is None or not self.health.session_eligible(vip, member, self.fabric.has_mac):
            self.counters.affinity["dropped_ineligible"] += 1
            self.drop(session.key, out)
            return None
        self.counters.affinity["hit"] += 1
        if affinity == Affinity.CLIENT_IP:
            session.expires_at = now + vip.session_ttl
            out.touch(session.key, vip.session_ttl)
        return member

    def remember_client(self, vip: Vip, member: Member, client_ip: str, now: float, out: Out) -> None:
        """Create the inferred ``client_ip`` session of a client's first connection."""
        client = client_prefix(client_ip, vip.affinity_prefix)
        sid = client_ip_sid(vip.name, client_ip, vip.affinity_prefix)
        self._pin_client(vip, member, sid, client, now, "created", out)

    def _pin_client(self, vip: Vip, member: Member, sid: str, client: str, now: float, counter: str, out: Out) -> None:
        """Record (here and in the DAM) the ``client_ip`` session that keeps ``client`` on ``member``."""
        session = Session(
            sid,
            CLIENT_IP,
            vip.name,
            member.name,
            member.address,
            member.port,
            client,
            "",
            now + vip.session_ttl,
            self.origin,
        )
        self.sessions.upsert(session)
        self.counters.affinity[counter] += 1
        out.put(session.key, session.to_data(), vip.session_ttl)

    def drop(self, key: str, out: Out) -> bool:
        """Forget a session here and in the DAM; False if there was none."""
        if self.sessions.remove(key) is None:
            return False
        out.delete(key)
        return True

    def revoke(self, vip: str, members: set[str] | None, out: Out) -> int:
        """Forget every session and per-session flow record of these members (None: of every member) of a VIP
        service, here and in the DAM, in one pass; the number of sessions dropped (counted as ``dropped_ineligible``).
        """
        sessions = [s for s in self.sessions.select(vip) if members is None or s.member in members]
        for session in sessions:
            self.drop(session.key, out)
        self.counters.affinity["dropped_ineligible"] += len(sessions)
        for key in [
            k for k, owner in self.session_flows.items() if k[1] == vip and (members is None or owner in members)
        ]:
            del self.session_flows[key]
        return len(sessions)

    def session_flow(self, dpid: int, vip: str, client: str, member: str) -> bool:
        """Record a per-session flow pair toward ``member``; True when the pair was already there (a racing SYN)."""
        key = (dpid, vip, client)
        pending = key in self.session_flows
        self.session_flows[key] = member
        return pending

    def session_flow_removed(self, dpid: int, table_id: int, state: VipState | None, match: dict[str, Any]) -> None:
        """A per-session flow expired: forget it (the session itself lives on until its TTL)."""
        end = "src" if table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS) else "dst"
        value = match_address_or_none(match, end)
        if state is not None and value is not None:
            self.session_flows.pop((dpid, state.vip.name, client_of_match(value)), None)

    def adopt_session_flow(self, dpid: int, state: VipState, member: Member, match: dict[str, Any]) -> None:
        """Take a per-session flow found in a switch into the session-flow table."""
        value = match_address_or_none(match, "src")
        if value is not None:
            self.session_flows[(dpid, state.vip.name, client_of_match(value))] = member.name

    def learned(self, state: VipState, member: Member, match: dict[str, Any], now: float, out: Out) -> None:
        """A client the switch pinned to a member (client_ip affinity): record its session here and in the DAM."""
        value = match_address_or_none(match, "src")
        vip = state.vip
        if value is None:
            return
        client = client_of_match(value)
        sid = client_ip_sid(vip.name, client.split("/")[0], vip.affinity_prefix)
        session = self.sessions.lookup(CLIENT_IP, vip.name, client, now)
        if session is not None and session.member == member.name:
            return
        if not self.health.session_eligible(vip, member, self.fabric.has_mac):
            return  # a flow stats reply that left the switch before the member's pinned entries were revoked
        self._pin_client(vip, member, sid, client, now, "learned", out)

    def app_session(self, kind: str, body: dict[str, Any], state: VipState | None, now: float, out: Out) -> None:
        """Record a host's ``session_up`` or forget its ``session_down`` (idempotent; refreshed by the agent)."""
        if kind == "session_down":
            self.counters.affinity["app_down"] += 1
            self.drop(any_type_session_key(str(body.get("stype", APP)), str(body.get("sid"))), out)
            return
        member = (
            next((m for m in state.vip.members if (m.address, m.port) == (body.get("pip"), body.get("pport"))), None)
            if state
            else None
        )
        if state is None or member is None:
            self.counters.affinity["app_unknown_endpoint"] += 1
            return
        ttl = float(body.get("ttl_s", state.vip.session_ttl))
        session = Session(
            str(body["sid"]),
            str(body.get("stype", APP)),
            state.vip.name,
            member.name,
            member.address,
            member.port,
            str(body["client"]),
            str(body.get("host_id", "")),
            now + ttl,
            self.origin,
        )
        self.sessions.upsert(session)
        self.counters.affinity["app_up"] += 1
        out.put(session.key, session.to_data(), ttl)

    def expire(self, now: float) -> None:
        """Forget sessions whose time is up."""
        self.sessions.expire(now)

    def load(self, key: str, data: dict[str, Any], expires_at: float, origin: str) -> None:
        """A session atom from the DAM into the table (KeyError, TypeError or ValueError if it is not a session's)."""
        session = Session.from_data(data, expires_at, origin)
        if session.key != key:
            raise ValueError(f"the data is that of session {session.key!r}")
        self.sessions.upsert(session)

    def republish(self, now: float, out: Out) -> None:
        """Put every live session this LBU wrote again, with its remaining time (the store lost them)."""
        for session in self.sessions.sessions.values():
            if session.origin == self.origin and session.expires_at > now:
                out.put(session.key, session.to_data(), session.expires_at - now)

    def live_flows(self, vip: str, member: str) -> int:
        """Per-session flow pairs of one member of one VIP service."""
        return sum(1 for (_dpid, name, _client), owner in self.session_flows.items() if name == vip and owner == member)

    def stats(self) -> dict[str, Any]:
        """Session counters for ``stats``."""
        return {
            "total": len(self.sessions),
            "session_flows": len(self.session_flows),
            "affinity": dict(self.counters.affinity),
        }
