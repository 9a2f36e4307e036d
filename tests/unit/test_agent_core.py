"""Agent: config schema, rise/fall and load parsing, and the pure state machine driven with fake time."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.agent import core as agent_core
from nlb_sdn.agent.checks import CheckState, count_established, established_connections, http_status_ok, parse_number
from nlb_sdn.agent.cli import check_config, format_sessions, format_table
from nlb_sdn.agent.config import AgentConfig, load_agent_config, parse_agent_config
from nlb_sdn.agent.core import AgentCore, Outgoing
from nlb_sdn.config import ConfigError
from nlb_sdn.dam.atoms import SESSION_PREFIX
from nlb_sdn.health.protocol import Verifier
from nlb_sdn.health.table import HLTable, Row
from nlb_sdn.signed import TCP_MAX_SIZE, Message, encode

KEY = b"0123456789abcdef"
CONTROLLERS = (("10.0.0.254", 9100), ("10.0.0.253", 9200))
LBU = ("10.0.0.254", 9100)
OTHER = ("10.0.0.9", 40000)
APP = "10.0.0.100:80/tcp/10.0.0.11:80"
APP2 = "10.0.0.100:80/tcp/10.0.0.11:8080?host=a"


def agent_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "host_id": "h1",
        "key_file": "/etc/nlb-sdn/key",
        "controllers": ["10.0.0.254", "10.0.0.253:9200"],
        "hb_period": 1.0,
        "apps": [
            {
                "vip": "10.0.0.100",
                "vport": 80,
                "pip": "10.0.0.11",
                "pport": 80,
                "capacity": 100,
                "health": {"type": "tcp", "rise": 2, "fall": 2},
            },
            {
                "vip": "10.0.0.100",
                "vport": 80,
                "pip": "10.0.0.11",
                "pport": 8080,
                "proto_info": "host=a",
                "capacity": 50,
                "target": "draining",
                "load": {"type": "static", "value": 4},
                "health": {"type": "http", "path": "/health", "expect_status": 204, "interval": 2, "timeout": 1},
            },
        ],
    }
    data.update(changes)
    return data


def config(**changes: Any) -> AgentConfig:
    return parse_agent_config(agent_data(**changes))


# --- config -------------------------------------------------------------------------------------------------------


def test_config_defaults_and_normalisation():
    cfg = config()
    assert cfg.listen == "0.0.0.0:9101" and cfg.listen_address == ("0.0.0.0", 9101)
    assert cfg.controllers == ["10.0.0.254:9100", "10.0.0.253:9200"]
    assert cfg.controller_addresses == list(CONTROLLERS)
    assert cfg.control_socket == "/run/nlb-sdn-agent.h1.sock"
    assert [app.app_id for app in cfg.apps] == [APP, APP2]
    assert cfg.apps[0].load.type == "connections" and cfg.apps[0].target == "active"
    assert cfg.apps[0].health.interval == 1.0 and cfg.apps[0].health.timeout == 1.0
    assert cfg.apps[1].initial_row() == Row(
        vip="10.0.0.100",
        vport=80,
        pip="10.0.0.11",
        pport=8080,
        proto_info="host=a",
        health="unknown",
        load=4.0,
        capacity=50.0,
        target="draining",
        current="inactive",
    )
    assert cfg.app(APP2) is cfg.apps[1] and cfg.app("nope") is None


def test_config_accepts_command_and_file_sources():
    apps = [
        {
            "vip": "10.0.0.100",
            "vport": 80,
            "pip": "10.0.0.11",
            "pport": 80,
            "capacity": 1,
            "health": {"type": "command", "argv": ["true"]},
            "load": {"type": "file", "path": "/tmp/load"},
        },
        {
            "vip": "10.0.0.100",
            "vport": 81,
            "pip": "10.0.0.11",
            "pport": 81,
            "capacity": 1,
            "load": {"type": "command", "argv": ["echo", "3"], "timeout": 0.5},
        },
    ]
    cfg = config(apps=apps, listen="127.0.0.1:0", control_socket="/tmp/a.sock")
    assert cfg.listen_address == ("127.0.0.1", 0)
    assert cfg.apps[0].health.type == "command" and cfg.apps[1].health.type == "tcp"


@pytest.mark.parametrize(
    "changes, key, reason",
    [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"host_id": "h 1"}, "host_id", "String should match pattern"),
        ({"controllers": []}, "controllers", "at least 1 item"),
        ({"controllers": ["ctl.example:9100"]}, "controllers[0]", "not an IPv4 address"),
        ({"controllers": ["10.0.0.1:0"]}, "controllers[0]", "bad port"),
        ({"listen": "10.0.0.1:70000"}, "listen", "bad port"),
        ({"hb_period": 0}, "hb_period", "greater than or equal to 0.05"),
        ({"control_socket": "/x" * 60}, "control_socket", "at most 100 characters"),
    ],
)
def test_config_errors_name_the_key(changes, key, reason):
    with pytest.raises(ConfigError) as err:
        parse_agent_config(agent_data(**changes), "agent.yaml")
    assert (err.value.source, err.value.key) == ("agent.yaml", key)
    assert reason in err.value.reason


@pytest.mark.parametrize(
    "app_change, key, reason",
    [
        ({"colour": "red"}, "apps[0].colour", "unknown key"),
        ({"vip": "10.0.0.300"}, "apps[0].vip", "not an IPv4 address"),
        ({"capacity": 0}, "apps[0].capacity", "greater than 0"),
        ({"proto": "sctp"}, "apps[0].proto", "Input should be 'tcp' or 'udp'"),
        ({"target": "drained"}, "apps[0].target", "Input should be"),
        ({"health": {"type": "tcp", "interval": 1, "timeout": 2}}, "apps[0].health.tcp", "longer than interval"),
        ({"health": {"type": "ping"}}, "apps[0].health", "does not match any of the expected tags"),
        ({"health": {"type": "http", "path": "health"}}, "apps[0].health.http.path", "String should match pattern"),
        ({"health": {"type": "command", "argv": []}}, "apps[0].health.command.argv", "at least 1 item"),
        ({"load": {"type": "static", "value": -1}}, "apps[0].load.static.value", "greater than or equal to 0"),
        ({"load": {"type": "connections", "port": 80}}, "apps[0].load.connections.port", "unknown key"),
    ],
)
def test_app_errors_name_the_key(app_change, key, reason):
    data = agent_data()
    data["apps"][0].update(app_change)
    with pytest.raises(ConfigError) as err:
        parse_agent_config(data, "agent.yaml")
    assert err.value.key == key
    assert reason in err.value.reason


def test_duplicate_apps_and_too_many_for_one_snapshot_are_rejected():
    data = agent_data()
    data["apps"].append(dict(data["apps"][0]))
    with pytest.raises(ConfigError, match="duplicate app"):
        parse_agent_config(data)
    many = [{"vip": "10.0.0.100", "vport": 80, "pip": "10.0.0.11", "pport": 1000 + i, "capacity": 1} for i in range(7)]
    with pytest.raises(ConfigError, match="1400-byte datagram limit"):
        parse_agent_config(agent_data(apps=many))
    assert len(parse_agent_config(agent_data(apps=many[:5])).apps) == 5


def test_load_agent_config_and_check_config(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123\n")
    good = tmp_path / "agent.yaml"
    good.write_text(f"host_id: h1\nkey_file: {key}\ncontrollers: [127.0.0.1]\napps: []\n")
    assert load_agent_config(good).host_id == "h1"
    assert check_config(str(good)) == 0
    assert "ok (host h1, 0 apps, 1 controllers)" in capsys.readouterr().out
    key.write_text("short\n")
    assert check_config(str(good)) == 2
    assert "key_file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("host_id: h1\nkey_file: k\ncontrollers: [127.0.0.1]\nhb_perod: 2\n")
    assert check_config(str(bad)) == 2
    assert f"{bad}:4:1: hb_perod: unknown key" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot parse"):
        load_agent_config(_write(tmp_path / "broken.yaml", "host_id: [\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_agent_config(_write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(ConfigError, match=r"\(file\)"):
        load_agent_config(tmp_path / "missing.yaml")


def _write(path, text):
    path.write_text(text)
    return path


# --- checks (pure parts) ------------------------------------------------------------------------------------------


def test_check_state_rise_and_fall():
    state = CheckState(rise=2, fall=3)
    assert state.health == "unknown"
    assert [state.observe(ok) for ok in (True, False, True, True)] == ["unknown", "unknown", "unknown", "ok"]
    assert [state.observe(ok) for ok in (False, False, True, False, False, False)] == [
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "failed",
    ]
    assert state.observe(True) == "failed" and state.observe(True) == "ok"
    first_fail = CheckState(rise=1, fall=1)
    assert first_fail.observe(False) == "failed" and first_fail.observe(True) == "ok"


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0
   1: 0B00000A:0050 0100000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 10 0
   2: 0B00000A:0050 0100000A:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 10 0
   3: 0B00000A:0050 0100000A:9C42 06 00000000:00000000 00:00000000 00000000     0        0 4 1 0 10 0
   4: 0B00000A:9C43 0100000A:0050 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 10 0
   5: 0B00000A:1F90 0100000A:9C44 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 10 0
   6: garbage
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 0000000000000000FFFF00000B00000A:0050 0000000000000000FFFF00000100000A:9C45 01 00000000:00000000
"""


def test_count_established_reads_state_01_on_the_local_port(tmp_path):
    assert count_established(PROC_NET_TCP, 80) == 2
    assert count_established(PROC_NET_TCP, 8080) == 1
    assert count_established(PROC_NET_TCP6, 80) == 1
    assert count_established("", 80) == 0
    v4, v6 = tmp_path / "tcp", tmp_path / "tcp6"
    v4.write_text(PROC_NET_TCP)
    v6.write_text(PROC_NET_TCP6)
    assert established_connections(80, (str(v4), str(v6), str(tmp_path / "absent"))) == 3


@pytest.mark.parametrize(
    "response, status, contains, ok",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nh1\n", 200, "", True),
        (b"HTTP/1.0 200 OK\r\n\r\nh1\n", 200, "h1", True),
        (b"HTTP/1.1 200 OK\r\n\r\nh2\n", 200, "h1", False),
        (b"HTTP/1.1 503 Unavailable\r\n\r\n", 200, "", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, "", True),
        (b"garbage", 200, "", False),
        (b"", 200, "", False),
    ],
)
def test_http_status_ok(response, status, contains, ok):
    assert http_status_ok(response, status, contains) is ok


@pytest.mark.parametrize(
    "text, value",
    [("3\n", 3.0), (" 2.5 conns", 2.5), ("", None), ("x", None), ("-1", None), ("nan", None), ("inf", None)],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_format_table_shows_all_nine_fields():
    view = {"host_id": "h1", "checksum": 0xAB, "rows": [r.to_dict() for r in AgentCore(config(), 0.0).table.rows()]}
    lines = format_table(view).splitlines()
    assert lines[0] == "host h1  rows 2  checksum 0x000000ab"
    assert lines[1].split() == [
        "VIP",
        "PHYSICAL",
        "PROTO",
        "PROTO_INFO",
        "HEALTH",
        "LOAD",
        "CAPACITY",
        "TARGET",
        "CURRENT",
    ]
    assert lines[2].split() == [
        "10.0.0.100:80",
        "10.0.0.11:80",
        "tcp",
        "(any)",
        "unknown",
        "0",
        "100",
        "active",
        "inactive",
    ]
    assert lines[3].split() == [
        "10.0.0.100:80",
        "10.0.0.11:8080",
        "tcp",
        "host=a",
        "unknown",
        "4",
        "50",
        "draining",
        "inactive",
    ]
    assert lines[1].index("HEALTH") == lines[2].index("unknown") == lines[3].index("unknown")


# --- the state machine --------------------------------------------------------------------------------------------


class Controller:
    """A fake controller: verifies every message the agent sends and mirrors its table from row changes."""

    def __init__(self) -> None:
        self.verifier = Verifier(KEY, TCP_MAX_SIZE)
        self.mirror = HLTable()
        self.seq = 0

    def receive(self, sent: list[Outgoing]) -> list[Message]:
        """Sign and verify each message (the agent only sends what a receiver accepts); apply row changes."""
        received = []
        for out in sent:
            self.seq += 1
            message = self.verifier.verify(encode(KEY, out.type, "h1", self.seq, 100.0, out.body), 100.0)
            assert message is not None, out
            body = message.body
            if message.type == "row_change":
                assert body["prev_checksum"] == self.mirror.checksum
                self.mirror.upsert(Row.from_dict(body["row"]))
                assert self.mirror.checksum == body["checksum"]
            if message.type == "snapshot":
                self.mirror = HLTable(Row.from_dict(row) for row in body["rows"])
                assert self.mirror.checksum == body["checksum"]
            received.append(message)
        return received


def msg(type: str, body: dict[str, Any]) -> Message:
    return Message(type, "lbu:1", 1, 100.0, body)


def answer(core: AgentCore, message: Message, sender: tuple[str, int], now: float = 100.0) -> list[Outgoing]:
    return core.on_message(message, sender, now)


def started() -> tuple[AgentCore, Controller]:
    """A core whose initial table the fake controller already mirrors."""
    core = AgentCore(config(), now=100.0)
    ctl = Controller()
    ctl.receive([core.snapshot((LBU,))])
    return core, ctl


def test_start_postulates_and_heartbeats_follow_the_period():
    core = AgentCore(config(), now=100.0)
    assert core.start() == [
        Outgoing("postulate", {"from": "h1", "host_id": "h1", "checksum": core.table.checksum}, CONTROLLERS)
    ]
    first = core.tick(100.0)
    assert first == [
        Outgoing(
            "heartbeat",
            {"host_id": "h1", "checksum": core.table.checksum, "row_count": 2, "period_ms": 1000},
            CONTROLLERS,
        )
    ]
    assert core.tick(100.5) == [] and core.tick(100.99) == []
    assert len(core.tick(101.0)) == 1 and core.next_heartbeat == 102.0
    assert len(core.tick(105.0)) == 1 and core.next_heartbeat == 106.0
    assert len(core.tick(50.0)) == 1 and core.next_heartbeat == 51.0  # the clock stepped back


def test_checks_change_health_after_rise_and_fall_with_checksums_that_chain():
    core, ctl = started()
    assert core.on_check(APP, True) == []
    [change] = core.on_check(APP, True)
    assert change.type == "row_change" and change.to == CONTROLLERS
    assert change.body["op"] == "update" and change.body["row"]["health"] == "ok"
    ctl.receive([change])
    assert core.on_check(APP, True) == [] and core.on_check(APP, False) == []
    ctl.receive(core.on_check(APP, False))
    assert core.table.get(APP).health == "failed"
    [beat] = ctl.receive(core.tick(100.0))
    assert beat.body["checksum"] == ctl.mirror.checksum == core.table.checksum


def test_load_changes_send_row_changes():
    core, ctl = started()
    [change] = ctl.receive(core.on_load(APP, 7))
    assert change.body["row"]["load"] == 7.0
    assert core.on_load(APP, 7.0) == []
    with pytest.raises(ValueError):
        core.on_load(APP, -1)
    with pytest.raises(KeyError):
        core.on_load("nope", 1)


def test_get_snapshot_is_answered_to_the_sender_only():
    core, ctl = started()
    core.on_load(APP, 3)
    [snap] = answer(core, msg("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "checksum"}), OTHER)
    assert snap.type == "snapshot" and snap.to == (OTHER,)
    ctl.receive([snap])
    assert ctl.mirror.checksum == core.table.checksum and len(ctl.mirror) == 2
    assert answer(core, msg("get_snapshot", {"lbu_id": 1, "host_id": "h2", "reason": ""}), OTHER) == []


def test_postulate_wrong_checksum_is_answered_then_current_is_recorded():
    core, ctl = started()
    before = core.table.checksum
    sent = answer(
        core,
        msg(
            "postulate",
            {
                "from": "lbu:1",
                "host_id": "h1",
                "checksum": before ^ 1,
                "current": {APP: "active", "unknown-app": "active"},
            },
        ),
        OTHER,
    )
    assert [out.type for out in sent] == ["postulate_wrong", "row_change"]
    assert sent[0] == Outgoing("postulate_wrong", {"from": "h1", "host_id": "h1", "checksum_actual": before}, (OTHER,))
    assert sent[1].to == (*CONTROLLERS, OTHER) and sent[1].body["row"]["current"] == "active"
    ctl.receive(sent)
    assert core.table.get(APP).current == "active"


def test_postulate_with_the_right_checksum_only_records_current():
    core, ctl = started()
    checksum = core.table.checksum
    sent = answer(
        core,
        msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": checksum, "current": {APP2: "drained"}}),
        LBU,
    )
    assert [out.type for out in sent] == ["row_change"] and sent[0].to == CONTROLLERS
    ctl.receive(sent)
    assert (
        answer(core, msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": core.table.checksum}), LBU) == []
    )
    assert answer(core, msg("postulate", {"from": "lbu:1", "host_id": "h2", "checksum": 0}), LBU) == []


def test_postulate_wrong_from_a_controller_gets_a_snapshot():
    core, _ = started()
    [snap] = answer(core, msg("postulate_wrong", {"from": "lbu:1", "host_id": "h1", "checksum_actual": 1}), LBU)
    assert snap.type == "snapshot" and snap.to == (LBU,)


def test_set_target_state_is_answered_by_a_row_change_even_when_unchanged():
    core, ctl = started()
    [change] = answer(core, msg("set_target_state", {"lbu_id": 1, "app_id": APP, "target": "draining"}), OTHER)
    assert change.to == (*CONTROLLERS, OTHER) and change.body["row"]["target"] == "draining"
    ctl.receive([change])
    [same] = answer(core, msg("set_target_state", {"lbu_id": 1, "app_id": APP, "target": "draining"}), OTHER)
    assert same.to == (OTHER,) and same.body["prev_checksum"] == same.body["checksum"] == core.table.checksum
    ctl.receive([same])
    assert answer(core, msg("set_target_state", {"lbu_id": 1, "app_id": "nope", "target": "active"}), OTHER) == []
    [local] = core.set_target(APP, "inactive")
    assert local.to == CONTROLLERS
    assert core.set_target(APP, "inactive") == []
    with pytest.raises(ValueError):
        core.set_target(APP, "drained")


def test_messages_not_for_an_agent_are_ignored():
    core, _ = started()
    for type, body in [
        ("heartbeat", {"host_id": "h1", "checksum": 1, "row_count": 0, "period_ms": 1000}),
        ("goodbye", {"host_id": "h1", "reason": "x"}),
        ("session_up", up_body()),
        ("session_down", down_body()),
        ("snapshot", {"host_id": "h1", "rows": [], "checksum": 0}),
    ]:
        assert answer(core, msg(type, body), LBU) == []


def test_stop_says_goodbye_three_times():
    core, ctl = started()
    sent = core.stop("SIGTERM")
    assert sent == [Outgoing("goodbye", {"host_id": "h1", "reason": "SIGTERM"}, CONTROLLERS)] * 3
    assert len(ctl.receive(sent)) == 3


# --- sessions (session table 2014) -------------------------------------------------------------------------------

CLIENT = "192.0.2.7"


def up_body(sid: str = "S1", ttl_s: float = 60.0, client: str = CLIENT, stype: str = "app") -> dict[str, Any]:
    """The session_up body of a session of APP2's endpoint."""
    return {
        "host_id": "h1",
        "stype": stype,
        "sid": sid,
        "vip": "10.0.0.100",
        "vport": 80,
        "proto": "tcp",
        "pip": "10.0.0.11",
        "pport": 8080,
        "client": client,
        "ttl_s": ttl_s,
    }


def down_body(sid: str = "S1", client: str = CLIENT, stype: str = "app") -> dict[str, Any]:
    return {"host_id": "h1", "stype": stype, "sid": sid, "vip": "10.0.0.100", "vport": 80, "client": client}


def session_messages(sent: list[Outgoing]) -> list[Outgoing]:
    """``sent`` without its heartbeats."""
    return [out for out in sent if out.type != "heartbeat"]


def test_session_up_and_down_go_to_every_controller():
    core, ctl = started()
    sent = core.session_up(APP2, "S1", CLIENT, now=100.0, ttl_s=60)
    assert sent == [Outgoing("session_up", up_body(), CONTROLLERS)]
    [up] = ctl.receive(sent)
    assert up.type == "session_up"
    [session] = core.live_sessions()
    assert (session.app_id, session.expires_at, session.refresh_at) == (APP2, 160.0, 130.0)
    assert session.to_dict(110.0)["expires_in"] == 50.0
    assert core.next_deadline() == 100.0  # the first heartbeat is still due
    core.tick(100.0)
    assert core.next_deadline() == 101.0
    sent = core.session_down(APP2, "S1")
    assert sent == [Outgoing("session_down", down_body(), CONTROLLERS)]
    ctl.receive(sent)
    assert core.live_sessions() == [] and core.next_deadline() == 101.0
    with pytest.raises(KeyError):
        core.session_down(APP2, "S1")


def test_session_up_defaults_and_client_normalisation():
    core, ctl = started()
    [up] = ctl.receive(core.session_up(APP, "cookie-1", "192.0.2.1", now=100.0))
    assert up.body["ttl_s"] == 600.0 and up.body["stype"] == "app"
    assert (up.body["pip"], up.body["pport"], up.body["proto"]) == ("10.0.0.11", 80, "tcp")
    [up] = ctl.receive(core.session_up(APP, "c2", "192.0.2.2", now=100.0, ttl_s=5, stype="http_cookie"))
    assert up.body["stype"] == "http_cookie" and up.body["ttl_s"] == 5


@pytest.mark.parametrize(
    "args, error",
    [
        ({"app_id": "nope"}, KeyError),
        ({"sid": ""}, ValueError),
        ({"sid": "s" * 257}, ValueError),
        ({"sid": "\u00e9" * 129}, ValueError),
        ({"sid": "a\nb"}, ValueError),
        ({"client": "client"}, ValueError),
        ({"client": "10.0.0.256"}, ValueError),
        ({"ttl_s": 0}, ValueError),
        ({"ttl_s": -1}, ValueError),
        ({"ttl_s": float("inf")}, ValueError),
        ({"ttl_s": 86401}, ValueError),
        ({"ttl_s": True}, ValueError),
        ({"stype": "App"}, ValueError),
        ({"stype": SESSION_PREFIX + "x"}, ValueError),
        ({"stype": ""}, ValueError),
    ],
)
def test_bad_session_up_is_refused_without_sending(args, error):
    core, _ = started()
    call = {"app_id": APP2, "sid": "S1", "client": CLIENT, "now": 100.0, **args}
    with pytest.raises(error):
        core.session_up(**call)
    assert core.live_sessions() == []


def test_session_limits():
    core, ctl = started()
    longest = "\U0001f600" * 64
    ctl.receive(core.session_up(APP2, longest, "255.255.255.255", now=100.0, ttl_s=86400, stype="t" * 32))
    ctl.receive(core.session_down(APP2, longest))
    core.session_up(APP2, "S1", CLIENT, now=100.0)
    with pytest.raises(ValueError, match="belongs to"):
        core.session_down(APP, "S1")
    assert [s.sid for s in core.live_sessions()] == ["S1"]


def test_the_session_table_is_bounded(monkeypatch):
    monkeypatch.setattr(agent_core, "MAX_SESSIONS", 2)
    core, _ = started()
    core.session_up(APP2, "S1", CLIENT, now=100.0)
    core.session_up(APP2, "S2", CLIENT, now=100.0)
    with pytest.raises(ValueError, match="full"):
        core.session_up(APP2, "S3", CLIENT, now=100.0)
    assert len(core.session_up(APP2, "S2", CLIENT, now=101.0)) == 1  # renewing an existing one is fine


def test_renewal_extends_the_lease_and_a_changed_session_is_downed_first():
    core, ctl = started()
    ctl.receive(core.session_up(APP2, "S1", CLIENT, now=100.0, ttl_s=60))
    renewed = core.session_up(APP2, "S1", CLIENT, now=150.0, ttl_s=60)
    assert renewed == [Outgoing("session_up", up_body(), CONTROLLERS)]
    assert core.sessions["S1"].expires_at == 210.0 and core.sessions["S1"].refresh_at == 180.0
    moved = core.session_up(APP, "S1", "192.0.2.8", now=151.0, ttl_s=60)
    assert [out.type for out in moved] == ["session_down", "session_up"]
    assert moved[0].body == down_body()
    assert moved[1].body["client"] == "192.0.2.8" and moved[1].body["pport"] == 80
    ctl.receive(moved)
    same_key_other_endpoint = core.session_up(APP2, "S1", "192.0.2.8", now=152.0, ttl_s=60)
    assert [out.type for out in same_key_other_endpoint] == ["session_up"]  # the controller overwrites it


def test_sessions_are_refreshed_at_half_ttl_and_expire_with_a_session_down():
    core, ctl = started()
    core.tick(100.0)
    ctl.receive(core.session_up(APP2, "S1", CLIENT, now=100.0, ttl_s=60))
    ctl.receive(core.session_up(APP2, "S2", CLIENT, now=100.0, ttl_s=600))
    assert core.next_deadline() == 101.0
    assert session_messages(core.tick(129.9)) == []
    assert core.next_deadline() == 130.0  # S1's refresh comes before the heartbeat due at 130.9
    refresh = session_messages(core.tick(130.0))
    assert refresh == [Outgoing("session_up", up_body(ttl_s=30.0), CONTROLLERS)]
    ctl.receive(refresh)
    assert core.sessions["S1"].refresh_at == 160.0 and core.sessions["S1"].expires_at == 160.0
    assert session_messages(core.tick(159.9)) == []
    expired = session_messages(core.tick(160.0))
    assert expired == [Outgoing("session_down", down_body(), CONTROLLERS)]
    ctl.receive(expired)
    assert [s.sid for s in core.live_sessions()] == ["S2"]
    assert session_messages(core.tick(399.0)) == []
    [refresh] = session_messages(core.tick(400.0))
    assert refresh.body == up_body("S2", ttl_s=300.0)
    assert core.sessions["S2"].refresh_at == 700.0
    [gone] = session_messages(core.tick(1000.0))  # a late tick: expired rather than refreshed
    assert gone.type == "session_down" and core.live_sessions() == []


def test_a_step_back_of_the_clock_keeps_what_is_left_of_the_lease():
    core, _ = started()
    core.session_up(APP2, "S1", CLIENT, now=100.0, ttl_s=60)
    assert session_messages(core.tick(50.0)) == []
    session = core.sessions["S1"]
    assert (session.announced_at, session.refresh_at, session.expires_at) == (50.0, 80.0, 110.0)
    [refresh] = session_messages(core.tick(80.0))
    assert refresh.body["ttl_s"] == 30.0


def test_a_snapshot_request_re_announces_live_sessions_to_the_requester():
    core, ctl = started()
    core.session_up(APP2, "S2", CLIENT, now=100.0, ttl_s=60)
    core.session_up(APP, "S1", "192.0.2.9", now=100.0, ttl_s=20)
    core.session_up(APP2, "S3", CLIENT, now=100.0, ttl_s=5)  # expired at 110 but not yet swept by a tick
    sent = answer(core, msg("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "unknown host"}), OTHER, 110.0)
    assert [out.type for out in sent] == ["snapshot", "session_up", "session_up"]
    assert all(out.to == (OTHER,) for out in sent)
    assert [out.body["sid"] for out in sent[1:]] == ["S1", "S2"]
    assert sent[1].body["ttl_s"] == 10.0 and sent[1].body["client"] == "192.0.2.9"
    assert sent[2].body == up_body("S2", ttl_s=50.0)
    ctl.receive(sent)
    assert core.sessions["S2"].refresh_at == 130.0  # the periodic refresh to every controller is unchanged
    wrong = answer(core, msg("postulate_wrong", {"from": "lbu:1", "host_id": "h1", "checksum_actual": 1}), LBU, 111.0)
    assert [out.type for out in wrong] == ["snapshot", "session_up", "session_up"]
    assert answer(core, msg("get_snapshot", {"lbu_id": 1, "host_id": "h2", "reason": ""}), OTHER, 110.0) == []
    postulate = msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": core.table.checksum})
    assert answer(core, postulate, LBU, 112.0) == []


def test_format_sessions():
    core, _ = started()
    core.session_up(APP2, "S1", CLIENT, now=100.0, ttl_s=60)
    core.session_up(APP, "a-much-longer-session-id", "192.0.2.10", now=100.0, ttl_s=600, stype="http_cookie")
    view = {"host_id": "h1", "sessions": [s.to_dict(130.0) for s in core.live_sessions()]}
    lines = format_sessions(view).splitlines()
    assert lines[0] == "host h1  sessions 2"
    assert lines[1].split() == ["SID", "STYPE", "CLIENT", "VIP", "PHYSICAL", "EXPIRES_IN"]
    assert lines[2].split() == ["S1", "app", CLIENT, "10.0.0.100:80/tcp", "10.0.0.11:8080", "30.0s"]
    assert lines[3].split() == [
        "a-much-longer-session-id",
        "http_cookie",
        "192.0.2.10",
        "10.0.0.100:80/tcp",
        "10.0.0.11:80",
        "570.0s",
    ]
