"""A switch-dispatched VIP keeps its select group's buckets when its switches reconnect to a restarted controller.

The soak found the group re-created empty while the fresh controller's H&L cache was cold (no agent heard yet), so
new connections timed out until the first warm tick refilled it. The switches must keep dispatching to the members
they had, and the first warm tick must still send the controller's group.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.config import Config, dump_config, parse_config
from nlb_sdn.flows.dispatch import SLOTS
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import ofp_event, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.fakeof.fabric import FakeFabric
from tests.fakeof.test_dispatch import Net, make_config
from tests.fakeof.test_durable_restart import connect, start
from tests.lib.shell_double import ShellDouble

HB_PERIOD = 1.0
RESTART = 100.0
"""When the fresh controller starts: its H&L cache is warm at RESTART + 2 × HB_PERIOD (no agent heard)."""


def agent_config() -> Config:
    """VIP web as ``make_config`` has it, with h3 health-checked by its agent: its allotment waits for a warm cache."""
    data = make_config().model_dump()
    data["controller"]["health"] = {"enabled": True, "key_file": "/dev/null", "hb_period": HB_PERIOD}
    data["vips"][0]["members"][2]["health"] = "agent"
    return parse_config(data)


def buckets(fab: FakeFabric) -> dict[int, int]:
    """Per switch, the number of buckets of VIP web's group (-1: no group)."""
    return {dpid: len(dp.switch.groups[1].buckets) if 1 in dp.switch.groups else -1 for dpid, dp in fab.dps.items()}


def group_mods(msgs: list[Any]) -> list[Any]:
    """The group-mods among ``msgs``."""
    return [msg for msg in msgs if isinstance(msg, parser.OFPGroupMod)]


def restart(net: Net) -> ShellDouble:
    """A fresh controller (cold cache) to which every switch of ``net`` reconnects; the group is watched throughout."""
    fresh = ShellDouble(agent_config(), hl_key=b"k" * 32, now=RESTART)
    ports = itertools.count(39000)
    for dpid, dp in net.fab.dps.items():
        for msg in fresh.switch_connected(dpid, RESTART).to(dpid):
            net.fab.send(dpid, [msg])
            assert 1 not in dp.switch.groups or len(dp.switch.groups[1].buckets) == SLOTS, msg
            assert net.syn("c1", next(ports)).hosts, f"a new connection found no member after {msg}"
        net.fab.send(dpid, fresh.reconcile(dpid, flow_entries(dp), RESTART, after_connect=True))
    return fresh


def flow_entries(dp: Any) -> list[tuple[int, int, dict[str, Any], int]]:
    """A switch's flows as the controller's flow audit reads them."""
    return [(e.table_id, e.priority, dict(e.match.items()), e.cookie) for e in dp.switch.dump_flows()]


def test_a_reconnecting_switch_keeps_its_group_while_the_fresh_controllers_cache_is_cold() -> None:
    net = Net(make_config())
    dispatching = {dpid for dpid, count in buckets(net.fab).items() if count == SLOTS}
    assert dispatching == set(net.fab.dps)
    learned_before = {dpid: len(dp.switch.dump_flows(Table.SWITCH_CONNECTIONS)) for dpid, dp in net.fab.dps.items()}
    fresh = restart(net)
    assert buckets(net.fab) == dict.fromkeys(net.fab.dps, SLOTS)
    assert {e.code_name for dp in net.fab.dps.values() for e in dp.answered} == {"OFPGMFC_GROUP_EXISTS"}
    served = {net.syn("c1", 40000 + n).hosts[0] for n in range(60)}
    assert served == {"h1", "h2", "h3"}, "the switches dispatch to the members they had, with no controller"
    _, cold = fresh.tick(RESTART + 0.5, net.fab.dps)
    assert not any(group_mods(msgs) for msgs in cold.values()), "no group is sent while the members are unknown"
    assert buckets(net.fab) == dict.fromkeys(net.fab.dps, SLOTS)
    _, warm = fresh.tick(RESTART + 2 * HB_PERIOD + 0.1, net.fab.dps)
    sent = {dpid: [m.command for m in group_mods(msgs)] for dpid, msgs in warm.items()}
    assert sent == {dpid: [ofp.OFPGC_MODIFY] for dpid in net.fab.dps}, "the first warm tick sends the group"
    net.fab.send_all(warm)
    assert fresh.dispatch_shares("web") == {"h1": 34, "h2": 30, "h3": 0}, "h3's agent was never heard"
    served = {net.syn("c1", 41000 + n).hosts[0] for n in range(60)}
    assert served == {"h1", "h2"}
    assert all(
        len(dp.switch.dump_flows(Table.SWITCH_CONNECTIONS)) >= learned_before[d] for d, dp in net.fab.dps.items()
    )


def test_a_fresh_switch_gets_an_empty_group_while_cold_and_the_first_warm_tick_fills_it() -> None:
    fresh = ShellDouble(agent_config(), hl_key=b"k" * 32, now=RESTART)
    fab = FakeFabric(agent_config())
    for dpid in fab.dps:
        fab.send(dpid, fresh.switch_connected(dpid, RESTART).to(dpid))
    assert buckets(fab) == dict.fromkeys(fab.dps, 0)
    assert not any(dp.answered for dp in fab.dps.values())
    _, warm = fresh.tick(RESTART + 2 * HB_PERIOD + 0.1, fab.dps)
    fab.send_all(warm)
    assert buckets(fab) == dict.fromkeys(fab.dps, SLOTS)


def test_a_switch_reconnecting_to_a_warm_controller_gets_the_current_group() -> None:
    net = Net(make_config())
    net.apply(make_config(weights=(1, 0, 0)))
    for dp in net.fab.dps.values():
        dp.switch.groups[1] = parser.OFPGroupMod(dp, ofp.OFPGC_ADD, ofp.OFPGT_SELECT, 1, [])  # a stale group
    for dpid in net.fab.dps:
        net.fab.send(dpid, net.lb.switch_connected(dpid, 2.0).to(dpid))
    assert buckets(net.fab) == dict.fromkeys(net.fab.dps, SLOTS)
    assert {net.syn("c1", 40000 + n).hosts[0] for n in range(20)} == {"h1"}


def test_the_shell_counts_a_kept_group_apart_from_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(dump_config(make_config())))
    first = start(path, monkeypatch)
    fab = FakeFabric(make_config())
    connect(first, fab)
    assert buckets(fab) == dict.fromkeys(fab.dps, SLOTS)
    restarted = start(path, monkeypatch)  # the first app is gone without a word (as after SIGKILL)
    connect(restarted, fab)
    assert buckets(fab) == dict.fromkeys(fab.dps, SLOTS)
    for dp in fab.dps.values():
        [answer] = dp.answered
        restarted.error_msg(ofp_event.EventOFPErrorMsg(parser.OFPErrorMsg(dp, type_=answer.type, code=answer.code)))
    assert restarted.errors == {}
    assert restarted.stats()["openflow"]["groups_kept"] == {f"{dpid:016x}": 1 for dpid in fab.dps}
