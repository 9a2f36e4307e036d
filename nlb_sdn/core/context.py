"""What the core's managers share: the model in use, the fabric, health, the VIP registry, tables and counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from nlb_sdn.config import Config
from nlb_sdn.core.affinity import AffinityManager
from nlb_sdn.core.connections import ConnectionTable
from nlb_sdn.core.fabric import FabricView
from nlb_sdn.core.model import Counters
from nlb_sdn.core.vips import VipRegistry
from nlb_sdn.events import EventLog
from nlb_sdn.health.handler import HealthHandler


@dataclass
class CoreContext:
    """The state every manager may read; each manager owns and changes only its own part."""

    config: Config
    health: HealthHandler
    counters: Counters
    fabric: FabricView
    vips: VipRegistry
    table: ConnectionTable
    affinity: AffinityManager
    events: EventLog = field(default_factory=EventLog)
    """What operators see in ``GET /v1/events``: the core records member changes and refused connections."""

    @classmethod
    def build(cls, config: Config, health: HealthHandler) -> CoreContext:
        """A context for ``config``'s LBU instance, with empty tables (the config is applied afterwards)."""
        counters, fabric = Counters(), FabricView()
        origin = f"lbu:{config.controller.lbu_id}"
        return cls(
            Config(),
            health,
            counters,
            fabric,
            VipRegistry(),
            ConnectionTable(config.controller.max_connections),
            AffinityManager(origin, health, fabric, counters),
        )

    @property
    def lbu_id(self) -> int:
        """This LBU instance's id, carried in every cookie."""
        return self.config.controller.lbu_id

    @property
    def origin(self) -> str:
        """This LBU instance's name as the origin of the atoms it writes."""
        return self.affinity.origin
