"""ICMP settings of a VIP (``vips[].icmp``): answering ping, relaying ICMP errors about its connections."""

from __future__ import annotations

from pydantic import Field

from nlb_sdn.config.base import Strict


class VipIcmp(Strict):
    """What the controller does with ICMP for a VIP (docs/config.md, "ICMP"): both on by default for an IPv4 VIP, so
    ping and path MTU discovery work through it; an IPv6 VIP has neither (ICMPv6 is not handled)."""

    answer_ping: bool = Field(
        default=True,
        description="The controller answers echo requests to the VIP address (off: they drop at the switch). An "
        "address shared by several VIP services answers while any of them says so.",
    )
    relay_errors: bool = Field(
        default=True,
        description="mode nat: ICMP errors about the VIP's connections (destination unreachable, fragmentation "
        "needed, time exceeded, parameter problem) reach the member or client with the NAT undone in the quoted "
        "header, so path MTU discovery works through the VIP (off: they drop at the switch or pass unchanged).",
    )
