"""The core's shared vocabulary: connection keys and records, VIP service state, modes and counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from nlb_sdn.config import Member, Vip
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.flows import builders, tunnel

if TYPE_CHECKING:
    from nlb_sdn.core.services.base import NatService

ConnKey = tuple[str, int, str, int]
"""A connection as the client sees it: (client ip, client port, VIP ip, VIP port)."""

SYN_TAG_MASK = 0xFF
"""The bits of a SYN's sequence number kept per connection (1 new connection in 256 on a reused port is taken for a
retransmitted SYN and goes where the old one went)."""


class PacketIn(NamedTuple):
    """A punted segment and where it came from (a named tuple: one is made per packet-in, so it must be cheap)."""

    dpid: int
    in_port: int
    data: bytes
    total_len: int
    table_id: int
    now: float
    segment: TcpSegment
    key: ConnKey
    """The segment's connection, as the client sees it."""

    @property
    def whole(self) -> bool:
        """Whether the switch sent the whole frame (so it can be released)."""
        return len(self.data) >= self.total_len


class Mode(StrEnum):
    """How a VIP service's packets reach its members (the config's ``mode``)."""

    NAT = "nat"
    TUNNEL = "tunnel"
    L7 = "l7"


class Dispatch(StrEnum):
    """Who picks the member of a new connection (the config's ``dispatch``)."""

    CONTROLLER = "controller"
    SWITCH = "switch"


class Pinning(StrEnum):
    """How the switch keeps a switch-dispatched connection on its member (the config's ``switch_pinning``)."""

    CONNTRACK = "conntrack"
    LEARN = "learn"


class Tracking(StrEnum):
    """How the controller hears of conntrack-pinned connections (the config's ``switch_tracking``)."""

    COPIES = "copies"
    """The switch copies every connection's SYN, FIN and RST to the controller: exact per-connection lists."""
    COUNTERS = "counters"
    """The switch copies nothing per connection; per-member counts come from flow stats of per-member entries."""


class Affinity(StrEnum):
    """What keeps a client on one member (the config's ``affinity``)."""

    NONE = "none"
    CLIENT_IP = "client_ip"
    APP = "app"


class Granularity(StrEnum):
    """What one controller decision plumbs (the config's ``granularity``)."""

    CONNECTION = "connection"
    SESSION = "session"


@dataclass(slots=True)
class Connection:
    """One tracked connection: where it was plumbed and to which member."""

    dpid: int
    vip: str
    member: str
    route: builders.NatRoute
    installed_at: float
    dispatch: Dispatch = Dispatch.CONTROLLER
    syn_tag: int | None = None
    """The low byte of its SYN's sequence number (a small int: no allocation): a SYN with another one is a new
    connection from the same client port. None when not known (adopted, or dispatched by the switch)."""

    def atom_data(self) -> dict[str, Any]:
        """The route atom's data: enough for any LBU to re-plumb the connection to the same endpoint."""
        route = self.route
        return {
            "vip": self.vip,
            "member": self.member,
            "pip": route.member_address,
            "pport": route.member_port,
            "mac": route.member_mac,
            "mode": self.mode,
            "flow_id": 0,
            "dpid": self.dpid,
            "dispatch": str(self.dispatch),
        }

    def as_dict(self, key: ConnKey) -> dict[str, Any]:
        """A JSON-friendly view for REST."""
        client_ip, client_port, vip_ip, vip_port = key
        route = self.route
        view: dict[str, Any] = {
            "client": f"{client_ip}:{client_port}",
            "vip": self.vip,
            "vip_address": f"{vip_ip}:{vip_port}",
            "member": self.member,
            "member_address": f"{route.member_address}:{route.member_port}",
            "dpid": self.dpid,
            "mode": self.mode,
        }
        if isinstance(route, tunnel.TunnelRoute):
            view["label"] = route.label
        view.update(
            {"dispatch": str(self.dispatch), "cookie": f"0x{route.cookie:016x}", "installed_at": self.installed_at}
        )
        return view

    @property
    def mode(self) -> str:
        """The forwarding mode the connection is plumbed in: ``nat`` or ``tunnel``."""
        return tunnel.route_mode(self.route)


class VipState:
    """Runtime state of one VIP service: its id in cookies, its model and the service kind that handles it."""

    __slots__ = ("_by_endpoint", "_vip", "affinity", "dispatch", "mode", "pinning", "service", "vip_id")

    mode: Mode
    """The model's ``mode`` as the core's enum (the ``vip`` setter keeps these four in step with the model)."""
    dispatch: Dispatch
    """The model's ``dispatch``."""
    pinning: Pinning | None
    """The model's ``switch_pinning``."""
    affinity: Affinity
    """The model's ``affinity``."""

    def __init__(self, vip: Vip, vip_id: int) -> None:
        self.vip_id = vip_id
        self.service: NatService | None = None
        self.vip = vip

    @property
    def vip(self) -> Vip:
        """The VIP service's model."""
        return self._vip

    @vip.setter
    def vip(self, vip: Vip) -> None:
        self._vip = vip
        self._by_endpoint = {member.endpoint_id: member for member in vip.members}
        self.mode = Mode(vip.mode)
        self.dispatch = Dispatch(vip.dispatch)
        self.pinning = Pinning(vip.switch_pinning) if vip.switch_pinning else None
        self.affinity = Affinity(vip.affinity)

    def member_by_endpoint(self, endpoint_id: int) -> Member | None:
        """The member whose endpoint id a cookie carries, if it is still one."""
        return self._by_endpoint.get(endpoint_id)


@dataclass
class Counters:
    """The core's counters, shared by its managers and reported by ``stats``."""

    packet_in: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    selections: Counter[tuple[str, str]] = field(default_factory=Counter)
    affinity: Counter[str] = field(default_factory=Counter)
    switch_dispatch: Counter[str] = field(default_factory=Counter)

    def selected(self, vip: str, member: str) -> None:
        """Count one member chosen for a new connection (or session) of a VIP service."""
        self.selections[(vip, member)] += 1
