"""controller.ha: the election (over a fake coordinator), fencing by generation ids, and a slave's gated core."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from nlb_sdn.apps.election import CoordinationError, Election
from nlb_sdn.apps.ha import OFP_ROLES, Mastership
from nlb_sdn.config import ConfigError, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import DamOp, Effects
from nlb_sdn.core.mastership import Role, gate
from nlb_sdn.events import EventKind
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.frames import syn_frame
from tests.lib.configs import WEB_VIP, weighted_web_config


@dataclass
class FakeBackend:
    """One Redis as the controllers share it: the election lock (holder, expiry) and the generation counter."""

    now: float = 0.0
    lock_timeout: float = 2.0
    holder: str | None = None
    expires_at: float = 0.0
    counter: int = 0
    down: bool = False

    def check(self) -> None:
        if self.down:
            raise CoordinationError("connection refused")
        if self.holder is not None and self.now >= self.expires_at:
            self.holder = None


@dataclass
class FakeCoordinator:
    """A :class:`~nlb_sdn.apps.election.Coordinator` of one member over a :class:`FakeBackend`."""

    backend: FakeBackend
    member: str
    calls: list[str] = field(default_factory=list)

    def acquire(self) -> bool:
        self.backend.check()
        if self.backend.holder is None:
            self.backend.holder, self.backend.expires_at = self.member, self.backend.now + self.backend.lock_timeout
        return self.backend.holder == self.member

    def keep(self) -> bool:
        self.backend.check()
        if self.backend.holder != self.member:
            return False
        self.backend.expires_at = self.backend.now + self.backend.lock_timeout
        return True

    def release(self) -> None:
        self.calls.append("release")
        if self.backend.holder == self.member:
            self.backend.holder = None

    def next_generation(self) -> int:
        self.backend.check()
        self.backend.counter += 1
        return self.backend.counter

    def generation(self) -> int:
        self.backend.check()
        return self.backend.counter


class RoleArbiter:
    """A switch's role rule of OpenFlow 1.3 (§6.3.5), as Open vSwitch applies it: one master, a stale generation id
    (older than the largest seen, compared as a signed 64-bit difference) refused with ``OFPRRFC_STALE``."""

    def __init__(self) -> None:
        self.max_generation: int | None = None
        self.roles: dict[str, Role] = {}

    def request(self, controller: str, role: Role, generation: int) -> str | None:
        """A role request; the error code name when refused, else None."""
        if role is not Role.EQUAL:
            if self.max_generation is not None:
                distance = (generation - self.max_generation) % 2**64
                if distance >= 2**63:
                    return "OFPRRFC_STALE"
            self.max_generation = generation
        if role is Role.MASTER:
            for other, held in self.roles.items():
                if held is Role.MASTER:
                    self.roles[other] = Role.SLAVE
        self.roles[controller] = role
        return None

    def accepts_flow_mod(self, controller: str) -> bool:
        """Whether a modify-state message from ``controller`` is accepted (a slave gets ``OFPBRC_IS_SLAVE``)."""
        return self.roles.get(controller, Role.EQUAL) is not Role.SLAVE


def pair(backend: FakeBackend) -> tuple[Election, Election]:
    return Election(FakeCoordinator(backend, "a")), Election(FakeCoordinator(backend, "b"))


# -- election -------------------------------------------------------------------------------------------------------


def test_the_first_controller_wins_and_the_other_stays_slave():
    backend = FakeBackend()
    a, b = pair(backend)
    won = a.step()
    assert won is not None and won.role is Role.MASTER and won.generation == 1
    assert b.step() is None and b.role is Role.SLAVE
    assert b.generation == 1, "a slave learns the latest generation id for its SLAVE requests"
    assert a.step() is None and a.role is Role.MASTER, "the master keeps its lock"


def test_a_standby_takes_over_after_the_lock_timeout_of_a_dead_master():
    backend = FakeBackend()
    a, b = pair(backend)
    a.step()
    backend.now = 1.9
    assert b.step() is None, "the lock outlives the master's last heartbeat by lock_timeout"
    backend.now = 2.0
    won = b.step()
    assert won is not None and won.role is Role.MASTER and won.generation == 2


def test_generation_ids_only_grow_across_controllers_and_takeovers():
    backend = FakeBackend()
    elections = pair(backend)
    seen: list[int] = []
    for round_ in range(6):
        backend.now = round_ * 10.0
        for election in elections:
            if election.role is Role.MASTER:
                election.step_down("test")
        winner = elections[round_ % 2]
        change = winner.step()
        assert change is not None and change.role is Role.MASTER
        seen.append(change.generation)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_a_master_that_lost_its_lock_steps_down_and_releases():
    backend = FakeBackend()
    a, b = pair(backend)
    a.step()
    backend.now = 5.0  # a stalled past its lock's lifetime, and b took the lock meanwhile
    assert b.step() is not None
    lost = a.step()
    assert lost is not None and lost.role is Role.SLAVE and "lost" in lost.reason
    assert a.role is Role.SLAVE and "release" in a.coordinator.calls  # type: ignore[attr-defined]


def test_a_master_steps_down_when_the_backend_fails_and_a_slave_waits():
    backend = FakeBackend()
    a, b = pair(backend)
    a.step()
    backend.down = True
    assert b.step() is None and b.role is Role.SLAVE
    down = a.step()
    assert down is not None and down.role is Role.SLAVE and a.failing


# -- fencing --------------------------------------------------------------------------------------------------------


def test_a_switch_refuses_the_stale_generation_of_a_master_that_lost():
    backend, switch = FakeBackend(), RoleArbiter()
    a, b = pair(backend)
    first = a.step()
    assert first is not None and switch.request("a", Role.MASTER, first.generation) is None
    b.step()
    assert switch.request("b", Role.SLAVE, b.generation) is None
    backend.now = 3.0  # a stalls (no heartbeat); its lock expires and b wins
    second = b.step()
    assert second is not None and second.generation > first.generation
    assert switch.request("b", Role.MASTER, second.generation) is None
    assert not switch.accepts_flow_mod("a"), "the switch demoted the old master"
    assert switch.request("a", Role.MASTER, first.generation) == "OFPRRFC_STALE"
    assert switch.roles == {"a": Role.SLAVE, "b": Role.MASTER}


class FakeDatapath:
    """A connected switch as the shell sees it: its id, the OpenFlow 1.3 parser, and what was sent to it."""

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid: int) -> None:
        self.id = dpid


class FakeApp:
    """The parts of the classifier :class:`Mastership` uses."""

    def __init__(self) -> None:
        self.lb = LoadBalancer(weighted_web_config(), b"", 0.0)
        self.datapaths: dict[int, Any] = {1: FakeDatapath(1), 2: FakeDatapath(2)}
        self.sent: list[tuple[int, Any]] = []
        self.installed: list[int] = []
        self.errors: Counter[str] = Counter()

    def send(self, datapath: Any, msgs: list[Any]) -> None:
        self.sent += [(datapath.id, msg) for msg in msgs]

    def install(self, datapath: Any) -> None:
        self.installed.append(datapath.id)


def role_reply(datapath: Any, role: Role, generation: int) -> Any:
    return SimpleNamespace(datapath=datapath, role=OFP_ROLES[role], generation_id=generation)


def stale_error(datapath: Any) -> Any:
    return SimpleNamespace(datapath=datapath, type=ofp.OFPET_ROLE_REQUEST_FAILED, code=ofp.OFPRRFC_STALE)


def test_a_new_master_asks_every_switch_and_rebuilds_each_only_once_it_confirms():
    app, backend = FakeApp(), FakeBackend()
    ha = Mastership(app, Election(FakeCoordinator(backend, "a")), 0.25)  # type: ignore[arg-type]
    assert app.lb.role is Role.SLAVE and not ha.may_send(1)
    ha.changed(ha.election.step())
    assert app.lb.role is Role.MASTER
    requests = [(dpid, msg.role, msg.generation_id) for dpid, msg in app.sent]
    assert requests == [(1, ofp.OFPCR_ROLE_MASTER, 1), (2, ofp.OFPCR_ROLE_MASTER, 1)]
    assert app.installed == [] and not ha.may_send(1), "nothing goes to a switch before it confirms"
    ha.role_reply(role_reply(app.datapaths[1], Role.MASTER, 0))
    assert app.installed == [], "a reply to an older request is ignored"
    ha.role_reply(role_reply(app.datapaths[1], Role.MASTER, 1))
    assert app.installed == [1] and ha.may_send(1) and not ha.may_send(2)
    app.sent.clear()
    ha.changed(None)
    assert [dpid for dpid, _msg in app.sent] == [2], "the refresh re-asks only the switch that did not confirm"
    assert [e.detail["role"] for e in app.lb.events.events if e.kind == EventKind.MASTERSHIP] == ["master"]


def test_a_stale_refusal_makes_the_master_step_down_to_slave():
    app, backend = FakeApp(), FakeBackend()
    ha = Mastership(app, Election(FakeCoordinator(backend, "a")), 0.25)  # type: ignore[arg-type]
    ha.changed(ha.election.step())
    ha.role_reply(role_reply(app.datapaths[1], Role.MASTER, 1))
    app.sent.clear()
    assert ha.role_error(stale_error(app.datapaths[2]))
    assert ha.role is Role.SLAVE and app.lb.role is Role.SLAVE and not ha.may_send(1)
    assert {msg.role for _dpid, msg in app.sent} == {ofp.OFPCR_ROLE_SLAVE}
    assert ha.stale_refusals == 1 and app.errors[f"ofp_error:{ofp.OFPET_ROLE_REQUEST_FAILED}:{ofp.OFPRRFC_STALE}"] == 1
    other = SimpleNamespace(datapath=app.datapaths[1], type=ofp.OFPET_BAD_REQUEST, code=ofp.OFPBRC_IS_SLAVE)
    assert not ha.role_error(other), "other errors are the classifier's to count"


# -- the gated core -------------------------------------------------------------------------------------------------


def punt(lb: LoadBalancer, port: int) -> Effects:
    frame = syn_frame("10.0.0.1", port, WEB_VIP, 80)
    return lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)


def test_a_slave_core_sends_no_flow_mods_nor_packet_outs_nor_dam_writes():
    lb = LoadBalancer(weighted_web_config(), b"", 0.0)
    lb.role = Role.SLAVE
    assert punt(lb, 40000) == Effects()
    assert lb.switch_connected(1, 1.0) == Effects()
    lb.role = Role.MASTER
    plumbed = punt(lb, 40001)
    assert plumbed.to(1) and plumbed.dam, "the same core as master plumbs the connection"
    assert lb.switch_connected(1, 2.0).to(1)


def test_the_gate_keeps_only_a_slaves_datagrams():
    effects = Effects({1: ("flow",)}, (DamOp.delete("k"),), ((("10.0.0.1", 9101), b"x"),))
    assert gate(effects, Role.SLAVE) == Effects(datagrams=effects.datagrams)
    assert gate(effects, Role.MASTER) is effects and gate(effects, Role.EQUAL) is effects


# -- config ---------------------------------------------------------------------------------------------------------


def test_ha_is_off_by_default_and_its_settings_are_checked():
    assert parse_config({}).controller.ha.enabled is False
    ha = parse_config({"controller": {"ha": {"enabled": True, "coordination_url": "redis://127.0.0.1:7000"}}})
    assert ha.controller.ha.lock_timeout == 2 and ha.controller.ha.group == "nlb-sdn"
    for bad in ({"lock_timeout": 0}, {"coordination_url": "http://x"}, {"leader": "a"}):
        with pytest.raises(ConfigError):
            parse_config({"controller": {"ha": bad}})


# -- tooz over a real Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> Any:
    from tests.lib.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}"
    finally:
        server.stop()
        server.cleanup()


def test_tooz_over_redis_elects_one_master_and_a_standby_after_the_lock_timeout(redis_url: str):
    pytest.importorskip("tooz")
    from nlb_sdn.apps.election import ToozCoordinator
    from nlb_sdn.config.ha import HaSettings
    from tests.lib.polling import poll_until

    settings = HaSettings(enabled=True, coordination_url=redis_url, group="unit", lock_timeout=1)
    a, b = Election(ToozCoordinator(settings, "a")), Election(ToozCoordinator(settings, "b"))
    first = a.step()
    assert first is not None and first.role is Role.MASTER
    assert b.step() is None and b.generation == first.generation
    assert a.step() is None, "the heartbeat keeps the lock"
    # a dies: no more heartbeats; b wins once the lock expired (about lock_timeout later)
    second = poll_until(b.step, timeout=3.0, interval=0.05)
    assert second.role is Role.MASTER and second.generation == first.generation + 1
    lost = a.step()
    assert lost is not None and lost.role is Role.SLAVE


def test_a_slave_refuses_a_migration_commit_instead_of_claiming_it():
    from nlb_sdn.apps.facade import ControllerFacade
    from nlb_sdn.core.l7 import MigrationRequest

    app = FakeApp()
    app.looping = False  # type: ignore[attr-defined]
    app.lb.role = Role.SLAVE
    commit = MigrationRequest(phase="commit", id="m1", vip="web", client="10.0.0.1:40000", member="h1")
    with pytest.raises(ConnectionError, match="slave"):
        ControllerFacade(app).migrate(commit)  # type: ignore[arg-type]
