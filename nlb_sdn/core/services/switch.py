"""Switch dispatch: the forwarder picks the member from a select group; the controller only hears about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.model import PacketIn, VipState
from nlb_sdn.core.services.base import NatService
from nlb_sdn.flows.pipeline import Table

if TYPE_CHECKING:
    from nlb_sdn.core.switching import SwitchDispatchManager


class SwitchService(NatService):
    """A switch-dispatched VIP service: a segment that missed the learned entries goes round once more, no further."""

    punts_syns = False

    def __init__(self, ctx: CoreContext, state: VipState, switching: SwitchDispatchManager) -> None:
        super().__init__(ctx, state)
        self.switching = switching

    def packet_in(self, pkt: PacketIn, out: Out) -> None:
        """A miss in the switch-learned table is re-injected once; one from the controller's tables is classified."""
        if pkt.table_id == Table.SWITCH_CONNECTIONS:
            self.switching.punt(pkt, out)
        else:
            super().packet_in(pkt, out)
