"""Config builders: VIP web on a small three-switch fabric, and lab topologies' configs for driving the core."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, parse_config
from topologies import LabTopo, lab_config

WEB_VIP = "10.0.0.100"
FABRIC: dict[str, Any] = {
    "switches": [{"name": "s1", "dpid": 1}, {"name": "s2", "dpid": 2}, {"name": "s3", "dpid": 3}],
    "links": [{"a": "s1", "a_port": 10, "b": "s3", "b_port": 1}, {"a": "s2", "a_port": 10, "b": "s3", "b_port": 2}],
    "hosts": [
        {"name": "c1", "ip": "10.0.0.1", "mac": "00:00:00:00:00:01", "switch": "s1", "port": 1},
        {"name": "h1", "ip": "10.0.0.11", "mac": "00:00:00:00:00:11", "switch": "s2", "port": 1},
        {"name": "h2", "ip": "10.0.0.12", "mac": "00:00:00:00:00:12", "switch": "s2", "port": 2},
        {"name": "h3", "ip": "10.0.0.13", "mac": "00:00:00:00:00:13", "switch": "s2", "port": 3},
    ],
}
"""Client c1 on edge s1, backends h1..h3 on edge s2, both edges linked through s3."""


def web_member(index: int, **fields: Any) -> dict[str, Any]:
    """Member ``h<index>`` of VIP web (10.0.0.1<index>:80), with more member ``fields``."""
    return {"name": f"h{index}", "address": f"10.0.0.1{index}", "port": 80, **fields}


def web_config(members: list[dict[str, Any]], controller: dict[str, Any] | None = None, **vip: Any) -> Config:
    """VIP web (10.0.0.100:80) over ``members`` on FABRIC, with a ``controller`` section and more VIP fields."""
    return parse_config(
        {
            "controller": controller or {},
            "vips": [{"name": "web", "address": WEB_VIP, "port": 80, **vip, "members": members}],
            "fabric": FABRIC,
        }
    )


def weighted_web_config(weights: tuple[int, ...] = (1, 1, 2), max_connections: int = 100_000) -> Config:
    """VIP web over h1, h2, ... with ``weights`` on FABRIC, tracking at most ``max_connections`` connections."""
    return web_config(
        [web_member(i + 1, weight=w) for i, w in enumerate(weights)], {"max_connections": max_connections}
    )


def health_web_config(health: str = "static", states: tuple[str, str, str] = ("active", "active", "active")) -> Config:
    """VIP web over h1..h3 on FABRIC, every member with the ``health`` source, in the given target ``states``."""
    return web_config([web_member(i + 1, health=health, state=state) for i, state in enumerate(states)])


def topo_config(topo: LabTopo, vips: list[dict[str, Any]], **controller: Any) -> Config:
    """The lab config of ``topo`` with ``vips``, parsed, with the REST API off (tests drive the core directly)."""
    return parse_config(lab_config(topo, vips, rest={"enabled": False}, **controller))
