"""Service model and configuration schema: VIP services, member pools and the static fabric.

One model serves the config file and REST alike: a file is parsed into a :class:`Config`, and a REST change
produces a new :class:`Config` through the same validators, which the controller applies through one flow-diff path.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import zlib
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from nlb_sdn.config.base import Strict
from nlb_sdn.config.flood import FloodProtection
from nlb_sdn.config.gateway import Gateway, check_gateways, gateway_addresses
from nlb_sdn.config.ha import HaSettings
from nlb_sdn.config.icmp import VipIcmp
from nlb_sdn.config.openflow import OpenFlow
from nlb_sdn.config.rest import Rest
from nlb_sdn.config.routing import Pool, RouteRule, check_routing
from nlb_sdn.config.source import Document, ParseFailure, Position, Problem, read_document
from nlb_sdn.config.state import StateSettings
from nlb_sdn.config.transport import check_protocol
from nlb_sdn.dam import DamConfig
from nlb_sdn.signed import KeyMode

MAC_PATTERN = r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$"
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def _where(source: str, position: Position | None) -> str:
    """``FILE`` or ``FILE:LINE:COLUMN``."""
    return f"{source}:{position[0]}:{position[1]}" if position else source


class ConfigError(ValueError):
    """A configuration that cannot be used; names the file, the key and the reason (the first of all problems).

    ``problems`` lists every problem found, each with the key's line and column in the file when known; the message
    has one line per problem, ``FILE[:LINE:COLUMN]: KEY: REASON``.
    """

    def __init__(
        self, source: str, key: str, reason: str, position: Position | None = None, more: tuple[Problem, ...] = ()
    ) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.position = position
        self.problems = (Problem(key, reason, position), *more)
        super().__init__("\n".join(f"{_where(source, p.position)}: {p.key}: {p.reason}" for p in self.problems))

    def as_dict(self) -> dict[str, str]:
        """The error as a JSON-friendly mapping."""
        return {"source": self.source, "key": self.key, "reason": self.reason}


def _ipv4(value: str) -> str:
    """Normalise and validate a dotted IPv4 address."""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise ValueError(f"not an IPv4 address: {value!r}") from exc


_IPV4_JSON_SCHEMA = WithJsonSchema({"type": "string", "format": "ipv4"})
"""How an address field shows in JSON Schema (the REST API's OpenAPI document)."""
IPv4 = Annotated[str, AfterValidator(_ipv4), _IPV4_JSON_SCHEMA]


def _service_ipv4(value: str) -> str:
    """A dotted IPv4 address that can carry a service: not unspecified, loopback, multicast or broadcast."""
    address = ipaddress.IPv4Address(_ipv4(value))
    for unusable, what in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_multicast, "multicast"),
        (address == ipaddress.IPv4Address("255.255.255.255"), "broadcast"),
    ):
        if unusable:
            raise ValueError(f"{value} is a {what} address; a VIP or member needs a unicast address")
    return str(address)


ServiceIPv4 = Annotated[str, AfterValidator(_service_ipv4), _IPV4_JSON_SCHEMA]
"""A unicast IPv4 address of a VIP or a member (``ServiceIP`` takes IPv6 too)."""


def _ipv6(value: str) -> str:
    """Normalise and validate an IPv6 address (RFC 5952 text form)."""
    try:
        return str(ipaddress.IPv6Address(value))
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise ValueError(f"not an IPv6 address: {value!r}") from exc


IPv6 = Annotated[str, AfterValidator(_ipv6), WithJsonSchema({"type": "string", "format": "ipv6"})]
"""An IPv6 address, normalised."""


def _service_ip(value: str) -> str:
    """A unicast IPv4 or IPv6 address that can carry a service, normalised."""
    if ":" not in value:
        return _service_ipv4(value)
    try:
        address = ipaddress.IPv6Address(value)
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise ValueError(f"not an IPv4 address nor an IPv6 address: {value!r}") from exc
    for unusable, what in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_multicast, "multicast"),
        (address.is_link_local, "link-local"),
        (address.ipv4_mapped is not None, "IPv4-mapped"),
    ):
        if unusable:
            raise ValueError(f"{value} is a {what} address; a VIP or member needs a unicast address")
    return str(address)


ServiceIP = Annotated[
    str,
    AfterValidator(_service_ip),
    WithJsonSchema({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
]
"""The address of a VIP or a member: unicast IPv4 or IPv6 (a VIP's members are of its family)."""


def address_bits(address: str) -> int:
    """Bits of an address of either family: 32 or 128."""
    return 128 if ":" in address else 32


@functools.lru_cache(maxsize=1 << 18)  # asked for every member on each config change: 20,000 CRCs a time
def endpoint_id(address: str, port: int) -> int:
    """The 32-bit endpoint id used in cookies: CRC32 of ``"ip:port"``."""
    return zlib.crc32(f"{address}:{port}".encode()) & 0xFFFFFFFF


def vip_mac(address: str) -> str:
    """The locally administered MAC the controller answers ARP (or neighbour discovery) with for a VIP:
    02:4e:<ipv4 bytes>, or 02:4f:<the last 4 bytes> of an IPv6 VIP."""
    if ":" in address:
        return "02:4f:" + ":".join(f"{b:02x}" for b in ipaddress.IPv6Address(address).packed[-4:])
    packed = ipaddress.IPv4Address(address).packed
    return "02:4e:" + ":".join(f"{b:02x}" for b in packed)


class Member(Strict):
    """One endpoint of a pool: an application instance at (address, port) with a static weight."""

    name: str = Field(default="", pattern=r"^$|" + NAME_PATTERN)
    address: ServiceIP
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=10000)
    mac: str = Field(default="", pattern=r"^$|" + MAC_PATTERN)
    health: Literal["static", "agent", "probe"] = "static"
    state: Literal["active", "draining", "inactive"] = "active"

    @model_validator(mode="after")
    def _default_name(self) -> Member:
        if not self.name:
            object.__setattr__(self, "name", f"{self.address}:{self.port}")
        return self

    @property
    def endpoint_id(self) -> int:
        """32-bit id of this endpoint for cookies."""
        return endpoint_id(self.address, self.port)


PROBE_PORT_BASE = 0xFE00
PROBE_PORT_MASK = 0xFE00


class Allotment(Strict):
    """How a VIP service's allotment (FIG. 18) is expressed and how long it lasts."""

    scheme: Literal["percent", "tokens"] = "percent"
    tokens: int = Field(default=100, ge=1, le=100_000)
    duration_ms: int = Field(default=2000, ge=100, le=600_000)


class MigrationSettings(Strict):
    """How the request routers of an ``l7`` VIP service hand connections to members (SPEC §2.6)."""

    timeout_ms: int = Field(default=1000, ge=50, le=30_000)
    fallback: Literal["proxy", "reset"] = "proxy"


def _check_l7(vip: Vip) -> None:
    """The checks of an ``l7`` VIP service that need only the VIP (routers are checked against the fabric later)."""
    if vip.mode != "l7":
        if vip.routers:
            raise ValueError("routers: only a VIP service in mode l7 has request routers")
        return
    if not vip.routers:
        raise ValueError("mode l7 needs routers (the fabric hosts whose request router takes the connections)")
    if len(set(vip.routers)) != len(vip.routers):
        raise ValueError("routers: a router is listed twice")
    if vip.dispatch == "switch" or vip.granularity == "session" or vip.affinity != "none":
        raise ValueError(
            "mode l7 needs dispatch controller, granularity connection and affinity none (the request "
            "router decides, sessions included)"
        )


class Vip(Strict):
    """A VIP service: (address, port, protocol) with its forwarding mode, timers and member pool."""

    name: str = Field(pattern=NAME_PATTERN)
    address: ServiceIP
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    mode: Literal["nat", "tunnel", "l7"] = "nat"
    dispatch: Literal["controller", "switch"] = "controller"
    switch_pinning: Literal["conntrack", "learn"] | None = None
    switch_tracking: Literal["copies", "counters"] = "copies"
    """How the controller hears of a conntrack-pinned VIP's connections: copies of SYN/FIN/RST, or counters."""
    idle_timeout: int = Field(default=15, ge=1, le=65535)
    hard_timeout: int = Field(default=0, ge=0, le=65535)
    mac: str = Field(default="", pattern=r"^$|" + MAC_PATTERN)
    allotment: Allotment = Field(default_factory=Allotment)
    affinity: Literal["none", "client_ip", "app"] = "none"
    affinity_prefix: int = Field(default=32, ge=0, le=128)
    """Bits of the client address a ``client_ip`` session covers; unset: all of them (32, or 128 for IPv6)."""
    granularity: Literal["connection", "session"] = "connection"
    session_ttl: float = Field(default=600.0, gt=0, le=86400)
    session_flow_idle: int = Field(default=60, ge=1, le=65535)
    draining_keeps_sessions: bool = True
    members: list[Member] = Field(default_factory=list)
    pools: list[Pool] = Field(default_factory=list)
    rules: list[RouteRule] = Field(default_factory=list)
    routers: list[str] = Field(default_factory=list)
    migration: MigrationSettings = Field(default_factory=MigrationSettings)
    icmp: VipIcmp = Field(default_factory=VipIcmp)

    @model_validator(mode="after")
    def _check(self) -> Vip:
        _check_l7(self)
        check_protocol(self)
        _check_family(self)
        if self.granularity == "session" and self.affinity != "client_ip":
            raise ValueError("granularity session needs affinity client_ip")
        if self.dispatch == "switch" and self.affinity == "app":
            raise ValueError(
                "dispatch switch cannot follow app sessions (the switch never sees them); use dispatch controller"
            )
        if self.dispatch == "switch" and self.granularity == "session":
            raise ValueError(
                "dispatch switch with affinity client_ip already pins whole clients in the switch; "
                "leave granularity at connection"
            )
        if self.switch_pinning is None:
            object.__setattr__(self, "switch_pinning", "learn" if self.affinity == "client_ip" else "conntrack")
        elif self.switch_pinning == "conntrack" and self.affinity == "client_ip":
            raise ValueError(
                "switch_pinning conntrack cannot pin whole clients: affinity client_ip needs switch_pinning learn"
            )
        if self.mode == "tunnel" and (self.dispatch == "switch" or self.granularity == "session"):
            raise ValueError("mode tunnel needs dispatch controller and granularity connection")
        if self.mode in ("tunnel", "l7") and any(member.port != self.port for member in self.members):
            raise ValueError(
                f"mode {self.mode} does not rewrite ports: members must listen on the VIP's port {self.port}"
            )
        if self.mode in ("tunnel", "l7") and any(member.health == "probe" for member in self.members):
            raise ValueError(
                f"mode {self.mode} members hold the VIP themselves, so probe replies (to the VIP) never "
                "leave them: use health agent or static"
            )
        if self.port >= PROBE_PORT_BASE:
            raise ValueError(f"port {self.port}: ports {PROBE_PORT_BASE}-65535 are reserved for health probes")
        if not self.mac:
            object.__setattr__(self, "mac", vip_mac(self.address))
        seen: set[str] = set()
        endpoints: set[tuple[str, int]] = set()
        for member in self.members:
            if member.name in seen:
                raise ValueError(f"duplicate member name {member.name!r}")
            if (member.address, member.port) in endpoints:
                raise ValueError(f"duplicate member endpoint {member.address}:{member.port}")
            seen.add(member.name)
            endpoints.add((member.address, member.port))
        check_routing(self.pools, self.rules, [member.name for member in self.members])
        return self

    def member(self, name: str) -> Member | None:
        """The member called ``name`` (or addressed ``ip:port``), if any."""
        for member in self.members:
            if member.name == name or f"{member.address}:{member.port}" == name:
                return member
        return None


def _check_family(vip: Vip) -> None:
    """A VIP's members are of its address family; its affinity prefix fits it (unset: the whole address); an IPv6 VIP
    is a TCP ``nat`` one (tunnel labels pop to IPv4, routers and migration speak IPv4, UDP and ICMP handling are IPv4
    only) whose members are not agent-checked (H&L rows name IPv4 addresses)."""
    bits = address_bits(vip.address)
    if bits == 128 and vip.mode != "nat":
        raise ValueError(f"mode {vip.mode} is IPv4 only: an IPv6 VIP takes mode nat")
    if bits == 128 and vip.protocol != "tcp":
        raise ValueError(f"protocol {vip.protocol} is IPv4 only: an IPv6 VIP takes protocol tcp")
    if bits == 128 and any(getattr(vip.icmp, key) for key in vip.icmp.model_fields_set):
        raise ValueError("icmp answer_ping and relay_errors are IPv4 only (ICMPv6 is not relayed)")
    if bits == 128:  # the defaults are for IPv4 VIPs
        object.__setattr__(vip, "icmp", VipIcmp(answer_ping=False, relay_errors=False))
    if bits == 128 and any(member.health == "agent" for member in vip.members):
        raise ValueError("agent health is IPv4 only (H&L rows name IPv4 addresses): IPv6 members take static or probe")
    for member in vip.members:
        if address_bits(member.address) != bits:
            raise ValueError(
                f"member {member.name!r} address {member.address} is not of the VIP's family "
                f"(IPv{4 if bits == 32 else 6}): a VIP's members are of its address family"
            )
    if "affinity_prefix" not in vip.model_fields_set:
        object.__setattr__(vip, "affinity_prefix", bits)
    elif vip.affinity_prefix > bits:
        raise ValueError(f"affinity_prefix {vip.affinity_prefix} is longer than an address of the VIP ({bits} bits)")


class Switch(Strict):
    """A forwarder in the static fabric."""

    name: str = Field(pattern=NAME_PATTERN)
    dpid: int = Field(ge=1, lt=2**64)


class Link(Strict):
    """A switch-to-switch link of the static fabric."""

    a: str
    a_port: int = Field(ge=1, lt=0xFFFFFF00)
    b: str
    b_port: int = Field(ge=1, lt=0xFFFFFF00)


class Host(Strict):
    """A host attached to a switch port of the static fabric (client or backend)."""

    name: str = Field(pattern=NAME_PATTERN)
    ip: IPv4
    ipv6: IPv6 | None = None
    """The host's IPv6 address, when it has one (dual stack)."""
    mac: str = Field(pattern=MAC_PATTERN)
    switch: str
    port: int = Field(ge=1, lt=0xFFFFFF00)

    @field_validator("mac", mode="before")
    @classmethod
    def _lower_mac(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Fabric(Strict):
    """The static topology: switches, links between them, and attached hosts."""

    switches: list[Switch] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)
    gateways: list[Gateway] = Field(default_factory=list)
    """Uplink ports with a router behind them, reaching clients by prefix (docs/fabric.md, "Gateways")."""

    @model_validator(mode="after")
    def _check(self) -> Fabric:
        names = _unique([s.name for s in self.switches], "switch name")
        _unique([s.dpid for s in self.switches], "switch dpid")
        _unique([h.name for h in self.hosts], "host name")
        _unique([h.ip for h in self.hosts], "host ip")
        _unique([h.ipv6 for h in self.hosts if h.ipv6], "host ipv6")
        _unique([h.mac for h in self.hosts], "host mac")
        ports: set[tuple[str, int]] = set()
        for link in self.links:
            for switch, port in ((link.a, link.a_port), (link.b, link.b_port)):
                if switch not in names:
                    raise ValueError(f"link names unknown switch {switch!r}")
                if (switch, port) in ports:
                    raise ValueError(f"port {switch}:{port} is used twice")
                ports.add((switch, port))
        for host in self.hosts:
            if host.switch not in names:
                raise ValueError(f"host {host.name!r} names unknown switch {host.switch!r}")
            if (host.switch, host.port) in ports:
                raise ValueError(f"port {host.switch}:{host.port} is used twice")
            ports.add((host.switch, host.port))
        check_gateways(self.gateways, names, ports, self.hosts)
        return self

    def host(self, ident: str) -> Host | None:
        """The host called ``ident``, or with address (IPv4 or IPv6) ``ident``, if any."""
        return next((h for h in self.hosts if h.name == ident), None) or next(
            (h for h in self.hosts if ident in (h.ip, h.ipv6)), None
        )

    def addresses(self) -> set[str]:
        """Every host address, IPv4 and IPv6."""
        return {h.ip for h in self.hosts} | {h.ipv6 for h in self.hosts if h.ipv6}


class Probe(Strict):
    """Controller-side active health checks of agentless members (TCP SYN through the switches)."""

    interval: float = Field(default=1.0, ge=0.1, le=3600)
    timeout: float = Field(default=1.0, ge=0.05, le=60)
    rise: int = Field(default=1, ge=1, le=100)
    fall: int = Field(default=2, ge=1, le=100)


class Health(Strict):
    """The H&L handler: where agents' messages arrive, the host keys (``key_file`` read as ``key_mode`` says; also
    what migration tickets are signed with), and the timers."""

    enabled: bool = False
    listen_host: str = "0.0.0.0"
    listen_port: int = Field(default=9100, ge=1, le=65535)
    key_file: str = ""
    key_mode: KeyMode = KeyMode.DERIVED
    hb_period: float = Field(default=1.0, gt=0, le=60)
    miss_limit: int = Field(default=3, ge=1, le=100)
    postulate_period: float = Field(default=5.0, gt=0, le=3600)
    probe: Probe = Field(default_factory=Probe)

    @model_validator(mode="after")
    def _check(self) -> Health:
        if self.enabled and not self.key_file:
            raise ValueError("key_file is required when health is enabled")
        return self


class Controller(Strict):
    """Settings of one LBU instance (controller process)."""

    lbu_id: int = Field(default=1, ge=0, le=255)
    max_connections: int = Field(default=100_000, ge=1)
    packet_in_max_len: int = Field(default=128, ge=64, le=65535)
    switch_sync_period: float = Field(default=2.0, ge=0.1, le=3600)
    rest: Rest = Field(default_factory=Rest)
    health: Health = Field(default_factory=Health)
    dam: DamConfig = Field(default_factory=DamConfig)
    openflow: OpenFlow = Field(default_factory=OpenFlow)
    flood: FloodProtection = Field(default_factory=FloodProtection)
    state: StateSettings = Field(default_factory=StateSettings)
    ha: HaSettings = Field(default_factory=HaSettings)


class Config(Strict):
    """The whole configuration of an LBU instance."""

    version: Literal[1] = 1
    controller: Controller = Field(default_factory=Controller)
    vips: list[Vip] = Field(default_factory=list)
    fabric: Fabric = Field(default_factory=Fabric)

    @model_validator(mode="after")
    def _check(self) -> Config:
        _unique([v.name for v in self.vips], "vip name")
        _unique([(v.address, v.port, v.protocol) for v in self.vips], "vip service (address, port, protocol)")
        _unique([(v.address, v.port) for v in self.vips], "vip service (address, port; tcp and udp cannot share one)")
        host_ips = self.fabric.addresses()
        for vip in self.vips:
            if vip.address in host_ips:
                raise ValueError(f"vip {vip.name!r} address {vip.address} is also a host address")
            _check_vip_gateways(vip, self.fabric.gateways)
            for member in vip.members:
                if member.health == "agent" and not self.controller.health.enabled:
                    raise ValueError(
                        f"vip {vip.name!r} member {member.name!r} has agent health, but "
                        "controller.health.enabled is false"
                    )
                if vip.mode in ("tunnel", "l7") and member.address not in host_ips:
                    raise ValueError(
                        f"vip {vip.name!r} member {member.name!r}: mode {vip.mode} reaches members by "
                        f"their fabric host's label, and {member.address} is not a host of the fabric"
                    )
                if host_ips and not member.mac and member.address not in host_ips:
                    raise ValueError(
                        f"vip {vip.name!r} member {member.name!r}: {member.address} is not a host of "
                        "the fabric (list it under fabric.hosts, or give the member a mac)"
                    )
            for router in vip.routers:
                if self.fabric.host(router) is None:
                    raise ValueError(f"vip {vip.name!r} router {router!r}: not a host of the fabric (name or address)")
        return self

    def vip(self, name: str) -> Vip | None:
        """The VIP service called ``name``, if any."""
        return next((v for v in self.vips if v.name == name), None)


def _check_vip_gateways(vip: Vip, gateways: list[Gateway]) -> None:
    """A VIP address is no gateway's or router's address, and no gateway prefix is exactly the VIP."""
    if vip.address in gateway_addresses(gateways):
        raise ValueError(f"vip {vip.name!r} address {vip.address} is also a gateway address")
    for gateway in gateways:
        if f"{vip.address}/32" in gateway.prefixes:
            raise ValueError(f"gateway {gateway.name!r}: prefix {vip.address}/32 is exactly vip {vip.name!r}'s address")


def _unique(values: list[Any], what: str) -> set[Any]:
    """Raise if ``values`` has a duplicate; return them as a set."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)
    return seen


def _error_key(loc: tuple[Any, ...], data: Any) -> str:
    """A dotted key path for a validation location, naming list items by their ``name`` when they have one."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            label = f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label = f"[{node['name']}]"
            else:
                node = None
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
        else:
            node = node.get(part) if isinstance(node, dict) else None
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def validation_error(exc: ValidationError, source: str, data: Any, document: Document | None = None) -> ConfigError:
    """Turn every pydantic error into a ConfigError naming source, key, reason and, from ``document``, position."""
    problems: list[Problem] = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown key"
        elif reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        position = document.position(loc) if document is not None else None
        problems.append(Problem(_error_key(loc, data), reason, position))
    first, *more = problems
    return ConfigError(source, first.key, first.reason, first.position, tuple(more))


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_model(model: type[ModelT], data: Any, source: str, document: Document | None = None) -> ModelT:
    """Validate plain data into ``model`` strictly, or raise ConfigError naming source, key and reason.

    With the ``document`` the data was read from, each problem names the line and column of its key.

    Strict as JSON is: no string to number, no bool to number, no number to string; an integer is a valid float.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", "expected a mapping")
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, "(top level)", f"not plain data: {exc}") from None
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise validation_error(exc, source, data, document) from None


def read_config_document(path: str | os.PathLike[str]) -> Document:
    """Read and parse a config file into a :class:`Document`, or raise ConfigError naming the file and the reason."""
    source = os.fspath(path)
    try:
        return read_document(source)
    except OSError as exc:
        raise ConfigError(source, "(file)", exc.strerror or str(exc)) from None
    except ParseFailure as exc:
        raise ConfigError(source, "(file)", exc.reason, exc.position) from None


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate plain data (from YAML, TOML or JSON) into a Config, or raise ConfigError."""
    return validate_model(Config, data, source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) config file."""
    document = read_config_document(path)
    return validate_model(Config, document.data, document.source, document)


def dump_config(config: Config) -> dict[str, Any]:
    """The config as plain data, suitable for YAML or JSON."""
    return config.model_dump(mode="json")
