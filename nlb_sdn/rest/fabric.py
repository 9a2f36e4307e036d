"""The fabric as a graph for ``GET /v1/fabric``: the static topology, which switches are connected, and the members
each host serves."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config


def fabric_view(config: Config, connected_dpids: list[int]) -> dict[str, Any]:
    """Switches (connected or not, with their master), links, hosts with their VIP members, and gateways."""
    lbu_id = config.controller.lbu_id
    connected = set(connected_dpids)
    switches = [
        {
            "name": switch.name,
            "dpid": switch.dpid,
            "connected": switch.dpid in connected,
            "master": lbu_id if switch.dpid in connected else None,
        }
        for switch in config.fabric.switches
    ]
    members: dict[str, list[str]] = {}
    for vip in config.vips:
        for member in vip.members:
            members.setdefault(str(member.address), []).append(f"{vip.name}/{member.name}")
    hosts = [{**host.model_dump(mode="json"), "members": members.get(str(host.ip), [])} for host in config.fabric.hosts]
    links = [link.model_dump(mode="json") for link in config.fabric.links]
    gateways = [gateway.model_dump(mode="json") for gateway in config.fabric.gateways]
    return {"lbu_id": lbu_id, "switches": switches, "links": links, "hosts": hosts, "gateways": gateways}
