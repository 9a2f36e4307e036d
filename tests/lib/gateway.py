"""Helpers of the gateway lab (``topologies/gateway.py``): the router's set-up, remote clients' runs, neighbours."""

from __future__ import annotations

import re
from typing import Any

from nlb_sdn.lab.harness import Lab, LabError
from topologies.gateway import REMOTE_CLIENT, ROUTER, GatewayTopo


def configure_router(lab: Lab) -> None:
    """Make the lab's router host forward between the client network and the fabric (routes, ``ip_forward``)."""
    router = lab.host(ROUTER)
    for command in GatewayTopo.router_commands():
        out = router.cmd(f"{command}; echo rc=$?")
        if "rc=0" not in out:
            raise LabError(f"{ROUTER}: {command!r} failed: {out.strip()}")


def remote_connections(lab: Lab, vip: str, count: int, concurrency: int = 4, timeout: int = 60) -> dict[str, Any]:
    """Open ``count`` connections from the remote client (behind the router) to ``vip``:80; every one must succeed."""
    summary = lab.run_client(
        REMOTE_CLIENT,
        ["connections", vip, "--port", 80, "--count", count, "--concurrency", concurrency, "--timeout", timeout],
    )
    assert summary["errors"] == 0 and summary["ok"] == count, summary
    return summary


def neighbour_mac(lab: Lab, host: str, address: str) -> str | None:
    """The MAC host ``host`` has resolved ``address`` to (its neighbour table), if any."""
    out = lab.host(host).cmd(f"ip neigh show {address}")
    found = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return found.group(1) if found else None
