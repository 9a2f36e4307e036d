"""Controller probe replies count only from the member's switch port and with the probe's ack number (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.core.frames import TCP_ACK, TCP_RST, TCP_SYN, TcpSegment, parse_frame, tcp_frame
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.health import probes
from nlb_sdn.health.probes import Outstanding, ProbeState
from tests.lib.configs import health_web_config
from tests.lib.shell_double import ShellDouble

SYN_ACK = TCP_SYN | TCP_ACK
RST_ACK = TCP_RST | TCP_ACK


def probed(now: float = 10.0) -> tuple[ShellDouble, dict[int, list[Any]]]:
    """A core with three probe members, just after it sent each of them a probe."""
    lb = ShellDouble(health_web_config(health="probe"))
    _, sent = lb.tick(now=now)
    return lb, sent


def state_of(lb: ShellDouble, member: str) -> ProbeState:
    """The prober's state of one member of VIP web."""
    return lb.health.prober.states[("web", member)]


def in_flight(lb: ShellDouble, member: str) -> Outstanding:
    """The member's outstanding probe."""
    probe = state_of(lb, member).outstanding
    assert probe is not None
    return probe


def reply(
    lb: ShellDouble,
    member: str,
    flags: int,
    *,
    ack_delta: int = 1,
    where: tuple[int, int] | None = None,
    now: float = 10.1,
) -> list[Any]:
    """Punt the member's reply to its probe through table 0, from its attachment unless ``where`` says otherwise."""
    target, probe = state_of(lb, member).target, in_flight(lb, member)
    frame = tcp_frame(
        target.member_mac,
        target.vip_mac,
        target.member_address,
        target.vip_ip,
        target.member_port,
        probe.port,
        flags,
        seq=12345,
        ack=(probe.isn + ack_delta) % 2**32,
    )
    dpid, in_port = where or (target.dpid, target.port)
    return lb.handle_packet_in(dpid, in_port, frame, len(frame), Table.CLASSIFY, now)


def dropped(lb: ShellDouble) -> dict[str, int]:
    """The core's drop counters of probe replies."""
    return {reason: n for reason, n in lb.stats()["dropped"].items() if reason.startswith("probe_reply")}


def test_the_probe_syn_carries_a_random_isn_and_the_reset_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    isns = iter([0xFFFFFFFF, 7, 8])
    monkeypatch.setattr(probes.secrets, "randbits", lambda bits: next(isns))
    lb, sent = probed()
    probe = in_flight(lb, "h1")
    syn = parse_frame(sent[2][0].data, len(sent[2][0].data))
    assert isinstance(syn, TcpSegment) and syn.flags == TCP_SYN
    assert (syn.src_port, syn.seq) == (probe.port, probe.isn) == (probe.port, 0xFFFFFFFF)
    [reset] = reply(lb, "h1", SYN_ACK)  # ack wraps to 0
    rst = parse_frame(reset.data, len(reset.data))
    assert isinstance(rst, TcpSegment) and rst.flags == TCP_RST and rst.seq == 0
    assert lb.health.prober.health("web", "h1") == "ok" and dropped(lb) == {}


def test_a_reply_from_another_switch_port_is_ignored_and_counted() -> None:
    lb, _ = probed()
    target = state_of(lb, "h1").target
    assert reply(lb, "h1", SYN_ACK, where=(target.dpid, target.port + 10)) == []
    assert reply(lb, "h1", SYN_ACK, where=(target.dpid + 1, target.port)) == []
    assert state_of(lb, "h1").outstanding is not None, "the real reply may still come"
    assert lb.health.prober.health("web", "h1") == "unknown"
    assert dropped(lb) == {"probe_reply_wrong_port": 2}
    assert len(reply(lb, "h1", SYN_ACK)) == 1
    assert lb.health.prober.health("web", "h1") == "ok"
    assert lb.stats()["packet_in"]["probe_reply"] == 1


@pytest.mark.parametrize("flags", [SYN_ACK, RST_ACK])
@pytest.mark.parametrize("ack_delta", [0, 2, -(2**31)])
def test_a_reply_with_a_wrong_ack_is_ignored_and_counted(flags: int, ack_delta: int) -> None:
    lb, _ = probed()
    assert reply(lb, "h2", flags, ack_delta=ack_delta) == []
    assert lb.health.prober.health("web", "h2") == "unknown"
    assert dropped(lb) == {"probe_reply_bad_ack": 1}


def test_an_rst_without_ack_is_ignored() -> None:
    lb, _ = probed()
    assert reply(lb, "h3", TCP_RST) == []
    assert lb.health.prober.health("web", "h3") == "unknown"
    assert dropped(lb) == {"probe_reply_bad_ack": 1}


def test_an_acceptable_ack_without_syn_or_rst_is_not_a_result() -> None:
    lb, _ = probed()
    assert reply(lb, "h3", TCP_ACK) == []
    assert lb.health.prober.health("web", "h3") == "unknown"
    assert dropped(lb) == {"probe_reply_bad_flags": 1}


def test_a_spoofed_rst_does_not_take_a_live_member_out() -> None:
    lb, _ = probed()
    reply(lb, "h1", SYN_ACK)
    assert lb.health.prober.health("web", "h1") == "ok"
    lb.tick(now=11.5)
    target = state_of(lb, "h1").target
    reply(lb, "h1", RST_ACK, where=(target.dpid, target.port + 1), now=11.6)
    reply(lb, "h1", RST_ACK, ack_delta=0, now=11.6)
    assert lb.health.prober.health("web", "h1") == "ok"
    assert state_of(lb, "h1").results == {"syn_ack": 1}
    assert dropped(lb) == {"probe_reply_wrong_port": 1, "probe_reply_bad_ack": 1}


def test_the_member_refusing_on_its_own_port_fails_it() -> None:
    lb, _ = probed()
    assert reply(lb, "h2", RST_ACK) == []
    assert lb.health.prober.health("web", "h2") == "failed" and state_of(lb, "h2").last_result == "refused"
    assert state_of(lb, "h2").outstanding is None and dropped(lb) == {}
