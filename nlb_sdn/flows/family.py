"""Address families of VIP services and members: the EtherType and the match, set-field and learn field names of each.

One VIP service and its members are of one family (the config checks it); every flow builder takes the family of
its addresses from :func:`family_of` and names the fields through it, so an IPv4 and an IPv6 VIP share each builder.
Pure standard library (and the frame constants).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Mapping
from enum import Enum
from typing import Any

from nlb_sdn.core.frames import ETH_TYPE_IP, ETH_TYPE_IPV6


class AddressFamily(Enum):
    """IPv4 or IPv6, with what a flow names of each."""

    IPV4 = 4
    IPV6 = 6

    @property
    def eth_type(self) -> int:
        """The EtherType of the family's packets."""
        return ETH_TYPE_IP if self is AddressFamily.IPV4 else ETH_TYPE_IPV6

    @property
    def src(self) -> str:
        """The OXM field of the source address (``ipv4_src``, ``ipv6_src``)."""
        return f"ipv{self.value}_src"

    @property
    def dst(self) -> str:
        """The OXM field of the destination address (``ipv4_dst``, ``ipv6_dst``)."""
        return f"ipv{self.value}_dst"

    @property
    def nxm_src(self) -> str:
        """The Nicira field of the source address, as learn specs name it."""
        return f"{self.src}_nxm"

    @property
    def nxm_dst(self) -> str:
        """The Nicira field of the destination address, as learn specs name it."""
        return f"{self.dst}_nxm"

    @property
    def nat_range_min(self) -> str:
        """The ``NXActionNAT`` argument of the lowest address of a NAT range."""
        return f"range_ipv{self.value}_min"

    @property
    def bits(self) -> int:
        """Bits of an address (the longest prefix)."""
        return 32 if self is AddressFamily.IPV4 else 128

    @property
    def socket_family(self) -> socket.AddressFamily:
        """The socket module's family (``inet_pton`` and sockets)."""
        return socket.AF_INET if self is AddressFamily.IPV4 else socket.AF_INET6


@functools.lru_cache(maxsize=1 << 16)
def family_of(address: str) -> AddressFamily:
    """The family of an address or prefix in text form (an IPv6 one has a colon, an IPv4 one none)."""
    return AddressFamily.IPV6 if ":" in address else AddressFamily.IPV4


def address_int(address: str) -> int:
    """An address of either family as an integer (learn loads take integers)."""
    return int(ipaddress.ip_address(address))


def match_address(match: Mapping[str, Any], end: str) -> Any:
    """The ``end`` (``src`` or ``dst``) address value of a match of either family (KeyError when it has none)."""
    value = match.get(f"ipv4_{end}")
    return match[f"ipv6_{end}"] if value is None else value


def match_address_or_none(match: Mapping[str, Any], end: str) -> Any:
    """The ``end`` address value of a match of either family, None when it has none."""
    value = match.get(f"ipv4_{end}")
    return match.get(f"ipv6_{end}") if value is None else value
