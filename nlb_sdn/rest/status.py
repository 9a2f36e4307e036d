"""Octavia-style status of VIPs and members (``GET /v1/vips/{vip}/status``), JSON merge patches, and the warnings
given when a VIP weighs its members in different units.

A member's ``operating_status`` comes from its state view (``RestBackend.member_state``), first from its current
load-balancing state, then from its health:

======================================  =================
current state / health                  operating_status
======================================  =================
``drained``                             ``DRAINED``
``draining``                            ``DRAINING``
``inactive``                            ``OFFLINE``
health ``static`` (no monitor)          ``NO_MONITOR``
health ``ok``                           ``ONLINE``
agent: host not alive, no row; unknown  ``OFFLINE``
failed (agent row or probe)             ``ERROR``
======================================  =================

A VIP is ``ONLINE`` when every member the operator keeps active is serving (``ONLINE`` or ``NO_MONITOR``),
``DEGRADED`` when only some are, ``ERROR`` when none is and ``OFFLINE`` when the operator keeps none active.
``provisioning_status`` is ``ACTIVE``: a change is answered once it is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from nlb_sdn.config import Vip

MERGE_PATCH_TYPE = "application/merge-patch+json"
"""The media type of a JSON merge patch (RFC 7396); ``application/json`` is accepted too."""
AGENT_GONE = ("host not alive", "no row from any agent")
"""The health texts of an agent-monitored member whose agent is not reporting."""


class ProvisioningStatus(StrEnum):
    """Whether the controller has applied the object's configuration."""

    ACTIVE = "ACTIVE"
    PENDING_UPDATE = "PENDING_UPDATE"
    ERROR = "ERROR"


class OperatingStatus(StrEnum):
    """Whether the object serves traffic (Octavia's operating statuses)."""

    ONLINE = "ONLINE"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    OFFLINE = "OFFLINE"
    NO_MONITOR = "NO_MONITOR"


SERVING = (OperatingStatus.ONLINE, OperatingStatus.NO_MONITOR)
"""A member's operating statuses that take new connections."""
CURRENT_STATUS = {
    "drained": OperatingStatus.DRAINED,
    "draining": OperatingStatus.DRAINING,
    "inactive": OperatingStatus.OFFLINE,
}
"""A member's operating status by its current load-balancing state, when that state decides it."""


def member_operating_status(state: Mapping[str, Any]) -> OperatingStatus:
    """A member's operating status from its state view (target, current, health source, health)."""
    by_state = CURRENT_STATUS.get(str(state["current"]))
    if by_state is not None:
        return by_state
    health = str(state["health"])
    if state["health_source"] == "static":
        return OperatingStatus.NO_MONITOR
    if health == "ok":
        return OperatingStatus.ONLINE
    if health in AGENT_GONE or health == "unknown":
        return OperatingStatus.OFFLINE
    return OperatingStatus.ERROR


def vip_operating_status(states: Sequence[Mapping[str, Any]]) -> OperatingStatus:
    """A VIP's operating status from its members' state views (see the module's table)."""
    kept = [state for state in states if state["configured_target"] == "active"]
    if not kept:
        return OperatingStatus.OFFLINE
    serving = sum(member_operating_status(state) in SERVING for state in kept)
    if serving == len(kept):
        return OperatingStatus.ONLINE
    return OperatingStatus.DEGRADED if serving else OperatingStatus.ERROR


def member_status(state: Mapping[str, Any]) -> dict[str, Any]:
    """A member's node of the status tree: both statuses, health, current state and connections."""
    return {
        "name": state["member"],
        "provisioning_status": str(ProvisioningStatus.ACTIVE),
        "operating_status": str(member_operating_status(state)),
        "health_source": state["health_source"],
        "health": state["health"],
        "target": state["target"],
        "current": state["current"],
        "connections": state["connections"],
    }


def status_tree(vip: Vip, states: Sequence[Mapping[str, Any]], warnings: list[str]) -> dict[str, Any]:
    """``GET /v1/vips/{vip}/status``: the VIP's statuses with every member's node and the VIP's warnings."""
    return {
        "vip": {
            "name": vip.name,
            "address": vip.address,
            "port": vip.port,
            "provisioning_status": str(ProvisioningStatus.ACTIVE),
            "operating_status": str(vip_operating_status(states)),
            "members": [member_status(state) for state in states],
        },
        "warnings": warnings,
    }


def unit_warnings(vip: Vip) -> list[str]:
    """Warnings when ``vip`` weighs some members by agent-reported capacity and others by static weight."""
    reported = [member.name for member in vip.members if member.health == "agent"]
    static = [member.name for member in vip.members if member.health != "agent" and member.weight > 0]
    if not reported or not static:
        return []
    return [
        f"vip {vip.name!r} mixes units: members {', '.join(reported)} are weighed by the capacity their agents "
        f"report and members {', '.join(static)} by their static weight; the shares compare the two as one unit"
    ]


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7396): null removes a key, objects merge,
    anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
