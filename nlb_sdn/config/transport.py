"""The checks of a VIP service's ``protocol`` (``tcp`` or ``udp``) against the rest of its model."""

from __future__ import annotations

from typing import Any


def check_protocol(vip: Any) -> None:
    """Refuse what a UDP VIP service cannot do: mode l7 (its routers read TCP streams) and probe health (the
    controller's probes are TCP SYNs)."""
    if vip.protocol != "udp":
        return
    if vip.mode == "l7":
        raise ValueError(
            "protocol udp cannot use mode l7 (request routers read HTTP and TLS over TCP): use mode nat or tunnel"
        )
    if any(member.health == "probe" for member in vip.members):
        raise ValueError(
            "protocol udp cannot use health probe (the controller's probes are TCP SYNs): use health agent "
            "(with a udp or command check) or static"
        )
