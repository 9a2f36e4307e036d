"""nlbctl over the real REST app and core: every resource, tables and --json, exit codes, tokens; and once over HTTP
with a bearer token."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from nlb_sdn import ctl
from nlb_sdn.config import dump_config, parse_config
from nlb_sdn.rest import make_app
from tests.lib.configs import health_web_config
from tests.lib.core import punt_syns
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble

TOKEN = "t0ken-for-nlbctl-tests-0123456789abcdef"


@pytest.fixture
def lb() -> ShellDouble:
    """A core with the health web config and 6 connections."""
    balancer = ShellDouble(health_web_config())
    punt_syns(balancer, 6)
    return balancer


def wsgi_transport(app: Any) -> ctl.Transport:
    """A transport that calls the WSGI app in process."""

    def send(method: str, path: str, body: Any) -> ctl.Reply:
        response = call(app, method, path, body)
        return ctl.Reply(response.status_int, json.loads(response.body) if response.body else None)

    return send


def nlbctl(lb: ShellDouble, *argv: str) -> tuple[int, str, str]:
    """Run nlbctl against the core's REST app; exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    args = ctl.build_parser().parse_args(list(argv))
    code = ctl.run(args, wsgi_transport(make_app(CoreBackend(lb))), out, err)
    return code, out.getvalue(), err.getvalue()


def test_vip_list_is_a_table_and_json_is_the_api_answer(lb: ShellDouble) -> None:
    code, out, _ = nlbctl(lb, "vip", "list")
    header, row = out.splitlines()[:2]
    columns = ["NAME", "ADDRESS", "PORT", "MODE", "DISPATCH", "MEMBERS", "PROVISIONING_STATUS", "OPERATING_STATUS"]
    assert code == ctl.Exit.OK and header.split() == columns
    assert row.split()[:3] == ["web", "10.0.0.100", "80"] and row.split()[5:] == ["3", "ACTIVE", "ONLINE"]
    code, out, _ = nlbctl(lb, "--json", "vip", "list")
    assert ctl.items_of(json.loads(out))[0]["name"] == "web"


def test_members_weight_state_and_allotment(lb: ShellDouble) -> None:
    code, out, _ = nlbctl(lb, "member", "list", "web")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["h1", "h2", "h3"]
    assert out.splitlines()[0].split()[-2:] == ["PROVISIONING_STATUS", "OPERATING_STATUS"]
    assert nlbctl(lb, "member", "weight", "web", "h2", "5")[0] == ctl.Exit.OK
    assert lb.config.vip("web").member("h2").weight == 5
    code, out, _ = nlbctl(lb, "member", "set-state", "web", "h1", "draining")
    assert code == 0 and "target" in out and "draining" in out
    assert lb.config.vip("web").member("h1").state == "draining"
    code, out, _ = nlbctl(lb, "--json", "vip", "allotment", "web")
    assert code == 0 and set(json.loads(out)["values"]) == {"h2", "h3"}


def test_add_and_remove_a_member_and_create_and_delete_a_vip(lb: ShellDouble, tmp_path: Path) -> None:
    code, out, _ = nlbctl(
        lb,
        "member",
        "add",
        "web",
        "--address",
        "10.0.0.14",
        "--port",
        "80",
        "--weight",
        "2",
        "--mac",
        "00:00:00:00:00:14",
    )
    assert code == 0 and "10.0.0.14" in out
    assert nlbctl(lb, "member", "remove", "web", "10.0.0.14:80") == (ctl.Exit.OK, "", "")
    vip = dump_config(lb.config)["vips"][0] | {"name": "web2", "address": "10.0.0.101"}
    spec = tmp_path / "web2.yaml"
    spec.write_text(json.dumps(vip))
    assert nlbctl(lb, "vip", "create", "--file", str(spec))[0] == ctl.Exit.OK
    assert lb.config.vip("web2") is not None
    assert nlbctl(lb, "vip", "delete", "web2")[0] == ctl.Exit.OK
    assert lb.config.vip("web2") is None


@pytest.mark.parametrize(
    "argv, code, said",
    [
        (("vip", "show", "nope"), ctl.Exit.NOT_FOUND, "404 not_found"),
        (("member", "weight", "web", "h1", "-1"), ctl.Exit.REFUSED, "400 invalid"),
        (("member", "add", "web", "--address", "10.0.0.11", "--port", "80"), ctl.Exit.CONFLICT, "409"),
        (("session", "delete", "no-such-session"), ctl.Exit.NOT_FOUND, "no session"),
    ],
)
def test_errors_are_one_line_with_an_exit_code_scripts_can_use(
    lb: ShellDouble, argv: tuple[str, ...], code: ctl.Exit, said: str
) -> None:
    result, out, err = nlbctl(lb, *argv)
    assert result == code and not out
    assert err.startswith("nlbctl: ") and said in err and len(err.splitlines()) == 1


def test_connections_stats_config_hl_sessions_and_migrations(lb: ShellDouble) -> None:
    code, out, _ = nlbctl(lb, "connection", "list", "--vip", "web")
    assert code == 0 and len(out.splitlines()) == 1 + 6
    for argv in (("stats", "show"), ("config", "show"), ("hl", "show"), ("session", "list"), ("migration", "list")):
        code, out, err = nlbctl(lb, "--json", *argv)
        assert code == ctl.Exit.OK, err
        json.loads(out)


def test_the_token_comes_from_a_file_or_the_environment_never_the_command_line(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert ctl.load_token(str(token_file), {ctl.TOKEN_ENV: "other"}) == TOKEN
    assert ctl.load_token(None, {ctl.TOKEN_ENV: TOKEN}) == TOKEN
    assert ctl.load_token(None, {}) is None
    with pytest.raises(SystemExit):
        ctl.build_parser().parse_args(["--token", TOKEN, "stats", "show"])


class _Quiet(WSGIRequestHandler):
    """No access log on stderr."""

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def served(lb: ShellDouble) -> Iterator[str]:
    """The core's REST app over HTTP on 127.0.0.1, with an admin token; its base URL."""
    import hashlib

    data = dump_config(lb.config)
    data["controller"]["rest"]["tokens"] = [
        {"name": "ops", "role": "admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}
    ]
    lb.apply_config(parse_config(data), dpids=[], now=5.0)
    server = make_server("127.0.0.1", 0, make_app(CoreBackend(lb)), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_over_http_with_a_token(served: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--url", served, "stats", "show"], environ={}) == ctl.Exit.REFUSED
    assert "401" in capsys.readouterr().err
    assert ctl.main(["--url", served, "--json", "vip", "list"], environ={ctl.TOKEN_ENV: TOKEN}) == ctl.Exit.OK
    assert ctl.items_of(json.loads(capsys.readouterr().out))[0]["name"] == "web"
    assert ctl.main(["vip", "list"], environ={ctl.TOKEN_ENV: TOKEN, ctl.URL_ENV: served}) == ctl.Exit.OK


def test_an_unreachable_controller_is_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.lib.net import free_port

    assert ctl.main(["--url", f"http://127.0.0.1:{free_port()}", "stats", "show"], environ={}) == ctl.Exit.UNREACHABLE
    assert "cannot reach the controller" in capsys.readouterr().err


def test_config_reload_answers_what_changed_and_refuses_an_invalid_file(tmp_path: Path) -> None:
    lb = ShellDouble(health_web_config())
    path = tmp_path / "nlb.json"
    data = dump_config(lb.config)
    data["vips"][0]["idle_timeout"] = 99
    path.write_text(json.dumps(data))
    args = ctl.build_parser().parse_args(["--json", "config", "reload", "--vips", "file"])
    assert ctl.request_of(ctl.COMMANDS["config", "reload"], args)[:2] == ("POST", "/v1/config/reload?vips=file")
    out, err = io.StringIO(), io.StringIO()
    assert ctl.run(args, wsgi_transport(make_app(CoreBackend(lb, str(path)))), out, err) == ctl.Exit.OK
    assert json.loads(out.getvalue())["changed"] == ["vips[web]"]
    assert lb.config.vip("web").idle_timeout == 99
    path.write_text("{")
    args = ctl.build_parser().parse_args(["config", "reload"])
    out, err = io.StringIO(), io.StringIO()
    assert ctl.run(args, wsgi_transport(make_app(CoreBackend(lb, str(path)))), out, err) == ctl.Exit.REFUSED
    assert "400 invalid" in err.getvalue() and str(path) in err.getvalue() and not out.getvalue()


def test_vip_status_and_patches(lb: ShellDouble, tmp_path: Path) -> None:
    code, out, _ = nlbctl(lb, "--json", "vip", "status", "web")
    assert code == ctl.Exit.OK
    tree = json.loads(out)
    assert tree["vip"]["operating_status"] == "ONLINE"
    assert {m["operating_status"] for m in tree["vip"]["members"]} == {"NO_MONITOR"}
    code, out, _ = nlbctl(lb, "vip", "status", "web")
    assert code == ctl.Exit.OK and "ONLINE" in out
    patch = tmp_path / "patch.yaml"
    patch.write_text("idle_timeout: 45\n")
    assert nlbctl(lb, "vip", "patch", "web", "--file", str(patch))[0] == ctl.Exit.OK
    assert lb.config.vip("web").idle_timeout == 45 and len(lb.config.vip("web").members) == 3
    patch.write_text("weight: 4\nstate: draining\n")
    assert nlbctl(lb, "member", "patch", "web", "h2", "--file", str(patch))[0] == ctl.Exit.OK
    member = lb.config.vip("web").member("h2")
    assert member is not None and (member.weight, member.state) == (4, "draining")
    patch.write_text("port: eighty\n")
    code, _, err = nlbctl(lb, "vip", "patch", "web", "--file", str(patch))
    assert code == ctl.Exit.REFUSED and "400 invalid" in err
