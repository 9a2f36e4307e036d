"""Session affinity in the core: client_ip and app sessions, per-session flows, route atoms and re-plumbing."""

from __future__ import annotations

import time

from nlb_sdn.config import parse_config
from nlb_sdn.core.effects import DamOp
from nlb_sdn.dam.atoms import route_key, session_key
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table
from nlb_sdn.signed import encode
from tests.frames import tcp_frame
from tests.lib.configs import web_config, web_member
from tests.lib.core import punt_syn as syn
from tests.lib.shell_double import ShellDouble

KEY = b"k" * 32


def config(
    affinity: str = "client_ip", granularity: str = "connection", prefix: int = 32, health: bool = False
) -> object:
    controller = {"health": {"enabled": True, "key_file": "/dev/null"}} if health else {}
    return web_config(
        [web_member(i) for i in (1, 2, 3)],
        controller,
        affinity=affinity,
        affinity_prefix=prefix,
        granularity=granularity,
    )


def member_of(lb: ShellDouble, client: str, port: int) -> str:
    return lb.connections_by_key[(client, port, "10.0.0.100", 80)].member


def test_client_ip_affinity_pins_a_client_while_clients_follow_the_allotment():
    lb = ShellDouble(config())
    for port in range(40000, 40100):
        syn(lb, "10.0.0.1", port)
    assert len({member_of(lb, "10.0.0.1", p) for p in range(40000, 40100)}) == 1
    members = set()
    for index in range(30):
        client = f"10.0.1.{index}"
        for port in range(40000, 40010):
            syn(lb, client, port)
        members.add(member_of(lb, client, 40000))
    assert members == {"h1", "h2", "h3"}
    selections = lb.stats()["selections"]["web"]
    assert sum(selections.values()) == 400
    sessions = lb.stats()["sessions"]
    assert sessions["total"] == 31 and sessions["affinity"]["created"] == 31
    key = session_key("client_ip", "web@10.0.0.1")
    assert DamOp.put(key, lb.sessions.sessions[key].to_data(), 600.0) in lb.dam_ops


def test_prefix_affinity_groups_a_subnet():
    lb = ShellDouble(config(prefix=24))
    syn(lb, "10.0.5.1", 40000)
    syn(lb, "10.0.5.200", 40000)
    assert member_of(lb, "10.0.5.1", 40000) == member_of(lb, "10.0.5.200", 40000)
    assert session_key("client_ip", "web@10.0.5.0_24") in lb.sessions.sessions


def test_session_on_an_inactive_member_is_dropped_but_draining_keeps_it():
    lb = ShellDouble(config())
    syn(lb, "10.0.0.1", 40000)
    owner = member_of(lb, "10.0.0.1", 40000)
    data = lb.config.model_dump()
    for member in data["vips"][0]["members"]:
        if member["name"] == owner:
            member["state"] = "draining"
    lb.apply_config(parse_config(data), dpids=[], now=2.0)
    syn(lb, "10.0.0.1", 40001, now=2.0)
    assert member_of(lb, "10.0.0.1", 40001) == owner, "a draining member keeps its sessions by default"
    for member in data["vips"][0]["members"]:
        if member["name"] == owner:
            member["state"] = "inactive"
    lb.apply_config(parse_config(data), dpids=[], now=3.0)
    syn(lb, "10.0.0.1", 40002, now=3.0)
    assert member_of(lb, "10.0.0.1", 40002) != owner
    assert lb.stats()["sessions"]["affinity"]["dropped_ineligible"] == 1


def test_per_session_flows_cover_every_connection_of_the_client():
    lb = ShellDouble(config(granularity="session"))
    msgs = syn(lb, "10.0.0.1", 40000)
    flows = [m for m in msgs if type(m).__name__ == "OFPFlowMod"]
    assert len(flows) == 2 and all(Cookie.decode(m.cookie).kind == CookieKind.SESSION for m in flows)
    forward = dict(flows[0].match.items())
    assert forward["ipv4_src"] == "10.0.0.1" and "tcp_src" not in forward
    assert flows[0].priority == 150 and flows[0].idle_timeout == 60
    assert lb.stats()["connections"]["total"] == 0 and lb.stats()["sessions"]["session_flows"] == 1
    assert lb.member_state("web", next(iter(lb.session_flows.values())))["connections"] == 1
    lb.handle_flow_removed(1, Table.CONNECTIONS, flows[0].cookie, forward)
    assert lb.stats()["sessions"]["session_flows"] == 0


def test_app_sessions_reported_by_an_agent_pin_the_client_until_session_down(tmp_path):
    lb = ShellDouble(config(affinity="app", health=True), hl_key=KEY, now=time.time())
    now = time.time()
    body = {
        "host_id": "h2",
        "stype": "app",
        "sid": "S1",
        "vip": "10.0.0.100",
        "vport": 80,
        "proto": "tcp",
        "pip": "10.0.0.12",
        "pport": 80,
        "client": "10.0.0.1",
        "ttl_s": 600,
    }
    lb.handle_datagram(encode(KEY, "session_up", "h2", 1, now, body), ("10.99.0.12", 9101), now)
    assert lb.stats()["sessions"]["affinity"].get("app_up") == 1, lb.stats()["health"]["messages"]
    for port in range(40000, 40050):
        syn(lb, "10.0.0.1", port, now=now)
    assert {member_of(lb, "10.0.0.1", p) for p in range(40000, 40050)} == {"h2"}
    down = {"host_id": "h2", "stype": "app", "sid": "S1", "vip": "10.0.0.100", "vport": 80, "client": "10.0.0.1"}
    lb.handle_datagram(encode(KEY, "session_down", "h2", 2, now, down), ("10.99.0.12", 9101), now)
    for port in range(41000, 41030):
        syn(lb, "10.0.0.1", port, now=now)
    assert {member_of(lb, "10.0.0.1", p) for p in range(41000, 41030)} == {"h1", "h2", "h3"}


def test_route_atoms_linger_after_idle_and_replumb_a_late_segment():
    lb = ShellDouble(config(affinity="none"))
    msgs = syn(lb, "10.0.0.1", 40000)
    key = ("10.0.0.1", 40000, "10.0.0.100", 80)
    assert (lb.dam_ops[-1].verb, lb.dam_ops[-1].key) == ("put", route_key(*key))
    member = member_of(lb, "10.0.0.1", 40000)
    lb.handle_flow_removed(1, Table.CONNECTIONS, msgs[0].cookie, dict(msgs[0].match.items()), idle=True, now=5.0)
    assert lb.dam_ops[-1] == DamOp.touch(route_key(*key), 120.0)
    late = tcp_frame("10.0.0.1", 40000, "10.0.0.100", 80, flags=0x10)
    replumbed = lb.handle_packet_in(2, 1, late, len(late), Table.CONNECTIONS, now=10.0)
    assert [type(m).__name__ for m in replumbed] == ["OFPFlowMod", "OFPFlowMod", "OFPPacketOut"]
    assert member_of(lb, "10.0.0.1", 40000) == member and lb.stats()["packet_in"]["replumb"] == 1
    lb.handle_flow_removed(2, Table.CONNECTIONS, msgs[0].cookie, dict(msgs[0].match.items()), idle=False, now=11.0)
    assert lb.dam_ops[-1] == DamOp.delete(route_key(*key))
    assert lb.handle_packet_in(2, 1, late, len(late), Table.CONNECTIONS, now=12.0) == []
    assert lb.stats()["dropped"] == {"orphan": 1}
