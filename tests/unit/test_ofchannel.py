"""The OpenFlow channel's settings (issue 12 item 2): config, the CLI's manager options, the manager's defaults, and
connection state that a switch's reconnect does not let survive (ConnectionTable, Reconciler)."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.cli import build_parser, listener_args
from nlb_sdn.config import ConfigError, parse_config
from nlb_sdn.core.connections import ConnectionTable
from nlb_sdn.core.effects import DamVerb, Out
from nlb_sdn.core.model import Connection, Dispatch
from nlb_sdn.dam.atoms import route_key
from nlb_sdn.flows.builders import NatRoute
from nlb_sdn.framework import ListenerOptions, set_listener_defaults


def test_openflow_defaults_to_loopback_tcp_6653() -> None:
    openflow = parse_config({}).controller.openflow
    assert (openflow.listen_host, openflow.port, openflow.tls, openflow.allowed_dpids) == (
        "127.0.0.1",
        6653,
        None,
        None,
    )


@pytest.mark.parametrize(
    "section",
    [
        {"listen_host": "nowhere"},
        {"port": 0},
        {"tls": {"cert": "c.pem", "key": "k.pem"}},
        {"allowed_dpids": [0]},
        {"allowed_dpids": [1, 1]},
        {"listen": "0.0.0.0"},
    ],
)
def test_bad_openflow_settings_are_refused_naming_the_key(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"controller\.openflow"):
        parse_config({"controller": {"openflow": section}})


def test_the_listener_defaults_map_to_the_manager_options() -> None:
    tcp = set_listener_defaults(ListenerOptions("127.0.0.1", 6653))
    assert tcp["ofp_listen_host"] == "127.0.0.1" and tcp["ofp_tcp_listen_port"] == 6653
    assert tcp["ofp_ssl_listen_port"] is None and tcp["ctl_cert"] is None
    tls = set_listener_defaults(ListenerOptions("10.0.0.5", 6654, "/c.pem", "/k.pem", "/ca.pem"))
    assert tls == {
        "ofp_listen_host": "10.0.0.5",
        "ofp_tcp_listen_port": None,
        "ofp_ssl_listen_port": 6654,
        "ctl_privkey": "/k.pem",
        "ctl_cert": "/c.pem",
        "ca_certs": "/ca.pem",
    }
    set_listener_defaults(ListenerOptions("127.0.0.1", 6653))


def test_the_cli_passes_only_the_listener_options_given() -> None:
    parse = build_parser().parse_args
    assert listener_args(parse(["controller", "--config", "x.yaml"])) == []
    args = parse(["controller", "--config", "x", "--ofp-listen-host", "10.0.0.5", "--ofp-tcp-listen-port", "7000"])
    assert listener_args(args) == ["--ofp-listen-host", "10.0.0.5", "--ofp-tcp-listen-port", "7000"]
    tls = parse(["controller", "--config", "x", "--ctl-privkey", "k", "--ctl-cert", "c", "--ca-certs", "ca"])
    assert listener_args(tls)[0::2] == ["--ctl-privkey", "--ctl-cert", "--ca-certs", "--ofp-ssl-listen-port"]
    with pytest.raises(ValueError, match="go together"):
        listener_args(parse(["controller", "--config", "x", "--ctl-privkey", "k", "--ctl-cert", "c"]))


def conn(dpid: int, port: int, at: float, dispatch: Dispatch = Dispatch.CONTROLLER) -> Connection:
    route = NatRoute(
        "10.0.0.1", port, "10.0.0.100", 80, "02:4e:0a:00:00:64", "10.0.0.11", 8080, "00:00:00:00:00:11", 1, 15, 0
    )
    return Connection(dpid, "web", "h1", route, at, dispatch, syn_tag=1)


def key(port: int) -> tuple[str, int, str, int]:
    return ("10.0.0.1", port, "10.0.0.100", 80)


def test_connections_the_switch_does_not_hold_are_forgotten_after_its_reconnect() -> None:
    table, out = ConnectionTable(100), Out()
    table.add(key(1), conn(1, 1, 10.0), out)  # held by the switch
    table.add(key(2), conn(1, 2, 10.0), out)  # forged or stale: not held
    table.add(key(3), conn(2, 3, 10.0), out)  # another switch's
    table.add(key(4), conn(1, 4, 30.0), out)  # plumbed after the reconnect, before the flow stats reply
    table.add(key(5), conn(1, 5, 10.0, Dispatch.SWITCH), out)  # the switch's own
    out = Out()
    assert table.untrusted(1, {key(1)}, before=20.0, out=out) == 1
    assert set(table.by_key) == {key(1), key(3), key(4), key(5)} and key(2) not in table.half_open
    assert [(op.verb, op.key) for op in out.effects().dam] == [(DamVerb.DELETE, route_key(*key(2)))]


def test_established_connections_survive_their_switchs_reconnect_and_half_open_ones_do_not() -> None:
    table, out = ConnectionTable(100, half_open_timeout=3.0), Out()
    table.add(key(1), conn(1, 1, 10.0), out)  # its half-open check counted packets
    table.add(key(2), conn(1, 2, 10.0), out)  # never confirmed
    table.confirm(key(1))
    table.confirm(key(9))  # not tracked: nothing to confirm
    assert table.established == {key(1)} and key(1) not in table.half_open
    assert [k for k, _c in table.tracked_from(1)] == [key(1), key(2)]
    assert table.untrusted(1, {key(1)}, before=20.0, out=Out()) == 1, "restored first, the established one is seen"
    assert set(table.by_key) == {key(1)}
    table.forget(key(1))
    assert not table.established, "a forgotten connection is no longer established"


def test_half_open_connections_are_due_once_after_their_timeout() -> None:
    table, out = ConnectionTable(100, half_open_timeout=3.0), Out()
    table.add(key(1), conn(1, 1, 10.0), out)
    table.add(key(2), conn(1, 2, 10.0, Dispatch.SWITCH), out)
    table.add(key(3), conn(1, 3, 10.0))  # adopted or loaded: not a fresh SYN
    assert table.due_half_open(12.0, 10) == []
    assert [k for k, _c in table.due_half_open(13.0, 10)] == [key(1)]
    assert table.due_half_open(20.0, 10) == []
