"""The controller's Prometheus metrics (issue 13 item 1): every metric exists from start at zero, and moves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nlb_sdn.config import dump_config
from nlb_sdn.core.effects import DamOp
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import MAIN_DISPATCHER
from nlb_sdn.rest import make_app
from tests.fakeof.switch import FakeDatapath
from tests.frames import syn_frame
from tests.lib.configs import FABRIC, WEB_VIP, weighted_web_config
from tests.lib.metrics import samples, value
from tests.lib.rest import call


@pytest.fixture
def app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A classifier app made as os-ken makes it, not started (REST calls run at once)."""
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    data = dump_config(weighted_web_config(max_connections=2))
    data["controller"]["rest"] = {"enabled": False}
    data["fabric"] = FABRIC
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    return Classifier()


def connect(app: Any, dpid: int) -> FakeDatapath:
    """A switch connecting (its state change to MAIN; the fake switch takes no OFPSetConfig, so no features)."""
    datapath = FakeDatapath(dpid)
    app.state_change(SimpleNamespace(datapath=datapath, state=MAIN_DISPATCHER))
    return datapath


def punt(app: Any, datapath: FakeDatapath, port: int) -> None:
    """A client SYN to VIP web punted by ``datapath``."""
    frame = syn_frame("10.0.0.1", port, WEB_VIP, 80)
    msg = SimpleNamespace(
        datapath=datapath, match={"in_port": 1}, data=frame, total_len=len(frame), table_id=Table.CONNECTIONS, cookie=0
    )
    app.packet_in(SimpleNamespace(msg=msg))


def test_every_metric_exists_at_zero_from_start(app: Any) -> None:
    found = samples(app.metrics.exposition())
    for kind in ("total", "new_connection", "arp", "probe_reply"):
        assert value(found, "nlb_sdn_packet_ins_total", kind=kind) == 0
    assert value(found, "nlb_sdn_flow_mods_total") == 0
    assert value(found, "nlb_sdn_openflow_errors_total") == 0
    for event in ("connect", "disconnect", "refused"):
        assert value(found, "nlb_sdn_switch_connections_total", event=event) == 0
    assert value(found, "nlb_sdn_switches_connected") == 0
    assert value(found, "nlb_sdn_vip_connections", vip="web") == 0
    for member in ("h1", "h2", "h3"):
        assert value(found, "nlb_sdn_member_connections", vip="web", member=member) == 0
        assert value(found, "nlb_sdn_allotment_share", vip="web", member=member) == 0
        assert value(found, "nlb_sdn_member_up", vip="web", member=member) == 1
        assert value(found, "nlb_sdn_member_state", vip="web", member=member, nlb_sdn_member_state="active") == 1
        assert value(found, "nlb_sdn_member_state", vip="web", member=member, nlb_sdn_member_state="drained") == 0
    assert value(found, "nlb_sdn_connections_refused_total", reason="cap") == 0
    assert value(found, "nlb_sdn_classifier_decision_seconds_count") == 0
    for op in ("put", "touch", "delete"):
        assert value(found, "nlb_sdn_dam_operation_seconds_count", op=op) == 0
    for outcome in ("committed", "migrated", "proxied", "failed"):
        assert value(found, "nlb_sdn_migrations_total", outcome=outcome) == 0
    assert value(found, "nlb_sdn_events_total", kind="rest_edit") == 0
    assert value(found, "nlb_sdn_fabric_ports_down") == 0
    assert value(found, "nlb_sdn_fabric_switches_down") == 0
    assert value(found, "nlb_sdn_fabric_path_recomputations_total") == 0


def test_metrics_move_with_switches_packet_ins_connections_and_errors(app: Any) -> None:
    datapath = connect(app, 1)
    for port in range(40000, 40003):
        punt(app, datapath, port)
    error = SimpleNamespace(msg=SimpleNamespace(datapath=datapath, type=1, code=8))
    app.error_msg(error)
    app.apply_dam_op(DamOp.put("route:test", {"m": "h1"}, 10.0), 1.0)
    found = samples(app.metrics.exposition())
    assert value(found, "nlb_sdn_switch_connections_total", event="connect") == 1
    assert value(found, "nlb_sdn_switches_connected") == 1
    assert value(found, "nlb_sdn_mastership", dpid="0000000000000001", role="equal") == 1
    assert value(found, "nlb_sdn_packet_ins_total", kind="total") == 3
    assert value(found, "nlb_sdn_packet_ins_total", kind="new_connection") == 2
    assert value(found, "nlb_sdn_connections_refused_total", reason="cap") == 1
    assert value(found, "nlb_sdn_flow_mods_total") == 4  # two per new connection
    assert value(found, "nlb_sdn_openflow_errors_total") == 1
    assert value(found, "nlb_sdn_openflow_errors_by_code_total", type="1", code="8") == 1
    assert value(found, "nlb_sdn_vip_connections", vip="web") == 2
    per_member = [value(found, "nlb_sdn_member_connections", vip="web", member=m) for m in ("h1", "h2", "h3")]
    assert sum(per_member) == 2
    shares = [value(found, "nlb_sdn_allotment_share", vip="web", member=m) for m in ("h1", "h2", "h3")]
    assert shares == pytest.approx([0.25, 0.25, 0.5])
    assert value(found, "nlb_sdn_classifier_decision_seconds_count") == 3
    assert value(found, "nlb_sdn_dam_operation_seconds_count", op="put") == 1
    assert value(found, "nlb_sdn_events_total", kind="switch_connect") == 1
    assert value(found, "nlb_sdn_events_total", kind="connection_refused") == 1


def test_rest_serves_metrics_in_the_text_format(app: Any) -> None:
    response = call(make_app(app.api, app.lb.events, app.metrics.exposition), "GET", "/metrics")
    assert response.status_int == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert value(samples(response.body), "nlb_sdn_flow_mods_total") == 0


def test_rest_without_metrics_has_no_metrics_resource(app: Any) -> None:
    assert call(make_app(app.api), "GET", "/metrics").status_int == 404


def test_the_grafana_dashboard_queries_only_metrics_the_controller_exposes(app: Any) -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "nlb-sdn.json").read_text())
    exposed = {name for name, _ in samples(app.metrics.exposition())}
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bnlb_sdn_\w+", target["expr"])
    }
    assert len(queried) >= 12
    assert queried - exposed == set()
