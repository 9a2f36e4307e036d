"""Gateways of the fabric (``fabric.gateways``): uplink ports with a router behind them, reached by prefix.

Clients behind a router are not listed one by one: a client address that is no fabric host and falls in a gateway's
prefixes is reached through that gateway's uplink port (longest prefix wins), with the router's MAC as Ethernet
destination. The controller answers ARP for the gateway's fabric-side address like a router interface (docs/fabric.md,
"Gateways").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Protocol

from pydantic import Field, field_validator, model_validator

from nlb_sdn.config.base import Strict

GATEWAY_MAC_PATTERN = r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$"
GATEWAY_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def _unicast(value: str, what: str) -> str:
    """A dotted unicast IPv4 address, normalised."""
    try:
        address = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise ValueError(f"{what}: not an IPv4 address: {value!r}") from exc
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise ValueError(f"{what}: {value} is not a unicast address")
    return str(address)


def _lower(value: Any) -> Any:
    """MACs are compared in lower case."""
    return value.lower() if isinstance(value, str) else value


class Gateway(Strict):
    """An uplink port with a router behind it: the router (next hop), the prefixes it reaches and the fabric-side
    address (IP and MAC) the controller answers ARP for, as the router interface the router and members talk to."""

    name: str = Field(pattern=GATEWAY_NAME_PATTERN)
    switch: str
    port: int = Field(ge=1, lt=0xFFFFFF00)
    router_ip: str
    """The router's address on the uplink (the next hop toward the prefixes)."""
    router_mac: str = Field(pattern=GATEWAY_MAC_PATTERN)
    """The router's MAC on the uplink: packets toward the prefixes are rewritten to it."""
    prefixes: list[str] = Field(min_length=1)
    """IPv4 networks reached through the router (``a.b.c.d/len``; ``0.0.0.0/0`` for a default route)."""
    address: str
    """The fabric-side gateway address: the router's next hop toward VIPs and members, and the members' toward it."""
    mac: str = Field(pattern=GATEWAY_MAC_PATTERN)
    """The MAC the controller answers ARP with for ``address`` (and packets toward the router come from)."""

    _lower_macs = field_validator("router_mac", "mac", mode="before")(_lower)

    @field_validator("router_ip", "address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        return _unicast(value, "address")

    @field_validator("prefixes")
    @classmethod
    def _check_prefixes(cls, values: list[str]) -> list[str]:
        networks: list[str] = []
        for value in values:
            try:
                network = ipaddress.IPv4Network(value)
            except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as exc:
                raise ValueError(f"prefix {value!r}: {exc}") from exc
            if str(network) in networks:
                raise ValueError(f"prefix {network} is listed twice")
            networks.append(str(network))
        return networks

    @model_validator(mode="after")
    def _check(self) -> Gateway:
        if self.router_ip == self.address:
            raise ValueError(f"address {self.address} is also the router's address")
        if self.router_mac == self.mac:
            raise ValueError(f"mac {self.mac} is also the router's MAC")
        return self

    def networks(self) -> list[ipaddress.IPv4Network]:
        """The prefixes as networks."""
        return [ipaddress.IPv4Network(prefix) for prefix in self.prefixes]


class ListedHost(Protocol):
    """What the gateway checks read of a fabric host."""

    @property
    def name(self) -> str:
        """The host's name."""

    @property
    def ip(self) -> str:
        """The host's address."""

    @property
    def mac(self) -> str:
        """The host's MAC."""


def check_gateways(
    gateways: list[Gateway], switches: set[str], used_ports: set[tuple[str, int]], hosts: Iterable[ListedHost]
) -> None:
    """Raise ValueError when gateways name unknown switches, reuse a port, clash with hosts or with each other.

    ``hosts`` are the fabric's hosts (``ip``, ``mac``, ``name``). A prefix may cover host addresses (a host's /32 is
    more specific, so it wins) but may not be exactly one; two gateways may not list the same prefix (ambiguous).
    """
    host_ips = {host.ip: host.name for host in hosts}
    host_macs = {host.mac for host in hosts}
    names: set[str] = set()
    owners: dict[str, str] = {}
    addresses: dict[str, str] = {}
    ports = set(used_ports)
    for gateway in gateways:
        where = f"gateway {gateway.name!r}"
        if gateway.name in names:
            raise ValueError(f"duplicate gateway name {gateway.name!r}")
        names.add(gateway.name)
        if gateway.switch not in switches:
            raise ValueError(f"{where} names unknown switch {gateway.switch!r}")
        if (gateway.switch, gateway.port) in ports:
            raise ValueError(f"{where}: port {gateway.switch}:{gateway.port} is used twice")
        ports.add((gateway.switch, gateway.port))
        _check_addresses(gateway, where, host_ips, host_macs, addresses)
        for prefix in gateway.prefixes:
            if prefix in owners:
                raise ValueError(f"{where}: prefix {prefix} is also gateway {owners[prefix]!r}'s (ambiguous)")
            owners[prefix] = gateway.name
            single = ipaddress.IPv4Network(prefix)
            if single.prefixlen == 32 and str(single.network_address) in host_ips:
                name = host_ips[str(single.network_address)]
                raise ValueError(f"{where}: prefix {prefix} is exactly host {name!r}'s address")


def _check_addresses(
    gateway: Gateway, where: str, host_ips: dict[str, str], host_macs: set[str], seen: dict[str, str]
) -> None:
    """The router's and the gateway's addresses and MACs are no host's and no other gateway's."""
    for address in (gateway.router_ip, gateway.address):
        if address in host_ips:
            raise ValueError(f"{where}: {address} is also host {host_ips[address]!r}'s address")
        if address in seen:
            raise ValueError(f"{where}: {address} is also gateway {seen[address]!r}'s")
        seen[address] = gateway.name
    for mac in (gateway.router_mac, gateway.mac):
        if mac in host_macs:
            raise ValueError(f"{where}: MAC {mac} is also a host's")
        if mac in seen:
            raise ValueError(f"{where}: MAC {mac} is also gateway {seen[mac]!r}'s")
        seen[mac] = gateway.name


def gateway_addresses(gateways: Iterable[Gateway]) -> set[str]:
    """Every router and fabric-side address of the gateways (no VIP may take one)."""
    return {address for gateway in gateways for address in (gateway.router_ip, gateway.address)}
