"""Unit mixes at run time (issue 13): signed agent rows fed through the core start a VIP's warning, recorded once in
the event log, and a clearing event when no agent reports any more; the REST answers carry the running warning."""

from __future__ import annotations

from typing import Any

from benchmarks.health import KEY, READY_AT, START, SYNC_AT, Agent, config_data, sync_datagrams
from nlb_sdn.config import parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.events import EventKind
from nlb_sdn.health.units import UnitMix, unit_mix
from nlb_sdn.rest import make_app
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble


def mixed_config(static_weight: int = 2, agents: int = 2) -> Any:
    """VIP ``vip0``: ``agents`` agent members (m00000, ...) and a static member ``s1`` of weight ``static_weight``."""
    data = config_data(agents, agents, fabric_hosts=False)
    data["vips"][0]["members"].append(
        {"name": "s1", "address": "10.2.0.1", "port": 8080, "weight": static_weight, "mac": "02:00:00:00:02:01"}
    )
    return parse_config(data)


def warnings_of(lb: LoadBalancer, kind: EventKind = EventKind.WARNING) -> list[dict[str, Any]]:
    """The events of ``kind`` in the core's log, as ``GET /v1/events`` shows them."""
    return [event.as_dict() for event in lb.events if event.kind is kind]


def report(lb: LoadBalancer, agents: list[Agent], now: float = SYNC_AT) -> None:
    """Each agent's first heartbeat and snapshot (its row, with its capacity), through the core."""
    for addr, datagram in sync_datagrams(agents, now):
        lb.handle_datagram(datagram, addr, now)


def goodbye(lb: LoadBalancer, agent: Agent, now: float) -> None:
    """The agent stops (SIGTERM): its host is no longer alive."""
    datagram = agent._sign("goodbye", {"host_id": agent.host_id, "reason": "SIGTERM"}, now)
    lb.handle_datagram(datagram, agent.addr, now)


def test_the_mix_starts_when_an_agent_reports_and_clears_when_none_does() -> None:
    config = mixed_config()
    lb = LoadBalancer(config, KEY, START)
    vip = config.vips[0].address
    agents = [Agent(0, vip), Agent(1, vip)]
    lb.tick(START + 0.25)
    assert warnings_of(lb) == [] and lb.units.mixes == {}  # configured to mix, but no agent reports yet
    report(lb, agents[:1])
    lb.tick(SYNC_AT + 0.25)
    (started,) = warnings_of(lb)
    assert started["vip"] == "vip0" and started["reported"] == ["m00000"] and started["static"] == ["s1"]
    assert "mixes units" in started["warning"] and "m00000" in started["warning"] and "s1" in started["warning"]
    report(lb, agents[1:])
    for step in range(4):
        lb.tick(READY_AT + step * 0.25)
    assert len(warnings_of(lb)) == 1  # recorded once while it lasts, though a second agent joined
    assert lb.units.mixes["vip0"].reported == ("m00000", "m00001")
    goodbye(lb, agents[0], READY_AT + 1)
    lb.tick(READY_AT + 1.25)
    assert warnings_of(lb, EventKind.WARNING_CLEARED) == []  # m00001 still reports
    goodbye(lb, agents[1], READY_AT + 1.5)
    lb.tick(READY_AT + 1.75)
    (cleared,) = warnings_of(lb, EventKind.WARNING_CLEARED)
    assert cleared["vip"] == "vip0" and "mixes units" in cleared["warning"]
    assert lb.units.mixes == {} and len(warnings_of(lb)) == 1


def test_a_config_change_that_ends_the_mix_clears_it() -> None:
    config = mixed_config()
    lb = LoadBalancer(config, KEY, START)
    report(lb, [Agent(0, config.vips[0].address)])
    lb.tick(SYNC_AT + 0.25)
    assert len(warnings_of(lb)) == 1
    lb.apply_config(mixed_config(static_weight=0), dpids=(), now=READY_AT)  # weight 0: s1 takes no share
    lb.tick(READY_AT + 0.25)
    assert len(warnings_of(lb, EventKind.WARNING_CLEARED)) == 1
    lb.apply_config(mixed_config(), dpids=(), now=READY_AT + 1)  # back: the agent still reports
    lb.tick(READY_AT + 1.25)
    assert len(warnings_of(lb)) == 2


def test_vips_of_one_unit_are_not_watched() -> None:
    config = parse_config(config_data(2, 2, fabric_hosts=False))  # agent members only
    lb = LoadBalancer(config, KEY, START)
    report(lb, [Agent(0, config.vips[0].address), Agent(1, config.vips[0].address)])
    lb.tick(SYNC_AT + 0.25)
    assert warnings_of(lb) == [] and lb.units.reporting == {}


def test_unit_mix_rules() -> None:
    vip = mixed_config(agents=2).vips[0]
    configured = unit_mix(vip, ())
    assert configured == UnitMix("vip0", ("m00000", "m00001"), ("s1",), running=False)
    assert "will mix units" in configured.warning
    assert unit_mix(vip, {"m00001"}) == UnitMix("vip0", ("m00001",), ("s1",), running=True)
    assert unit_mix(mixed_config(static_weight=0).vips[0], {"m00000"}) is None


def test_rest_answers_carry_the_running_warning_once_an_agent_reports() -> None:
    lb = ShellDouble(mixed_config(), hl_key=KEY)
    app = make_app(CoreBackend(lb), lb.events)
    before = call(app, "GET", "/v1/vips/vip0").json["warnings"]
    assert len(before) == 1 and "will mix units" in before[0]
    report(lb, [Agent(0, lb.config.vips[0].address)])
    lb.tick(SYNC_AT + 0.25)
    answers = [
        call(app, "GET", "/v1/vips/vip0").json,
        call(app, "GET", "/v1/vips/vip0/status").json,
        call(app, "GET", "/v1/vips/vip0/members/s1").json,
        call(app, "GET", "/v1/vips").json["vips"][0],
    ]
    for answer in answers:
        (warning,) = answer["warnings"]
        assert "mixes units" in warning and "m00000" in warning and "m00001" not in warning
    kinds = [event["kind"] for event in call(app, "GET", "/v1/events").json["events"] if "warning" in event]
    assert kinds == ["warning", "warning"]  # the configured mix (first answer), then the running one (the core)
