"""The OpenFlow channel (issue 12 item 2) through the Classifier shell on the fake fabric: which switches may connect,
and connection state that a switch (or a client claiming its dpid) leaves behind when it goes or comes back."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from nlb_sdn.config import dump_config
from nlb_sdn.dam.atoms import ROUTE_PREFIX
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import (
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    ofp_event,
    ofproto_v1_3 as ofp,
    ofproto_v1_3_parser as parser,
)
from tests.fakeof.fabric import FabricDatapath, FakeFabric
from tests.fakeof.switch import TCP_ACK, tcp_packet
from tests.fakeof.test_pipeline import VIP, VIP_MAC, make_config

STRAY_DPID = 0x99


class Clock:
    """Stands in for the shell's ``time`` module."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        """The current fake time."""
        return self.now


class ClosableDatapath(FabricDatapath):
    """A fabric datapath whose connection the shell may close."""

    closed = False

    def close(self) -> None:
        """Record the close (os-ken's Datapath.close shuts the socket)."""
        self.closed = True


def answer(dp: Any, request: Any) -> Any:
    """The flow stats reply a switch sends to ``request`` (packet counts included, same xid)."""
    wanted = dict(request.match.items())
    entries = [
        e
        for e in dp.switch.dump_flows(None if request.table_id == ofp.OFPTT_ALL else request.table_id)
        if all(dict(e.match).get(k) == v for k, v in wanted.items())
    ]
    body = [
        parser.OFPFlowStats(
            e.table_id, 0, 0, e.priority, 0, 0, 0, e.cookie, e.n_packets, 0, parser.OFPMatch(**dict(e.match)), []
        )
        for e in entries
    ]
    reply = parser.OFPFlowStatsReply(dp, body=body, flags=0)
    reply.xid = request.xid
    return reply


HALF_OPEN_TIMEOUT = 3.0
"""Seconds after a SYN before its connection's handshake is checked, in these tests."""


class Shell:
    """A Classifier made as os-ken makes it, on the fake fabric, with a fake clock."""

    def __init__(self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from nlb_sdn.apps import classifier

        self.clock = Clock()
        monkeypatch.setattr(classifier, "time", self.clock)
        config = make_config(api=False)
        path = tmp_path / "nlb.json"
        data = dump_config(config)
        data["controller"]["openflow"]["half_open_timeout"] = HALF_OPEN_TIMEOUT  # the check is opt-in
        path.write_text(json.dumps(data))
        monkeypatch.setenv(classifier.CONFIG_ENV, str(path))
        self.app = classifier.Classifier()
        self.fab = FakeFabric(config)
        self.fab.clock(0.0)

    def connect(self, dp: Any) -> None:
        """Features, main state and the reply to the full flow stats request, as a (re)connecting switch sends."""
        self.app.switch_features(ofp_event.EventOFPSwitchFeatures(parser.OFPSwitchFeatures(dp, datapath_id=dp.id)))
        change = ofp_event.EventOFPStateChange(dp)
        change.state = MAIN_DISPATCHER
        self.app.state_change(change)
        requests = [m for m in dp.sent if isinstance(m, parser.OFPFlowStatsRequest)]
        if requests:
            self.app.flow_stats_reply(ofp_event.EventOFPFlowStatsReply(answer(dp, requests[-1])))

    def disconnect(self, dp: Any) -> None:
        """The datapath's connection closed."""
        change = ofp_event.EventOFPStateChange(dp)
        change.state = DEAD_DISPATCHER
        self.app.state_change(change)

    def syn(self, sport: int, datapath: Any = None) -> Any:
        """c1's SYN to the VIP as a packet-in, from its switch or from ``datapath`` claiming that switch's dpid."""
        delivery = self.fab.inject("c1", tcp_packet("00:00:00:00:00:01", VIP_MAC, "10.0.0.1", VIP, sport, 80))
        [(dpid, pi)] = delivery.packet_ins
        self.app.packet_in(ofp_event.EventOFPPacketIn(pi.to_msg(datapath or self.fab.dps[dpid])))
        return self.fab.dps[dpid]

    def clients(self) -> set[str]:
        """The tracked connections' clients."""
        return {conn["client"] for conn in self.app.api.connections()}


@pytest.fixture
def shell(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Shell:
    shell = Shell(tmp_path, monkeypatch)
    for dp in shell.fab.dps.values():
        shell.connect(dp)
    return shell


def test_a_switch_outside_the_fabric_gets_nothing_and_is_logged_once(
    shell: Shell, caplog: pytest.LogCaptureFixture
) -> None:
    stray = ClosableDatapath(STRAY_DPID, shell.fab)
    with caplog.at_level(logging.WARNING, logger="nlb_sdn.classifier"):
        shell.connect(stray)
        shell.connect(stray)
    assert stray.closed and stray.sent == [] and stray.switch.flow_count() == 0, "no pipeline, connection closed"
    assert STRAY_DPID not in shell.app.datapaths
    assert [r for r in caplog.records if "may not connect" in r.getMessage()] != []
    assert len([r for r in caplog.records if "may not connect" in r.getMessage()]) == 1, "logged once"
    assert shell.app.stats()["openflow"]["refused"] == {f"{STRAY_DPID:016x}": 2}
    shell.syn(40000, datapath=stray)
    assert shell.app.api.connections() == [], "its packet-ins are not classified"
    assert stray.sent == []


def test_an_explicit_allowlist_replaces_the_fabric(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlb_sdn.apps import classifier

    data = dump_config(make_config(api=False))
    data["controller"]["openflow"] = {"allowed_dpids": [STRAY_DPID]}
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(classifier.CONFIG_ENV, str(path))
    app = classifier.Classifier()
    assert app.lb.switch_allowed(STRAY_DPID) and not app.lb.switch_allowed(1)


def test_forged_connections_do_not_survive_the_real_switch_reconnecting(shell: Shell) -> None:
    real = shell.syn(41000)
    real_client = next(iter(shell.clients()))
    # A client claims the real switch's dpid and forges SYN packet-ins.
    forger = ClosableDatapath(real.id, shell.fab)
    shell.connect(forger)
    for sport in range(42000, 42005):
        shell.syn(sport, datapath=forger)
    assert len(shell.clients()) == 6
    shell.app.dam_writes.clear()
    shell.clock.now += 1
    shell.connect(real)  # the real switch reconnects: its flows show only the real connection
    assert shell.clients() == {real_client}
    deleted = {op.key for op in shell.app.dam_writes if op.key.startswith(ROUTE_PREFIX) and op.verb == "delete"}
    assert len(deleted) == 5, "the forged connections' route atoms are deleted"
    assert shell.app.stats()["dropped"]["not_on_switch"] == 5


def test_a_forger_that_hung_up_leaves_nothing_once_the_real_switch_reconnects(shell: Shell) -> None:
    real = shell.syn(41000)
    forger = ClosableDatapath(real.id, shell.fab)
    shell.connect(forger)
    shell.syn(42000, datapath=forger)
    shell.disconnect(forger)
    shell.disconnect(real)
    assert len(shell.clients()) == 2, "a switch that only disconnects goes on forwarding (fail_mode=secure)"
    shell.clock.now += 1
    shell.connect(real)
    assert shell.clients() == {"10.0.0.1:41000"}, "the real switch's flows keep its own connection only"


def test_a_half_open_connection_goes_after_its_check_and_an_open_one_stays(shell: Shell) -> None:
    dp = shell.syn(41000)
    shell.syn(41001)
    assert len(shell.clients()) == 2
    flows = dp.switch.flow_count(Table.CONNECTIONS), dp.switch.flow_count(Table.REVERSE)
    ack = tcp_packet("00:00:00:00:00:01", VIP_MAC, "10.0.0.1", VIP, 41001, 80, TCP_ACK)
    assert shell.fab.inject("c1", ack).delivered, "the handshake of 41001 goes on through its entry"
    shell.clock.now += 1
    shell.app.on_tick(None)
    assert not [m for m in dp.sent[-3:] if isinstance(m, parser.OFPFlowStatsRequest) and m.table_id == 1]
    shell.clock.now += 5
    before = len(dp.sent)
    shell.app.on_tick(None)
    checks = [m for m in dp.sent[before:] if isinstance(m, parser.OFPFlowStatsRequest)]
    assert len(checks) == 2 and all(m.table_id == Table.CONNECTIONS for m in checks)
    for request in checks:
        shell.app.flow_stats_reply(ofp_event.EventOFPFlowStatsReply(answer(dp, request)))
    assert shell.clients() == {"10.0.0.1:41001"}
    assert (dp.switch.flow_count(Table.CONNECTIONS), dp.switch.flow_count(Table.REVERSE)) == (
        flows[0] - 1,
        flows[1] - 1,
    ), "the half-open connection's entries are deleted"
    assert shell.app.stats()["dropped"]["half_open"] == 1
    shell.app.on_tick(None)
    assert not [m for m in dp.sent[before + 2 :] if isinstance(m, parser.OFPFlowStatsRequest)], "checked once"
