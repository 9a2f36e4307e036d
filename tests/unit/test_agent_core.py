"""Agent: config schema, rise/fall and load parsing, and the pure state machine driven with fake time."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.agent.checks import CheckState, count_established, established_connections, http_status_ok, parse_number
from nlb_sdn.agent.cli import check_config, format_table
from nlb_sdn.agent.config import AgentConfig, load_agent_config, parse_agent_config
from nlb_sdn.agent.core import AgentCore, Outgoing
from nlb_sdn.config import ConfigError
from nlb_sdn.health.protocol import TCP_MAX_SIZE, Message, Verifier, encode
from nlb_sdn.health.table import HLTable, Row

KEY = b"0123456789abcdef"
CONTROLLERS = (("10.0.0.254", 9100), ("10.0.0.253", 9200))
LBU = ("10.0.0.254", 9100)
OTHER = ("10.0.0.9", 40000)
APP = "10.0.0.100:80/tcp/10.0.0.11:80"
APP2 = "10.0.0.100:80/tcp/10.0.0.11:8080?host=a"


def agent_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "host_id": "h1", "key_file": "/etc/nlb-sdn/key", "controllers": ["10.0.0.254", "10.0.0.253:9200"],
        "hb_period": 1.0,
        "apps": [
            {"vip": "10.0.0.100", "vport": 80, "pip": "10.0.0.11", "pport": 80, "capacity": 100,
             "health": {"type": "tcp", "rise": 2, "fall": 2}},
            {"vip": "10.0.0.100", "vport": 80, "pip": "10.0.0.11", "pport": 8080, "proto_info": "host=a",
             "capacity": 50, "target": "draining", "load": {"type": "static", "value": 4},
             "health": {"type": "http", "path": "/health", "expect_status": 204, "interval": 2, "timeout": 1}},
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
    assert cfg.apps[1].initial_row() == Row(vip="10.0.0.100", vport=80, pip="10.0.0.11", pport=8080,
                                            proto_info="host=a", health="unknown", load=4.0, capacity=50.0,
                                            target="draining", current="inactive")
    assert cfg.app(APP2) is cfg.apps[1] and cfg.app("nope") is None


def test_config_accepts_command_and_file_sources():
    apps = [{"vip": "10.0.0.100", "vport": 80, "pip": "10.0.0.11", "pport": 80, "capacity": 1,
             "health": {"type": "command", "argv": ["true"]}, "load": {"type": "file", "path": "/tmp/load"}},
            {"vip": "10.0.0.100", "vport": 81, "pip": "10.0.0.11", "pport": 81, "capacity": 1,
             "load": {"type": "command", "argv": ["echo", "3"], "timeout": 0.5}}]
    cfg = config(apps=apps, listen="127.0.0.1:0", control_socket="/tmp/a.sock")
    assert cfg.listen_address == ("127.0.0.1", 0)
    assert cfg.apps[0].health.type == "command" and cfg.apps[1].health.type == "tcp"


@pytest.mark.parametrize("changes, key, reason", [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"host_id": "h 1"}, "host_id", "String should match pattern"),
    ({"controllers": []}, "controllers", "at least 1 item"),
    ({"controllers": ["ctl.example:9100"]}, "controllers[0]", "not an IPv4 address"),
    ({"controllers": ["10.0.0.1:0"]}, "controllers[0]", "bad port"),
    ({"listen": "10.0.0.1:70000"}, "listen", "bad port"),
    ({"hb_period": 0}, "hb_period", "greater than or equal to 0.05"),
    ({"control_socket": "/x" * 60}, "control_socket", "at most 100 characters"),
])
def test_config_errors_name_the_key(changes, key, reason):
    with pytest.raises(ConfigError) as err:
        parse_agent_config(agent_data(**changes), "agent.yaml")
    assert (err.value.source, err.value.key) == ("agent.yaml", key)
    assert reason in err.value.reason


@pytest.mark.parametrize("app_change, key, reason", [
    ({"colour": "red"}, "apps[0].colour", "unknown key"),
    ({"vip": "10.0.0.300"}, "apps[0].vip", "not an IPv4 address"),
    ({"capacity": 0}, "apps[0].capacity", "greater than 0"),
    ({"proto": "udp"}, "apps[0].proto", "Input should be 'tcp'"),
    ({"target": "drained"}, "apps[0].target", "Input should be"),
    ({"health": {"type": "tcp", "interval": 1, "timeout": 2}}, "apps[0].health.tcp", "longer than interval"),
    ({"health": {"type": "ping"}}, "apps[0].health", "does not match any of the expected tags"),
    ({"health": {"type": "http", "path": "health"}}, "apps[0].health.http.path", "String should match pattern"),
    ({"health": {"type": "command", "argv": []}}, "apps[0].health.command.argv", "at least 1 item"),
    ({"load": {"type": "static", "value": -1}}, "apps[0].load.static.value", "greater than or equal to 0"),
    ({"load": {"type": "connections", "port": 80}}, "apps[0].load.connections.port", "unknown key"),
])
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
    many = [{"vip": "10.0.0.100", "vport": 80, "pip": "10.0.0.11", "pport": 1000 + i, "capacity": 1}
            for i in range(7)]
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
    assert f"{bad}: hb_perod: unknown key" in capsys.readouterr().err
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
    assert [state.observe(ok) for ok in (False, False, True, False, False, False)] == \
        ["ok", "ok", "ok", "ok", "ok", "failed"]
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


@pytest.mark.parametrize("response, status, contains, ok", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nh1\n", 200, "", True),
    (b"HTTP/1.0 200 OK\r\n\r\nh1\n", 200, "h1", True),
    (b"HTTP/1.1 200 OK\r\n\r\nh2\n", 200, "h1", False),
    (b"HTTP/1.1 503 Unavailable\r\n\r\n", 200, "", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, "", True),
    (b"garbage", 200, "", False),
    (b"", 200, "", False),
])
def test_http_status_ok(response, status, contains, ok):
    assert http_status_ok(response, status, contains) is ok


@pytest.mark.parametrize("text, value", [("3\n", 3.0), (" 2.5 conns", 2.5), ("", None), ("x", None), ("-1", None),
                                         ("nan", None), ("inf", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_format_table_shows_all_nine_fields():
    view = {"host_id": "h1", "checksum": 0xAB, "rows": [r.to_dict() for r in AgentCore(config(), 0.0).table.rows()]}
    lines = format_table(view).splitlines()
    assert lines[0] == "host h1  rows 2  checksum 0x000000ab"
    assert lines[1].split() == ["VIP", "PHYSICAL", "PROTO", "PROTO_INFO", "HEALTH", "LOAD", "CAPACITY", "TARGET",
                                "CURRENT"]
    assert lines[2].split() == ["10.0.0.100:80", "10.0.0.11:80", "tcp", "(any)", "unknown", "0", "100", "active",
                                "inactive"]
    assert lines[3].split() == ["10.0.0.100:80", "10.0.0.11:8080", "tcp", "host=a", "unknown", "4", "50",
                                "draining", "inactive"]
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


def started() -> tuple[AgentCore, Controller]:
    """A core whose initial table the fake controller already mirrors."""
    core = AgentCore(config(), now=100.0)
    ctl = Controller()
    ctl.receive([core.snapshot((LBU,))])
    return core, ctl


def test_start_postulates_and_heartbeats_follow_the_period():
    core = AgentCore(config(), now=100.0)
    assert core.start() == [Outgoing("postulate", {"from": "h1", "host_id": "h1", "checksum": core.table.checksum},
                                     CONTROLLERS)]
    first = core.tick(100.0)
    assert first == [Outgoing("heartbeat", {"host_id": "h1", "checksum": core.table.checksum, "row_count": 2,
                                            "period_ms": 1000}, CONTROLLERS)]
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
    [snap] = core.on_message(msg("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "checksum"}), OTHER)
    assert snap.type == "snapshot" and snap.to == (OTHER,)
    ctl.receive([snap])
    assert ctl.mirror.checksum == core.table.checksum and len(ctl.mirror) == 2
    assert core.on_message(msg("get_snapshot", {"lbu_id": 1, "host_id": "h2", "reason": ""}), OTHER) == []


def test_postulate_wrong_checksum_is_answered_then_current_is_recorded():
    core, ctl = started()
    before = core.table.checksum
    sent = core.on_message(msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": before ^ 1,
                                             "current": {APP: "active", "unknown-app": "active"}}), OTHER)
    assert [out.type for out in sent] == ["postulate_wrong", "row_change"]
    assert sent[0] == Outgoing("postulate_wrong", {"from": "h1", "host_id": "h1", "checksum_actual": before},
                               (OTHER,))
    assert sent[1].to == CONTROLLERS + (OTHER,) and sent[1].body["row"]["current"] == "active"
    ctl.receive(sent)
    assert core.table.get(APP).current == "active"


def test_postulate_with_the_right_checksum_only_records_current():
    core, ctl = started()
    checksum = core.table.checksum
    sent = core.on_message(msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": checksum,
                                             "current": {APP2: "drained"}}), LBU)
    assert [out.type for out in sent] == ["row_change"] and sent[0].to == CONTROLLERS
    ctl.receive(sent)
    assert core.on_message(msg("postulate", {"from": "lbu:1", "host_id": "h1", "checksum": core.table.checksum}),
                           LBU) == []
    assert core.on_message(msg("postulate", {"from": "lbu:1", "host_id": "h2", "checksum": 0}), LBU) == []


def test_postulate_wrong_from_a_controller_gets_a_snapshot():
    core, _ = started()
    [snap] = core.on_message(msg("postulate_wrong", {"from": "lbu:1", "host_id": "h1", "checksum_actual": 1}), LBU)
    assert snap.type == "snapshot" and snap.to == (LBU,)


def test_set_target_state_is_answered_by_a_row_change_even_when_unchanged():
    core, ctl = started()
    [change] = core.on_message(msg("set_target_state", {"lbu_id": 1, "app_id": APP, "target": "draining"}), OTHER)
    assert change.to == CONTROLLERS + (OTHER,) and change.body["row"]["target"] == "draining"
    ctl.receive([change])
    [same] = core.on_message(msg("set_target_state", {"lbu_id": 1, "app_id": APP, "target": "draining"}), OTHER)
    assert same.to == (OTHER,) and same.body["prev_checksum"] == same.body["checksum"] == core.table.checksum
    ctl.receive([same])
    assert core.on_message(msg("set_target_state", {"lbu_id": 1, "app_id": "nope", "target": "active"}), OTHER) == []
    [local] = core.set_target(APP, "inactive")
    assert local.to == CONTROLLERS
    assert core.set_target(APP, "inactive") == []
    with pytest.raises(ValueError):
        core.set_target(APP, "drained")


def test_messages_not_for_an_agent_are_ignored():
    core, _ = started()
    for type, body in [("heartbeat", {"host_id": "h1", "checksum": 1, "row_count": 0, "period_ms": 1000}),
                       ("goodbye", {"host_id": "h1", "reason": "x"}), ("session_up", {}),
                       ("snapshot", {"host_id": "h1", "rows": [], "checksum": 0})]:
        assert core.on_message(msg(type, body), LBU) == []


def test_stop_says_goodbye_three_times():
    core, ctl = started()
    sent = core.stop("SIGTERM")
    assert sent == [Outgoing("goodbye", {"host_id": "h1", "reason": "SIGTERM"}, CONTROLLERS)] * 3
    assert len(ctl.receive(sent)) == 3
