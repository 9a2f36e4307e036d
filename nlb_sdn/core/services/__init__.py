"""Service kinds of VIP services, one class per kind, chosen once per VIP model by :func:`service_for`."""

from __future__ import annotations

from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.l7 import RouterPicker
from nlb_sdn.core.model import Dispatch, Mode, PacketIn, VipState
from nlb_sdn.core.services.base import NatService, SessionService
from nlb_sdn.core.services.l7 import L7Service
from nlb_sdn.core.services.switch import SwitchService
from nlb_sdn.core.services.tunnel import TunnelService
from nlb_sdn.core.switching import SwitchDispatchManager

Service = NatService
"""Every service kind is a :class:`NatService` refined: the interface the dispatcher uses."""

__all__ = [
    "L7Service",
    "NatService",
    "PacketIn",
    "Service",
    "SessionService",
    "SwitchService",
    "TunnelService",
    "service_for",
]


def service_for(ctx: CoreContext, state: VipState, switching: SwitchDispatchManager, picker: RouterPicker) -> Service:
    """The service kind of a VIP service's current model."""
    if state.dispatch == Dispatch.SWITCH:
        return SwitchService(ctx, state, switching)
    if state.mode == Mode.L7:
        return L7Service(ctx, state, picker)
    if state.mode == Mode.TUNNEL:
        return TunnelService(ctx, state)
    if state.vip.granularity == "session":
        return SessionService(ctx, state)
    return NatService(ctx, state)
