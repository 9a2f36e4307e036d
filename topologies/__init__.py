"""Lab topologies that emit the static ``fabric`` section of the config (pure: no root, no Mininet needed) and
become Mininet topologies for the lab (``LabTopo.mininet_topo``, the ``lab`` extra)."""

from __future__ import annotations

from topologies.base import SWITCH_OPTS, LabTopo, lab_config
from topologies.fabric import FabricTopo
from topologies.multihop import MultiHopTopo
from topologies.scaleout import ScaleoutTopo
from topologies.single import SingleTopo

TOPOLOGIES: dict[str, type[LabTopo]] = {
    "single": SingleTopo,
    "fabric": FabricTopo,
    "scaleout": ScaleoutTopo,
    "multihop": MultiHopTopo,
}

__all__ = [
    "SWITCH_OPTS",
    "TOPOLOGIES",
    "FabricTopo",
    "LabTopo",
    "MultiHopTopo",
    "ScaleoutTopo",
    "SingleTopo",
    "lab_config",
]
