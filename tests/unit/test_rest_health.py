"""REST views of health and load over a real LoadBalancer core: member state, allotment and the H&L cache."""

from __future__ import annotations

import pytest

from nlb_sdn.rest import make_app
from tests.lib.configs import health_web_config as config
from tests.lib.core import punt_syns as open_connections
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble


@pytest.fixture
def lb() -> ShellDouble:
    balancer = ShellDouble(config())
    open_connections(balancer, 12)
    return balancer


def test_member_state_reads_and_sets_the_directive(lb: ShellDouble):
    app = make_app(CoreBackend(lb))
    response = call(app, "GET", "/v1/vips/web/members/h1/state")
    assert response.status_int == 200
    assert response.json["target"] == "active" and response.json["current"] == "active"
    assert response.json["connections"] == 4  # 12 connections over equal weights
    response = call(app, "PUT", "/v1/vips/web/members/h1/state", {"state": "draining"})
    assert response.status_int == 200, response.text
    assert response.json["target"] == "draining" and response.json["current"] == "draining"
    assert lb.config.vip("web").member("h1").state == "draining"
    assert call(app, "GET", "/v1/vips/web/allotment").json["values"].keys() == {"h2", "h3"}


@pytest.mark.parametrize(
    "body, status",
    [
        ({"state": "sleeping"}, 400),
        ({"weight": 2}, 400),
        ({}, 400),
    ],
)
def test_bad_state_changes_are_refused(lb: ShellDouble, body: dict, status: int):
    app = make_app(CoreBackend(lb))
    response = call(app, "PUT", "/v1/vips/web/members/h1/state", body)
    assert response.status_int == status and response.json["detail"]
    assert lb.config.vip("web").member("h1").state == "active"


def test_allotment_and_cache_views(lb: ShellDouble):
    app = make_app(CoreBackend(lb))
    allotment = call(app, "GET", "/v1/vips/web/allotment").json
    assert allotment["scheme"] == "percent" and sum(allotment["values"].values()) == 100
    assert {c["name"] for c in allotment["candidates"]} == {"h1", "h2", "h3"}
    assert call(app, "GET", "/v1/vips/nope/allotment").status_int == 404
    assert call(app, "GET", "/v1/vips/web/members/nobody/state").status_int == 404
    assert call(app, "GET", "/v1/hl/cache").json["hosts"] in ({}, [])
