"""Routing rules: the config models and their errors, first-match-wins decisions, and session pins."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nlb_sdn.config import ConfigError, validate_model
from nlb_sdn.config.routing import Pool, RouteRule, check_routing
from nlb_sdn.router.parse import ClientHello, HttpRequest, parse_request
from nlb_sdn.router.rules import DEFAULT, Decision, choose, host_matches
from tests.lib.router import client_hello, http_head, route_rules as rules

POOLS = [
    Pool(name="api", members=["h1", "h2"]),
    Pool(name="static", members=["h3"]),
    Pool(name="web", members=["h1", "h2", "h3"]),
]


def http(target: str = "/", host: str = "www.example.com", *headers: str) -> HttpRequest:
    """A parsed GET request."""
    request = parse_request(http_head(target, host, *headers))
    assert isinstance(request, HttpRequest), request
    return request


def tls(sni: str | None = "www.example.com", session_id: bytes = b"") -> ClientHello:
    """A parsed ClientHello."""
    hello = parse_request(client_hello(sni, session_id))
    assert isinstance(hello, ClientHello), hello
    return hello


def rule_error(data: dict[str, Any]) -> ConfigError:
    """The ConfigError validating one rule gives."""
    with pytest.raises(ConfigError) as info:
        validate_model(RouteRule, data, "test.yaml")
    return info.value


class TestModels:
    """The rule and pool config models: YAML shapes, errors naming key and reason, and the routing check."""

    def test_yaml_shapes(self) -> None:
        parsed = rules(
            {"match": {"path_prefix": "/api/"}, "pool": "api"},
            {"match": {"host": "*.Example.COM", "header": {"name": "X-Canary", "value": "1"}}, "pool": "static"},
            {"match": {"cookie": {"name": "NLBSESS"}}, "pin": "cookie"},
            {"match": {"tls_session_id": True}, "pin": "tls_session_id", "pool": "web"},
            {"pool": "web"},
        )
        assert parsed[1].match.host == "*.example.com"
        assert parsed[2].lookup_type == "app" and parsed[3].lookup_type == "tls_session_id"
        assert not parsed[4].match.uses("http") and not parsed[4].match.uses("tls")

    @pytest.mark.parametrize(
        "data,key,reason",
        [
            ({"match": {"path_prefix": "/a"}}, "(top level)", "a rule without pin needs a pool"),
            ({"match": {"path_prefix": "api"}, "pool": "a"}, "match.path_prefix", "must start with /"),
            ({"match": {"host": "bad host"}, "pool": "a"}, "match.host", "not a host name"),
            ({"match": {"sni": "*.*.x"}, "pool": "a"}, "match.sni", "not a host name"),
            ({"match": {"header": {"name": "Bad Name"}}, "pool": "a"}, "match.header.name", "should match pattern"),
            ({"match": {"header": {"name": "X", "value": "a\nb"}}, "pool": "a"}, "match.header.value", "control"),
            ({"match": {"cookie": {"name": "a;b"}}, "pool": "a"}, "match.cookie.name", "should match pattern"),
            ({"match": {"host": "a.example", "sni": "a.example"}, "pool": "a"}, "match", "mixes HTTP conditions"),
            ({"match": {"colour": "red"}, "pool": "a"}, "match.colour", "unknown key"),
            ({"match": {}, "pin": "cookie"}, "(top level)", "pin cookie needs match.cookie"),
            ({"match": {"cookie": {"name": "S", "value": "x"}}, "pin": "cookie"}, "(top level)", "no value"),
            ({"match": {"sni": "a.example"}, "pin": "tls_session_id"}, "(top level)", "tls_session_id: true"),
            ({"match": {}, "pin": "sticky", "pool": "a"}, "pin", "Input should be"),
            ({"pool": "a", "session_type": "app"}, "(top level)", "only for pin rules"),
            (
                {"match": {"cookie": {"name": "S"}}, "pin": "cookie", "session_type": "Bad-Type"},
                "session_type",
                "should match pattern",
            ),
        ],
    )
    def test_rule_errors_name_key_and_reason(self, data: dict[str, Any], key: str, reason: str) -> None:
        error = rule_error(data)
        assert error.key == key and reason in error.reason, error

    @pytest.mark.parametrize(
        "data,key,reason",
        [
            ({"name": "a", "members": []}, "members", "at least 1 item"),
            ({"name": "a", "members": ["h1", "h1"]}, "members", "listed twice"),
            ({"name": "a b", "members": ["h1"]}, "name", "should match pattern"),
            ({"members": ["h1"]}, "name", "Field required"),
        ],
    )
    def test_pool_errors(self, data: dict[str, Any], key: str, reason: str) -> None:
        with pytest.raises(ConfigError) as info:
            validate_model(Pool, data, "test.yaml")
        assert info.value.key == key and reason in info.value.reason, info.value

    def test_check_routing(self) -> None:
        members = ["h1", "h2", "h3"]
        check_routing(POOLS, rules({"match": {"path_prefix": "/"}, "pool": "api"}), members)
        with pytest.raises(ValueError, match=r"^pools: duplicate pool name 'api'$"):
            check_routing([*POOLS, Pool(name="api", members=["h1"])], [], members)
        with pytest.raises(ValueError, match=r"^pools\[static\]\.members: unknown member 'h9'"):
            check_routing([Pool(name="static", members=["h3", "h9"])], [], members)
        with pytest.raises(ValueError, match=r"^rules\[1\]\.pool: unknown pool 'images'$"):
            check_routing(POOLS, rules({"pool": "api"}, {"pool": "images"}), members)

    def test_models_reject_assignment_of_bad_values(self) -> None:
        pool = Pool(name="a", members=["h1"])
        with pytest.raises(ValidationError):
            pool.members = []


class TestChoose:
    """First-match-wins decisions over one rule list, and the session pins they look up."""

    RULES = rules(
        {"match": {"cookie": {"name": "NLBSESS"}}, "pin": "cookie", "pool": "web"},
        {"match": {"tls_session_id": True}, "pin": "tls_session_id"},
        {"match": {"path_prefix": "/api/"}, "pool": "api"},
        {"match": {"path_prefix": "/static/", "host": "www.example.com"}, "pool": "static"},
        {"match": {"header": {"name": "x-canary", "value": "on"}}, "pool": "static"},
        {"match": {"cookie": {"name": "beta", "value": "yes"}}, "pool": "static"},
        {"match": {"sni": "*.images.example"}, "pool": "static"},
        {"match": {"host": "*.api.example"}, "pool": "api"},
    )

    def decide(
        self, request: HttpRequest | ClientHello, sessions: dict[tuple[str, str], str] | None = None
    ) -> Decision:
        """The decision for ``request`` with a lookup over ``sessions``."""
        table = sessions or {}
        return choose(request, self.RULES, POOLS, lambda stype, sid: table.get((stype, sid)))

    def test_content_rules(self) -> None:
        assert self.decide(http("/api/items")) == Decision("api", 2, "rule")
        assert self.decide(http("/static/app.js")) == Decision("static", 3, "rule")
        assert self.decide(http("/static/app.js", "other.example")) == DEFAULT
        assert self.decide(http("/", "x", "X-Canary: on")) == Decision("static", 4, "rule")
        assert self.decide(http("/", "x", "X-Canary: off", "x-canary: on")) == Decision("static", 4, "rule")
        assert self.decide(http("/", "x", "X-Canary: off")) == DEFAULT
        assert self.decide(http("/", "x", "Cookie: beta=yes")) == Decision("static", 5, "rule")
        assert self.decide(http("/", "x", "Cookie: beta=no")) == DEFAULT
        assert self.decide(http("/", "v1.api.example")) == Decision("api", 7, "rule")
        assert self.decide(http("/", "api.example")) == DEFAULT
        assert self.decide(http("/apix")) == DEFAULT
        assert self.decide(http("/static/../api/x")) == Decision("api", 2, "rule")

    def test_first_match_wins(self) -> None:
        request = http("/api/x", "www.example.com", "X-Canary: on")
        assert self.decide(request).rule == 2
        assert choose(request, list(reversed(self.RULES)), POOLS) == Decision("static", 3, "rule")
        assert choose(
            request, rules({"pool": "web"}, {"match": {"path_prefix": "/api/"}, "pool": "api"}), POOLS
        ) == Decision("web", 0, "rule")

    def test_tls_rules_only_match_tls(self) -> None:
        assert self.decide(tls("cdn.images.example")) == Decision("static", 6, "rule")
        assert self.decide(tls("images.example")) == DEFAULT
        assert self.decide(tls(None)) == DEFAULT
        assert self.decide(http("/", "cdn.images.example")) == DEFAULT
        assert choose(tls(), rules({"match": {"path_prefix": "/"}, "pool": "api"}), POOLS) == DEFAULT
        assert choose(tls(), rules({"pool": "api"}), POOLS) == Decision("api", 0, "rule")

    def test_cookie_pin(self) -> None:
        sessions = {("app", "s-42"): "h3", ("app", "s-99"): "h9"}
        pinned = self.decide(http("/api/x", "x", "Cookie: NLBSESS=s-42"), sessions)
        assert pinned == Decision("web", 0, "cookie", "h3")
        assert self.decide(http("/api/x", "x", "Cookie: NLBSESS=unknown"), sessions) == Decision("api", 2, "rule")
        assert self.decide(http("/api/x", "x", "Cookie: NLBSESS="), sessions) == Decision("api", 2, "rule")
        assert self.decide(http("/api/x", "x", "Cookie: NLBSESS=s-99"), sessions).reason == "rule"
        assert choose(http("/", "x", "Cookie: NLBSESS=s-42"), self.RULES, POOLS) == DEFAULT

    def test_tls_session_pin(self) -> None:
        sid = bytes(range(32))
        sessions = {("tls_session_id", sid.hex()): "h2"}
        assert self.decide(tls("a.example", sid), sessions) == Decision(None, 1, "tls_session_id", "h2")
        assert self.decide(tls("a.example", b"\x01" * 32), sessions) == DEFAULT
        assert self.decide(tls("a.example"), sessions) == DEFAULT

    def test_pin_session_type_is_configurable(self) -> None:
        pin = rules({"match": {"cookie": {"name": "JSESSIONID"}}, "pin": "cookie", "session_type": "http_cookie"})
        seen: list[tuple[str, str]] = []
        decision = choose(
            http("/", "x", "Cookie: JSESSIONID=abc"), pin, POOLS, lambda stype, sid: seen.append((stype, sid)) or "h1"
        )
        assert seen == [("http_cookie", "abc")] and decision == Decision(None, 0, "cookie", "h1")

    def test_no_rules(self) -> None:
        assert choose(http(), [], []) == DEFAULT


def test_host_matches() -> None:
    assert host_matches("a.example", "a.example") and not host_matches("a.example", "b.a.example")
    assert host_matches("*.a.example", "b.a.example") and host_matches("*.a.example", "c.b.a.example")
    assert not host_matches("*.a.example", "a.example") and not host_matches("*.a.example", "xa.example")
