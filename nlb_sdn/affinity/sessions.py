"""The session tracker's table 2014 (FIG. 23A): sessions by identifier and type, indexed by VIP and client.

Pure and local: the classifier decides from this table without waiting on the network, and every change is also
written to the DAM (session atoms, keyed by ``nlb_sdn.dam.atoms``) so that other LBU instances and a restarted one
see the sessions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from nlb_sdn.dam.atoms import any_type_session_key

CLIENT_IP = "client_ip"
APP = "app"


@dataclass(slots=True)
class Session:
    """One session: identifier, type/application, owning endpoint, VIP service, client and expiry."""

    sid: str
    stype: str
    vip: str
    member: str
    pip: str
    pport: int
    client: str
    host_id: str
    expires_at: float
    origin: str

    @property
    def key(self) -> str:
        """The DAM key of this session."""
        return any_type_session_key(self.stype, self.sid)

    def to_data(self) -> dict[str, Any]:
        """The DAM atom data."""
        return {
            "sid": self.sid,
            "stype": self.stype,
            "vip": self.vip,
            "member": self.member,
            "pip": self.pip,
            "pport": self.pport,
            "client": self.client,
            "host_id": self.host_id,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], expires_at: float, origin: str) -> Session:
        """Rebuild a session from DAM atom data (KeyError/TypeError when it is not one)."""
        return cls(
            str(data["sid"]),
            str(data["stype"]),
            str(data["vip"]),
            str(data["member"]),
            str(data["pip"]),
            int(data["pport"]),
            str(data["client"]),
            str(data.get("host_id", "")),
            expires_at,
            origin,
        )

    def as_dict(self, now: float) -> dict[str, Any]:
        """A JSON-friendly view (REST), with the FIG. 23A identifier and type/application columns first."""
        return {
            "id": self.key,
            "identifier": self.sid,
            "type": self.stype,
            "vip": self.vip,
            "member": self.member,
            "endpoint": f"{self.pip}:{self.pport}",
            "client": self.client,
            "host_id": self.host_id,
            "expires_at": self.expires_at,
            "expires_in": round(self.expires_at - now, 3),
            "origin": self.origin,
        }


def client_prefix(client_ip: str, prefix_len: int) -> str:
    """The client's network at ``prefix_len`` bits, as ``a.b.c.d/len`` or ``2001:db8::/len`` (the address itself for
    a whole address: /32 of IPv4, /128 of IPv6; a longer prefix than the address is cut to the address)."""
    network = ipaddress.ip_network(f"{client_ip}/{min(prefix_len, 128 if ':' in client_ip else 32)}", strict=False)
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


def client_of_match(value: str | tuple[str, str] | list[str]) -> str:
    """The client (address, or ``network/len`` for a prefix) that an ``ipv4_src``/``ipv6_src`` (or ``_dst``) match
    value names."""
    if isinstance(value, str):
        return value
    prefix_len = bin(int(ipaddress.ip_address(value[1]))).count("1")  # IPv6 networks take no netmask form
    network = ipaddress.ip_network(f"{value[0]}/{prefix_len}", strict=False)
    return str(network) if network.prefixlen < network.max_prefixlen else str(network.network_address)


def client_ip_sid(vip: str, client_ip: str, prefix_len: int) -> str:
    """The identifier of an inferred ``client_ip`` session: VIP name and client prefix (``web@10.0.5.0_24``)."""
    return f"{vip}@{client_prefix(client_ip, prefix_len).replace('/', '_')}"


class SessionTable:
    """Sessions by key, with an index from (VIP, client) for lookups on the packet-in path."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self._by_client: dict[tuple[str, str, str], str] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def upsert(self, session: Session) -> None:
        """Add or replace a session."""
        old = self.sessions.get(session.key)
        if old is not None:
            self._by_client.pop((old.stype, old.vip, old.client), None)
        self.sessions[session.key] = session
        self._by_client[(session.stype, session.vip, session.client)] = session.key

    def remove(self, key: str) -> Session | None:
        """Forget a session; the removed one, if any."""
        session = self.sessions.pop(key, None)
        if session is not None and self._by_client.get((session.stype, session.vip, session.client)) == key:
            del self._by_client[(session.stype, session.vip, session.client)]
        return session

    def lookup(self, stype: str, vip: str, client: str, now: float) -> Session | None:
        """The live session of this type for a client (or client prefix) of a VIP; expired ones are dropped."""
        key = self._by_client.get((stype, vip, client))
        session = self.sessions.get(key) if key else None
        if session is not None and session.expires_at <= now:
            self.remove(session.key)
            return None
        return session

    def expire(self, now: float) -> list[Session]:
        """Drop every expired session; return them."""
        gone = [s for s in self.sessions.values() if s.expires_at <= now]
        for session in gone:
            self.remove(session.key)
        return gone

    def select(self, vip: str | None = None, member: str | None = None) -> list[Session]:
        """Sessions of a VIP and/or endpoint member."""
        return [
            s
            for s in self.sessions.values()
            if (vip is None or s.vip == vip) and (member is None or s.member == member)
        ]
