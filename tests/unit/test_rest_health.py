"""REST views of health and load over a real LoadBalancer core: member state, allotment and the H&L cache."""

from __future__ import annotations

import pytest

from nlb_sdn.config import Config
from nlb_sdn.rest import make_app
from tests.lib.configs import health_web_config as config
from tests.lib.core import punt_syns as open_connections
from tests.lib.rest import call
from tests.lib.shell_double import ShellDouble


class CoreBackend:
    """The REST backend the classifier app provides, over the pure core and a fixed clock."""

    def __init__(self, lb: ShellDouble) -> None:
        self.lb = lb

    def current_config(self) -> Config:
        return self.lb.config

    def config_version(self) -> int:
        return 1

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        self.lb.apply_config(new, dpids=[], now=5.0)
        return 1

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        return self.lb.connections(vip, member)

    def stats(self) -> dict:
        return self.lb.stats()

    def member_state(self, vip: str, member: str) -> dict:
        return self.lb.member_state(vip, member)

    def allotment(self, vip: str) -> dict:
        return self.lb.allotment(vip, now=5.0)

    def hl_cache(self) -> dict:
        return self.lb.health.cache.as_dict(5.0)


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
