"""ICMP settings of a VIP (``vips[].icmp``): answering ping, relaying ICMP errors about its connections."""

from __future__ import annotations

from nlb_sdn.config.base import Strict


class VipIcmp(Strict):
    """What the controller does with ICMP for a VIP (docs/config.md, "ICMP")."""

    answer_ping: bool = False
    """Echo requests to the VIP address are answered by the controller (false, the default: dropped at the switch,
    as before). An address shared by several VIP services answers while any of them says so."""
    relay_errors: bool = False
    """ICMP errors about a nat connection of the VIP (destination unreachable, fragmentation needed, time exceeded,
    parameter problem) reach its member or client with the NAT undone in the quoted header, so path MTU discovery
    works through the VIP (false, the default: dropped at the switch or passed unchanged, as before)."""
