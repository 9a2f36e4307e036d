"""The shell over a fake fabric: REST changes survive a controller restart (the state file), and so do the flows and
connections of a VIP created through REST, even when its id is not the one a fresh start would give it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.config import dump_config, parse_config, vip_mac
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import MAIN_DISPATCHER, ofp_event, ofproto_v1_3_parser as parser
from nlb_sdn.store import STATE_SUFFIX, StateError
from tests.fakeof.fabric import FakeFabric
from tests.fakeof.switch import TCP_ACK, tcp_packet
from tests.fakeof.test_pipeline import API, flow_stats_reply, make_config
from topologies import FabricTopo

SSH = "10.0.0.102"


def start(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A classifier app made as os-ken makes it, from the config file at ``path``."""
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    monkeypatch.setenv(CONFIG_ENV, str(path))
    return Classifier()


def connect(app: Any, fab: FakeFabric) -> None:
    """Every switch of the fake fabric (re)connects to ``app`` and answers its flow audit."""
    for dpid, dp in fab.dps.items():
        app.switch_features(ofp_event.EventOFPSwitchFeatures(parser.OFPSwitchFeatures(dp, datapath_id=dpid)))
        change = ofp_event.EventOFPStateChange(dp)
        change.state = MAIN_DISPATCHER
        app.state_change(change)
        app.flow_stats_reply(ofp_event.EventOFPFlowStatsReply(flow_stats_reply(dp)))


def rest_changes(app: Any) -> None:
    """What an operator does through REST: add VIP ssh (id 3), drop VIP api (id 2), reweigh and drain members."""
    data = dump_config(app.api.current_config())
    topo = FabricTopo()
    data["vips"].append(
        {
            "name": "ssh",
            "address": SSH,
            "port": 22,
            "members": [{"name": "h2", "address": topo.host_ip("h2"), "port": 22}],
        }
    )
    assert app.api.apply_config(parse_config(data), expected_version=1) == 2
    data["vips"] = [vip for vip in data["vips"] if vip["name"] != "api"]
    data["vips"][0]["members"][0]["weight"] = 7
    data["vips"][0]["members"][1]["state"] = "draining"
    assert app.api.apply_config(parse_config(data)) == 3


def test_rest_changes_and_the_connections_of_a_rest_vip_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config()
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(dump_config(config)))
    app = start(path, monkeypatch)
    assert (app.api.config_version(), app.lb.ctx.vips.ids()) == (1, {"web": 1, "api": 2})
    fab = FakeFabric(config)
    fab.clock(0.0)
    connect(app, fab)
    rest_changes(app)
    assert app.lb.ctx.vips.ids() == {"web": 1, "ssh": 3}
    first = fab.inject("c1", tcp_packet("00:00:00:00:00:01", vip_mac(SSH), "10.0.0.1", SSH, 40000, 22))
    [(dpid, pi)] = first.packet_ins
    app.packet_in(ofp_event.EventOFPPacketIn(pi.to_msg(fab.dps[dpid])))
    fab.collect()
    [connection] = app.api.connections(vip="ssh")

    restarted = start(path, monkeypatch)  # the first app is gone without a word (as after SIGKILL)
    assert restarted.api.config_version() == 3
    assert restarted.lb.ctx.vips.ids() == {"web": 1, "ssh": 3}, "a fresh start would give ssh id 2"
    web = restarted.api.current_config().vip("web")
    assert web is not None and [(m.weight, m.state) for m in web.members][:2] == [(7, "active"), (1, "draining")]
    connect(restarted, fab)
    [adopted] = restarted.api.connections(vip="ssh")
    assert {**adopted, "installed_at": 0} == {**connection, "installed_at": 0}, "the REST VIP's connection was adopted"
    assert fab.connection_flows(dpid, Table.CONNECTIONS), "its flows are kept"
    again = fab.inject(
        "c1", tcp_packet("00:00:00:00:00:01", vip_mac(SSH), "10.0.0.1", SSH, 40000, 22, tcp_flags=TCP_ACK)
    )
    assert again.packet_ins == [] and again.hosts == ["h2"], "the established connection still carries data"
    assert fab.inject("c1", tcp_packet("00:00:00:00:00:01", vip_mac(API), "10.0.0.1", API, 40001, 443)).nothing
    assert restarted.errors == {}


def test_a_corrupt_state_file_stops_the_start_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(dump_config(make_config())))
    state = Path(str(path) + STATE_SUFFIX)
    state.write_text('{"format": 1, "version": 4, "vips": [')
    with pytest.raises(StateError, match=f"^{state}: the state file is corrupt"):
        start(path, monkeypatch)
    assert state.read_text() == '{"format": 1, "version": 4, "vips": [', "the state file is left for the operator"


def test_controllers_on_one_redis_apply_the_same_versions_with_the_same_vip_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlb_sdn.apps.durable import EventStateChange
    from tests.lib.polling import poll_until
    from tests.lib.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        apps = []
        for lbu in (1, 2):
            data = dump_config(make_config())
            data["controller"].update(lbu_id=lbu, state={"backend": "redis", "url": server.url})
            path = tmp_path / f"lbu{lbu}.json"
            path.write_text(json.dumps(data))
            apps.append(start(path, monkeypatch))
        first, second = apps
        assert first.api.config_version() == second.api.config_version() == 1
        rest_changes(first)
        newer = poll_until(second.state.newer, 2.0, 0.02)
        assert newer is not None
        second.on_state_change(EventStateChange(*newer))
        assert second.api.config_version() == 3 and second.errors == {}
        assert second.lb.ctx.vips.ids() == first.lb.ctx.vips.ids() == {"web": 1, "ssh": 3}
        assert dump_config(second.api.current_config())["vips"] == dump_config(first.api.current_config())["vips"]
    finally:
        server.cleanup()
