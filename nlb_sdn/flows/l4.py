"""The transport protocols a VIP service balances (the config's ``protocol``), and how flows name their fields.

Every builder that matches or rewrites ports takes the names from here, so one flow definition serves TCP and UDP
VIP services alike: ``L4Protocol.UDP.src`` is ``udp_src``, ``L4Protocol.UDP.nxm_dst`` is ``udp_dst_nxm``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from nlb_sdn.core.frames import IPPROTO_TCP, IPPROTO_UDP


class L4Protocol(StrEnum):
    """A VIP service's transport protocol, with its IP protocol number and the OXM/NXM names of its port fields."""

    TCP = "tcp"
    UDP = "udp"

    @property
    def ip_proto(self) -> int:
        """The IPv4 protocol number (``ip_proto`` match value)."""
        return IPPROTO_UDP if self is L4Protocol.UDP else IPPROTO_TCP

    @property
    def src(self) -> str:
        """The OXM field of the source port (``tcp_src``, ``udp_src``)."""
        return f"{self.value}_src"

    @property
    def dst(self) -> str:
        """The OXM field of the destination port (``tcp_dst``, ``udp_dst``)."""
        return f"{self.value}_dst"

    @property
    def nxm_src(self) -> str:
        """The Nicira (learn spec) name of the source port field."""
        return f"{self.value}_src_nxm"

    @property
    def nxm_dst(self) -> str:
        """The Nicira (learn spec) name of the destination port field."""
        return f"{self.value}_dst_nxm"

    @property
    def has_handshake(self) -> bool:
        """Whether connections open with a SYN and end with FIN or RST (TCP); a UDP flow starts with any datagram
        and ends when it idles out."""
        return self is L4Protocol.TCP


def match_ports(match: dict[str, Any]) -> tuple[int, int]:
    """The (source, destination) ports of an exact TCP or UDP match as the framework reports it (KeyError if none)."""
    for protocol in L4Protocol:
        if protocol.src in match:
            return match[protocol.src], match[protocol.dst]
    raise KeyError("tcp_src")
