"""Refused new connections: counted under ``refused`` in the stats and recorded (coalesced) in the event log."""

from __future__ import annotations

from enum import StrEnum

from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.model import PacketIn
from nlb_sdn.events import EventKind


class RefusalReason(StrEnum):
    """Why a new connection was not admitted."""

    CAP = "cap"
    SOURCE_QUOTA = "source_quota"
    NO_ROUTER = "no_router"
    NO_MEMBER = "no_member"


def record_refusal(ctx: CoreContext, vip: str, reason: RefusalReason, pkt: PacketIn) -> None:
    """Record a refused connection in the event log; repeats of (VIP, reason) within a second only count."""
    client = f"{pkt.segment.src_ip}:{pkt.segment.src_port}"
    ctx.events.record_coalesced(
        EventKind.CONNECTION_REFUSED, pkt.now, vip, reason.value, reason=reason.value, client=client
    )


def refuse(ctx: CoreContext, vip: str, reason: RefusalReason, pkt: PacketIn) -> None:
    """Count a refused connection (``refused`` in the stats) and record it."""
    ctx.counters.refused[reason.value] += 1
    record_refusal(ctx, vip, reason, pkt)
