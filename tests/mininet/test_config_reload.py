"""Config reload in the lab: an edited config file is applied by SIGHUP to the controller process (a new fabric host's
forwarding entries appear on the switches) and by ``POST /v1/config/reload?vips=file`` (a VIP's idle timeout); an
invalid edit leaves the controller running unchanged, with every problem logged."""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import needs_lab, web_vip
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

NEW_HOST = {"name": "h9", "ip": "10.0.0.209", "mac": "00:00:00:00:02:09", "switch": "s2", "port": 40}
"""A host the file gains (no Mininet host: its forwarding entries are what the reload makes)."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    topo = FabricTopo(clients=1, backends=2)
    config = lab_config(topo, [web_vip(topo, idle_timeout=15)])
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("reload-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def edit(lab: Lab, change: Any) -> dict[str, Any]:
    """Rewrite the lab's config file with ``change(data)`` applied to a copy of its data; the new data."""
    path = Path(lab.config_path)
    data = yaml.safe_load(path.read_text())
    edited = copy.deepcopy(data)
    change(edited)
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    return edited


def sighup(lab: Lab) -> None:
    """Send SIGHUP to the running controller process."""
    assert lab.controller_proc is not None and lab.controller_proc.poll() is None
    lab.controller_proc.send_signal(signal.SIGHUP)


def reloads(lab: Lab, outcome: str) -> list[dict[str, Any]]:
    """The ``config_reload`` events with ``outcome``."""
    events = lab.rest("GET", "/v1/events?kind=config_reload")["events"]
    return [event for event in events if event["outcome"] == outcome]


def forwards_to(lab: Lab, switch: str, mac: str) -> bool:
    """Whether ``switch`` holds a forwarding entry toward ``mac``."""
    return any(f"dl_dst={mac}" in flow for flow in lab.dump_flows(switch))


def test_sighup_applies_a_fabric_edit_and_the_vips_come_from_the_store(lab: Lab) -> None:
    assert not forwards_to(lab, "s1", NEW_HOST["mac"])

    def change(data: dict[str, Any]) -> None:
        data["fabric"]["hosts"].append(NEW_HOST)
        data["vips"][0]["idle_timeout"] = 33

    edit(lab, change)
    sighup(lab)
    wait_for(lambda: all(forwards_to(lab, s, NEW_HOST["mac"]) for s in ("s1", "s2")), timeout=15, what="h9 plumbed")
    [event] = reloads(lab, "applied")
    assert event["changed"] == ["fabric.hosts[h9]"] and event["vips"] == "store"
    assert lab.rest("GET", "/v1/vips/web")["idle_timeout"] == 15, "SIGHUP keeps the store's VIPs"
    answer = lab.rest("POST", "/v1/config/reload?vips=file")
    assert answer["changed"] == ["vips[web]"]
    assert lab.rest("GET", "/v1/vips/web")["idle_timeout"] == 33


def test_an_invalid_edit_leaves_the_controller_running_unchanged(lab: Lab) -> None:
    before = lab.rest("GET", "/v1/config")

    def change(data: dict[str, Any]) -> None:
        data["fabric"]["hosts"] = data["fabric"]["hosts"][:-1]
        data["controller"]["lbu_id"] = "one"

    edit(lab, change)
    sighup(lab)
    wait_for(lambda: reloads(lab, "invalid"), timeout=15, what="the invalid reload recorded")
    lab.check_controller()
    assert lab.rest("GET", "/v1/config") == before
    assert forwards_to(lab, "s1", NEW_HOST["mac"])
    log = Path(lab.controller_log).read_text()
    assert "refused, nothing changed" in log and "controller.lbu_id" in log
