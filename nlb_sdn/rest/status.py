"""Octavia-style status of VIPs and members (``GET /v1/vips/{vip}/status`` and every VIP and member answer), JSON
merge patches, and which members' agents report (the unit-mix warnings, ``nlb_sdn.health.units``).

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
``provisioning_status`` is ``ACTIVE``: a change is answered once it is applied. The plain answers (``GET /v1/vips``,
a VIP, its members, a member, and the answers of their changes) carry both statuses too (``vip_answer``,
``member_answer``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from nlb_sdn.config import Member, Vip
from nlb_sdn.events import EventKind, EventLog
from nlb_sdn.health.units import may_mix, unit_mix

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


def agent_reports(state: Mapping[str, Any]) -> bool:
    """Whether the member's agent reports its row now (so the allotment weighs it by the reported capacity)."""
    return state["health_source"] == "agent" and str(state["health"]) not in AGENT_GONE


def member_answer(member: Member, state: Mapping[str, Any]) -> dict[str, Any]:
    """A member as in the config file, with its provisioning and operating status from its state view."""
    return {
        **member.model_dump(mode="json"),
        "provisioning_status": str(ProvisioningStatus.ACTIVE),
        "operating_status": str(member_operating_status(state)),
    }


def vip_answer(vip: Vip, states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A VIP as in the config file, with its statuses and its members' (``states``: theirs, in the same order)."""
    return {
        **vip.model_dump(mode="json"),
        "provisioning_status": str(ProvisioningStatus.ACTIVE),
        "operating_status": str(vip_operating_status(states)),
        "members": [member_answer(member, state) for member, state in zip(vip.members, states, strict=True)],
    }


ANSWER_KEYS = ("provisioning_status", "operating_status", "warnings")
"""Keys only the answers carry: ignored in the body of a change, so that an answer can be sent back as one."""


def without_answer_keys(body: dict[str, Any]) -> dict[str, Any]:
    """A VIP or member body (or a merge patch of one) without the answer-only keys, in its members too."""
    kept = {key: value for key, value in body.items() if key not in ANSWER_KEYS}
    if isinstance(kept.get("members"), list):
        kept["members"] = [without_answer_keys(m) if isinstance(m, dict) else m for m in kept["members"]]
    return kept


class MemberStates(Protocol):
    """What the status views read from the REST backend."""

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """Target and current load-balancing state of one member (by name)."""
        ...


class StatusViews:
    """The REST answers of VIPs and members with their statuses and their VIP's unit-mix warnings."""

    def __init__(self, backend: MemberStates, events: EventLog) -> None:
        self.backend = backend
        self.events = events
        self.warned: dict[str, frozenset[str]] = {}
        """The configured mix each VIP last had, already recorded in the event log (once while it lasts)."""

    def warnings(self, vip: Vip, states: Iterable[Mapping[str, Any]]) -> list[str]:
        """The VIP's warnings (units that do not compare), given its agent members' state views. A mix only
        configured (no agent reports yet) is recorded in the event log once while it lasts; the core records a
        running one when it starts and stops (``core/units.py``)."""
        mix = unit_mix(vip, {str(state["member"]) for state in states if agent_reports(state)})
        if mix is None:
            self.warned.pop(vip.name, None)
            return []
        if not mix.running and mix.warning not in self.warned.get(vip.name, frozenset()):
            self.events.record(EventKind.WARNING, time.time(), vip.name, warning=mix.warning)
            self.warned[vip.name] = frozenset([mix.warning])
        return [mix.warning]

    def warned_answer(
        self, answer: dict[str, Any], vip: Vip, states: Iterable[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        """``answer`` with ``warnings`` added when the VIP has any (``states``: views already read; the agent
        members' are read when the VIP can mix units)."""
        known = {str(state["member"]): state for state in states}
        if may_mix(vip):
            for member in vip.members:
                if member.health == "agent" and member.name not in known:
                    known[member.name] = self.backend.member_state(vip.name, member.name)
        warnings = self.warnings(vip, known.values())
        return {**answer, "warnings": warnings} if warnings else answer

    def vip_view(self, vip: Vip) -> dict[str, Any]:
        """A VIP with its and its members' statuses, and its warnings."""
        states = [self.backend.member_state(vip.name, member.name) for member in vip.members]
        return self.warned_answer(vip_answer(vip, states), vip, states)

    def member_view(self, vip: Vip, position: int) -> dict[str, Any]:
        """The member at ``position`` of ``vip`` with its statuses, and its VIP's warnings."""
        member = vip.members[position]
        state = self.backend.member_state(vip.name, member.name)
        return self.warned_answer(member_answer(member, state), vip, [state])

    def state_view(self, vip: str, member: str) -> dict[str, Any]:
        """A member's state view with its Octavia-style statuses."""
        state = self.backend.member_state(vip, member)
        operating = member_operating_status(state)
        return {**state, "provisioning_status": str(ProvisioningStatus.ACTIVE), "operating_status": str(operating)}


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
