"""Mininet lab topologies that also emit the static ``fabric`` section of the config (pure: no root needed)."""

from __future__ import annotations

from topologies.base import SWITCH_OPTS, LabTopo, lab_config
from topologies.fabric import FabricTopo
from topologies.single import SingleTopo

TOPOLOGIES: dict[str, type[LabTopo]] = {"single": SingleTopo, "fabric": FabricTopo}

__all__ = ["SWITCH_OPTS", "TOPOLOGIES", "FabricTopo", "LabTopo", "SingleTopo", "lab_config"]
