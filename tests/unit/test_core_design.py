"""The core's shape: one Effects return type, one service kind per VIP chosen once, and the shell's one loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nlb_sdn.config import dump_config, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import NO_EFFECTS, DamOp, DamVerb, Effects, Out
from nlb_sdn.core.services import L7Service, NatService, SessionService, SwitchService, TunnelService
from nlb_sdn.dam.atoms import route_key, session_key
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import hub
from tests.frames import syn_frame
from tests.unit.test_core import FABRIC, config

VIP = "10.0.0.100"


def test_out_collects_in_order_and_freezes_into_effects() -> None:
    out = Out()
    out.send(1, ["a"])
    out.send(2, ["x"])
    out.send(1, ["b", "c"])
    out.send_all([3, 4], ["g"])
    out.put("k", {"v": 1}, 5.0)
    out.touch("k", 6.0)
    out.delete("k")
    out.datagrams.append((("127.0.0.1", 1), b"d"))
    effects = out.effects()
    assert effects.to(1) == ["a", "b", "c"] and effects.to(2) == ["x"] and effects.to(3) == effects.to(4) == ["g"]
    assert effects.to(9) == []
    assert effects.dam == (DamOp.put("k", {"v": 1}, 5.0), DamOp.touch("k", 6.0), DamOp.delete("k"))
    assert [op.verb for op in effects.dam] == [DamVerb.PUT, DamVerb.TOUCH, DamVerb.DELETE]
    assert effects.datagrams == ((("127.0.0.1", 1), b"d"),)
    with pytest.raises(TypeError):
        effects.messages[1] = ()  # type: ignore[index]
    with pytest.raises(AttributeError):
        effects.dam = ()  # type: ignore[misc]


def test_nothing_to_do_is_the_empty_effects() -> None:
    out = Out()
    out.send(1, [])
    assert out.effects() is NO_EFFECTS and not NO_EFFECTS and Effects().to(1) == []


def test_a_new_connection_returns_its_flows_for_its_switch_and_its_route_atom() -> None:
    lb = LoadBalancer(config())
    frame = syn_frame("10.0.0.1", 40000, VIP, 80)
    effects = lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, 1.0)
    assert set(effects.messages) == {1}
    assert [type(msg).__name__ for msg in effects.to(1)] == ["OFPFlowMod", "OFPFlowMod", "OFPPacketOut"]
    [put] = effects.dam
    assert put.verb == DamVerb.PUT and put.key == route_key("10.0.0.1", 40000, VIP, 80)
    assert put.data is not None and put.data["member"] == lb.connections()[0]["member"]
    assert effects.datagrams == ()


def test_every_event_entry_point_returns_effects() -> None:
    lb = LoadBalancer(config())
    frame = syn_frame("10.0.0.1", 40000, VIP, 80)
    results = [
        lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, 1.0),
        lb.handle_flow_removed(1, Table.CONNECTIONS, 0, {}, True, 2.0),
        lb.switch_connected(1),
        lb.reconcile(1, [], 2.0),
        lb.tick(2.0, [1]),
        lb.dispatch_updates(2.0, [1]),
        lb.conntrack_audits(2.0),
        lb.handle_datagram(b"junk", ("127.0.0.1", 9), 2.0),
        lb.expire(2.0),
        lb.load_atoms([], 2.0),
        lb.apply_dam_change("delete", session_key("app", "x"), None, 2.0),
        lb.apply_config(config(weights=(1, 1, 1)), [1], 3.0),
    ]
    assert all(isinstance(result, Effects) for result in results)


SERVICE_KINDS = [
    ({}, NatService),
    ({"affinity": "client_ip", "granularity": "session", "switch_pinning": None}, SessionService),
    ({"dispatch": "switch"}, SwitchService),
    ({"mode": "tunnel"}, TunnelService),
]


@pytest.mark.parametrize(("fields", "kind"), SERVICE_KINDS)
def test_the_service_kind_follows_the_vip_model_and_changes_with_it(fields: dict[str, Any], kind: type) -> None:
    data = dump_config(config())
    lb = LoadBalancer(parse_config(data))
    state = lb.ctx.vips.by_name("web")
    assert state is not None and type(state.service) is NatService
    data["vips"][0].update(fields)
    lb.apply_config(parse_config(data), [1], 1.0)
    assert type(state.service) is kind, "one service object per VIP model, chosen when the model is applied"


def test_an_l7_vip_gets_the_l7_service() -> None:
    data = dump_config(config())
    data["fabric"]["hosts"].append(
        {"name": "r1", "ip": "10.0.0.21", "mac": "00:00:00:00:00:21", "switch": "s2", "port": 9}
    )
    data["vips"][0].update({"mode": "l7", "routers": ["r1"]})
    lb = LoadBalancer(parse_config(data))
    state = lb.ctx.vips.by_name("web")
    assert state is not None and type(state.service) is L7Service


# -- the shell's one loop -------------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A classifier app made as os-ken makes it, not started (no threads, no sockets)."""
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    data = dump_config(config())
    data["controller"]["rest"] = {"enabled": False}
    data["fabric"] = FABRIC
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return Classifier()


def test_rest_calls_run_in_the_event_loop_once_it_runs(app: Any) -> None:
    from nlb_sdn.apps.facade import EventCall

    posted: list[Any] = []
    app.post = posted.append
    app.looping = True
    entered: list[str] = []
    real_stats = app.stats
    app.stats = lambda: entered.append("core") or real_stats()
    waiter = hub.spawn(app.api.stats)
    hub.sleep(0)
    assert entered == [] and len(posted) == 1 and isinstance(posted[0], EventCall), "REST waits for the loop"
    app.on_call(posted[0])  # the event loop handles the call
    assert entered == ["core"] and waiter.wait()["connections"]["total"] == 0


def test_a_rest_call_hands_the_loop_s_exception_back(app: Any) -> None:
    posted: list[Any] = []
    app.post = posted.append
    app.looping = True
    waiter = hub.spawn(app.api.member_state, "web", "nobody", raise_error=True)
    hub.sleep(0)
    app.on_call(posted[0])
    with pytest.raises(KeyError):
        waiter.wait()


def test_timers_post_events_and_never_enter_the_core(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlb_sdn.apps.classifier import EventTick

    posted: list[Any] = []
    app.post = posted.append
    ticks: list[float] = []
    monkeypatch.setattr(app.lb, "tick", lambda now, dpids=(): ticks.append(now) or NO_EFFECTS)
    timer = hub.spawn(app.timer, 0.001, EventTick)
    while len(posted) < 2:
        hub.sleep(0.002)
    timer.kill()
    assert ticks == [] and all(isinstance(ev, EventTick) for ev in posted)
    app.on_tick(posted[0])
    assert len(ticks) == 1


def test_a_failed_dam_write_fails_alone(app: Any) -> None:
    class Failing:
        def __init__(self) -> None:
            self.done: list[str] = []

        def put(self, key: str, *_args: Any, **_kwargs: Any) -> None:
            if key == "bad":
                raise ConnectionError("redis went away")
            self.done.append(key)

        def delete(self, key: str, _now: float) -> None:
            self.done.append(key)

    app.dam = Failing()
    for op in (DamOp.put("a", {}), DamOp.put("bad", {}), DamOp.delete("c")):
        app.apply_dam_op(op, 1.0)
    assert app.dam.done == ["a", "c"] and app.errors["dam_put"] == 1


def test_a_confirmed_change_also_writes_its_atoms(app: Any) -> None:
    put = DamOp.put(route_key("10.0.0.1", 40000, VIP, 80), {"member": "h2"})
    assert app.carry_out_confirmed(Effects(dam=(put,))) == [] and list(app.dam_writes) == [put]
    with pytest.raises(ConnectionError):
        app.carry_out_confirmed(Effects({7: ("flow-mod",)}, (put,)))
    assert list(app.dam_writes) == [put], "nothing of a change that cannot be confirmed is carried out"
