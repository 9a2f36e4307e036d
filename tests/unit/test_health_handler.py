"""The H&L handler: eligibility by health source, directives, drain states, probes and revocation at once."""

from __future__ import annotations

from nlb_sdn.config import parse_config
from nlb_sdn.core.frames import TCP_ACK, TCP_RST, TCP_SYN, TcpSegment
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.health.handler import current_state, effective_target
from tests.lib.configs import health_web_config as config
from tests.lib.core import punt_syns as open_connections
from tests.lib.shell_double import ShellDouble


def test_target_and_current_state_rules():
    assert effective_target("active", "draining") == "draining"
    assert effective_target("inactive", "draining") == "inactive"
    assert effective_target("draining", None) == "draining"
    assert current_state("draining", 3) == "draining"
    assert current_state("draining", 0) == "drained"
    assert current_state("inactive", 0) == "inactive"


def test_draining_member_gets_no_new_connections_and_turns_drained():
    lb = ShellDouble(config())
    open_connections(lb, 30)
    assert lb.member_state("web", "h1")["current"] == "active"
    data = lb.config.model_dump()
    data["vips"][0]["members"][0]["state"] = "draining"
    lb.apply_config(parse_config(data), dpids=[], now=2.0)
    open_connections(lb, 300, first_port=41000, now=2.0)
    assert lb.stats()["selections"]["web"]["h1"] == 10
    state = lb.member_state("web", "h1")
    assert state["current"] == "draining" and state["connections"] == 10
    for key, conn in list(lb.connections_by_key.items()):
        if conn.member == "h1":
            forward = conn.route
            lb.handle_flow_removed(
                1,
                Table.CONNECTIONS,
                forward.cookie,
                {"ipv4_src": key[0], "tcp_src": key[1], "ipv4_dst": key[2], "tcp_dst": key[3]},
            )
    assert lb.member_state("web", "h1")["current"] == "drained"


def test_inactive_and_zero_weight_members_are_not_eligible():
    lb = ShellDouble(config(states=("inactive", "active", "active")))
    open_connections(lb, 40)
    assert set(lb.stats()["selections"]["web"]) == {"h2", "h3"}
    view = lb.allotment("web", now=1.0)
    assert view["values"] == {"h2": 50, "h3": 50}
    assert {c["name"]: c["reason"] for c in view["candidates"]}["h1"] == "target inactive"


def test_probe_members_are_unknown_until_a_probe_passes_then_fail_over():
    lb = ShellDouble(config(health="probe"))
    open_connections(lb, 3)
    assert lb.stats()["refused"] == {"no_member": 3}
    datagrams, probes = lb.tick(now=10.0)
    assert datagrams == [] and set(probes) == {2} and len(probes[2]) == 3
    for msg in probes[2]:
        assert msg.actions[0].port in (1, 2, 3)
    states = {key[1]: state for key, state in lb.health.prober.states.items()}
    for index, member in enumerate(("h1", "h2", "h3")):
        flags = TCP_SYN | TCP_ACK if member != "h1" else TCP_RST | TCP_ACK
        probe, target = states[member].outstanding, states[member].target
        assert probe is not None
        reply = TcpSegment(
            "00:00:00:00:00:1" + str(index + 1),
            f"10.0.0.1{index + 1}",
            "10.0.0.100",
            80,
            probe.port,
            flags,
            ack=(probe.isn + 1) % 2**32,
        )
        sent = lb.health.handle_probe_reply(reply, target.dpid, target.port, lambda m: True)
        assert sent is not None and len(sent) == (1 if member != "h1" else 0)
    assert lb.health.prober.health("web", "h2") == "ok"
    assert lb.health.prober.health("web", "h1") == "failed"
    open_connections(lb, 40, first_port=42000, now=10.5)
    assert set(lb.stats()["selections"]["web"]) == {"h2", "h3"}
    lb.tick(now=11.5)
    lb.tick(now=12.6)
    assert lb.health.prober.health("web", "h2") == "ok", "one missed probe is not enough"
    lb.tick(now=13.7)
    assert lb.health.prober.health("web", "h2") == "failed", "two unanswered probes (fall=2) fail a member"
    assert lb.health.prober.health("web", "h3") == "failed"
    open_connections(lb, 10, first_port=43000, now=13.8)
    assert lb.stats()["selections"]["web"] == {"h2": 20, "h3": 20}
    assert lb.stats()["refused"] == {"no_member": 13}


def test_unmatched_probe_reply_is_counted_and_ignored():
    lb = ShellDouble(config(health="probe"))
    reply = TcpSegment("00:00:00:00:00:11", "10.0.0.11", "10.0.0.100", 80, 65100, TCP_SYN | TCP_ACK)
    assert lb.probe_reply(reply) == []  # the packet-in path for table 0 TCP
    assert lb.stats()["dropped"] == {"probe_reply_unmatched": 1}


def test_no_allotment_for_agent_members_until_the_cache_is_warm():
    data = config().model_dump()
    data["controller"]["health"] = {"enabled": True, "key_file": "/dev/null"}
    for member in data["vips"][0]["members"]:
        member["health"] = "agent"
    lb = ShellDouble(parse_config(data), hl_key=b"k" * 32, now=100.0)
    open_connections(lb, 5, now=100.5)
    assert lb.stats()["refused"] == {"warming_up": 5}
    assert lb.stats()["connections"]["total"] == 0
    open_connections(lb, 2, first_port=41000, now=103.0)
    assert lb.stats()["refused"] == {"warming_up": 5, "no_member": 2}, "warm, but no agent has reported a row"
