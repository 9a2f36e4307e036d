"""Forwarders added and removed at runtime (``/v1/forwarders``) over the real REST app and core: the fabric changes
through the one change path, paths are recomputed, a new switch may connect and gets its pipeline, nlbctl."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from webob import Request

from nlb_sdn import ctl
from nlb_sdn.config import Fabric, validate_model
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.rest import make_app
from nlb_sdn.rest.app import RestApp
from nlb_sdn.rest.forwarders import NewForwarder, added
from nlb_sdn.store import StateError
from nlb_sdn.store.file import FileStore
from nlb_sdn.store.operator import OperatorState, seed_ids
from tests.lib.configs import health_web_config
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble

H1_MAC = "00:00:00:00:00:11"
S4 = {
    "name": "s4",
    "dpid": 4,
    "links": [{"port": 1, "peer": "s1", "peer_port": 11}, {"port": 2, "peer": "s2", "peer_port": 11}],
}
"""A fourth switch linking the client's edge s1 and the backends' edge s2 directly (the fabric's s3 does too)."""


@pytest.fixture
def lb() -> ShellDouble:
    """A core over the three-switch fabric of tests/lib/configs.py."""
    return ShellDouble(health_web_config())


@pytest.fixture
def app(lb: ShellDouble) -> RestApp:
    """The REST app over that core."""
    return make_app(CoreBackend(lb))


def test_add_a_forwarder_changes_the_fabric_and_lets_the_switch_connect(lb: ShellDouble, app: RestApp) -> None:
    assert not lb.ctx.fabric.known_switch(4)
    response = call(app, "POST", "/v1/forwarders", S4)
    assert response.status_int == 201 and response.location.endswith("/v1/forwarders/s4")
    assert response.json["links"] == S4["links"] and response.json["role"] == "forwarder"
    assert response.json["connected"] is False and response.json["hosts"] == []
    assert "ETag" in response.headers
    assert lb.ctx.fabric.known_switch(4) and lb.allowed_dpids is not None and 4 in lb.allowed_dpids
    assert lb.ctx.fabric.forwarding[4][H1_MAC] == 2
    assert any(getattr(msg, "table_id", None) == Table.FORWARD for msg in lb.switch_flows(4))
    listed = call(app, "GET", "/v1/forwarders").json
    assert listed["count"] == 4 and [f["name"] for f in listed["forwarders"]] == ["s1", "s2", "s3", "s4"]
    assert call(app, "GET", "/v1/forwarders/4").json["name"] == "s4"
    assert call(app, "GET", "/v1/forwarders/s2").json["hosts"] == ["h1", "h2", "h3"]


def test_remove_a_forwarder_reroutes_over_the_other(lb: ShellDouble, app: RestApp) -> None:
    assert lb.ctx.fabric.forwarding[1][H1_MAC] == 10  # c1's edge reaches h1 through s3
    assert call(app, "POST", "/v1/forwarders", S4).status_int == 201
    sent = lb.apply_config(lb.config, dpids=[1, 2])  # nothing changed: nothing sent
    assert sent == {} or not any(sent.values())
    assert call(app, "DELETE", "/v1/forwarders/s3").status_int == 204
    assert not lb.ctx.fabric.known_switch(3) and lb.ctx.fabric.forwarding[1][H1_MAC] == 11
    assert all(link.a != "s3" and link.b != "s3" for link in lb.config.fabric.links)
    assert call(app, "GET", "/v1/forwarders/s3").status_int == 404


def test_a_fabric_change_sends_each_connected_switch_its_new_paths(lb: ShellDouble, app: RestApp) -> None:
    assert call(app, "POST", "/v1/forwarders", S4).status_int == 201
    fabric = lb.config.fabric
    without_s3 = fabric.model_copy(
        update={
            "switches": [switch for switch in fabric.switches if switch.name != "s3"],
            "links": [link for link in fabric.links if "s3" not in (link.a, link.b)],
        }
    )
    sent = lb.apply_config(lb.config.model_copy(update={"fabric": without_s3}), dpids=[1, 2, 4])
    assert set(sent) == {1, 2, 4}
    toward_h1 = [
        msg
        for msg in sent[1]
        if getattr(msg, "table_id", None) == Table.FORWARD and dict(msg.match.items()).get("eth_dst") == H1_MAC
    ]
    assert [msg.instructions[0].actions[0].port for msg in toward_h1] == [11]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({**S4, "name": "s1"}, 409, "name: forwarder 's1' already exists"),
        ({**S4, "dpid": 2}, 409, "dpid: forwarder 's2' already has dpid 2"),
        ({**S4, "links": [{"port": 1, "peer": "nowhere", "peer_port": 1}]}, 400, "unknown switch 'nowhere'"),
        ({**S4, "links": [{"port": 1, "peer": "s2", "peer_port": 1}]}, 400, "port s2:1 is used twice"),
        ({**S4, "extra": 1}, 400, "extra"),
        ({"name": "s4"}, 400, "dpid"),
    ],
)
def test_a_bad_forwarder_is_refused_and_changes_nothing(
    lb: ShellDouble, app: RestApp, body: dict[str, Any], status: int, detail: str
) -> None:
    before = lb.config
    response = call(app, "POST", "/v1/forwarders", body)
    assert response.status_int == status and detail in response.json["detail"]
    assert lb.config == before


def test_a_forwarder_with_hosts_is_not_removed(lb: ShellDouble, app: RestApp) -> None:
    response = call(app, "DELETE", "/v1/forwarders/s2")
    assert response.status_int == 409 and "h1, h2, h3" in response.json["detail"]
    assert call(app, "DELETE", "/v1/forwarders/s9").status_int == 404
    assert lb.ctx.fabric.known_switch(2)


def test_if_match_guards_a_forwarder_change(app: RestApp) -> None:
    request_body = json.dumps(S4).encode()
    request = Request.blank("/v1/forwarders", method="POST", headers={"If-Match": '"7"'})
    request.body, request.content_type = request_body, "application/json"
    response = request.get_response(app)
    assert response.status_int == 412 and response.headers["ETag"] == '"1"'


def nlbctl(lb: ShellDouble, *argv: str) -> tuple[int, str, str]:
    """Run nlbctl against the core's REST app; exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    args = ctl.build_parser().parse_args(list(argv))

    def send(method: str, path: str, body: Any) -> ctl.Reply:
        response = call(make_app(CoreBackend(lb)), method, path, body)
        return ctl.Reply(response.status_int, json.loads(response.body) if response.body else None)

    return ctl.run(args, send, out, err), out.getvalue(), err.getvalue()


def test_nlbctl_adds_lists_and_removes_a_forwarder(lb: ShellDouble) -> None:
    code, _, _ = nlbctl(lb, "forwarder", "add", "s4", "--dpid", "4", "--link", "1:s1:11", "--link", "2:s2:11")
    assert code == ctl.Exit.OK and lb.ctx.fabric.known_switch(4)
    code, out, _ = nlbctl(lb, "forwarder", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "DPID", "ROLE", "CONNECTED", "LINKS", "HOSTS"]
    assert rows[-1].split() == ["s4", "4", "forwarder", "False", "2", "0"]
    assert nlbctl(lb, "forwarder", "remove", "s4")[0] == ctl.Exit.OK and not lb.ctx.fabric.known_switch(4)
    code, _, err = nlbctl(lb, "forwarder", "add", "s5", "--dpid", "5", "--link", "1-s1")
    assert code == ctl.Exit.USAGE and "PORT:PEER:PEER_PORT" in err
    assert nlbctl(lb, "forwarder", "remove", "s2")[0] == ctl.Exit.CONFLICT


def test_a_rest_made_fabric_is_stored_and_survives_a_restart(tmp_path: Path, lb: ShellDouble, app: RestApp) -> None:
    file_config = health_web_config()
    path = str(tmp_path / "nlb.yaml.state.json")
    state = OperatorState(FileStore(path), file_config)
    assert state.start() == file_config and "fabric" not in json.loads(Path(path).read_text())
    assert call(app, "POST", "/v1/forwarders", S4).status_int == 201
    state.commit(lb.config, seed_ids(lb.config), expected=None)
    stored = json.loads(Path(path).read_text())
    assert [switch["name"] for switch in stored["fabric"]["switches"]] == ["s1", "s2", "s3", "s4"]
    restarted = OperatorState(FileStore(path), file_config).start()
    assert restarted.fabric == lb.config.fabric and restarted.vips == file_config.vips
    assert call(app, "DELETE", "/v1/forwarders/s4").status_int == 204
    state.commit(lb.config, seed_ids(lb.config), expected=None)
    assert "fabric" not in json.loads(Path(path).read_text()), "back to the file's fabric: nothing to keep"


def test_a_stored_fabric_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": 1, "version": 1, "vips": [], "vip_ids": {}, "fabric": []}))
    with pytest.raises(StateError, match="fabric: expected a fabric object"):
        FileStore(str(path)).load()


def test_adding_a_forwarder_off_the_paths_leaves_every_table_3_entry_alone(lb: ShellDouble) -> None:
    body = {**S4, "links": [{"port": 1, "peer": "s1", "peer_port": 11}]}
    fabric = validate_model(Fabric, added(lb.config, validate_model(NewForwarder, body, "test"))["fabric"], "test")
    sent = lb.apply_config(lb.config.model_copy(update={"fabric": fabric}), dpids=[1, 2, 3])
    forward = [msg for msgs in sent.values() for msg in msgs if getattr(msg, "table_id", None) == Table.FORWARD]
    assert forward == [], "no delete-all and re-add of table 3: established connections' paths stay untouched"
    assert lb.ctx.fabric.forwarding[4] == {mac: 1 for mac in lb.ctx.fabric.host_macs.values()}
