"""nlbctl: the command-line client of the controller's REST API.

``nlbctl [--url URL] [--token-file F] [--json] RESOURCE VERB [ARGS]``: tables for people, ``--json`` for scripts.
The token comes from ``--token-file`` or the ``NLB_SDN_TOKEN`` environment variable (never from the command line,
where other users could read it), the URL from ``--url`` or ``NLB_SDN_URL`` (default ``http://127.0.0.1:8080``).
Exit codes (:class:`Exit`): 0 done, 1 refused (a 4xx not listed below), 2 usage, 3 not found, 4 conflict or lost
race (409, 412), 5 server error, 6 unreachable. ``docs/nlbctl.md`` lists every command.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from nlb_sdn import add_version_option
from nlb_sdn.router.cli import TOKEN_ENV, load_token

URL_ENV = "NLB_SDN_URL"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0


class Exit(enum.IntEnum):
    """nlbctl's exit codes, for scripts."""

    OK = 0
    REFUSED = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    SERVER_ERROR = 5
    UNREACHABLE = 6


def exit_for(status: int) -> Exit:
    """The exit code of an HTTP status."""
    if status < 400:
        return Exit.OK
    if status == 404:
        return Exit.NOT_FOUND
    if status in (409, 412):
        return Exit.CONFLICT
    return Exit.SERVER_ERROR if status >= 500 else Exit.REFUSED


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status and decoded JSON body (None when empty)."""

    status: int
    body: Any


class Unreachable(Exception):
    """The controller could not be reached."""


Transport = Callable[[str, str, Any], Reply]
"""Sends ``(method, path with query, JSON body or None)`` and returns the reply; raises Unreachable."""


def http_transport(base_url: str, token: str | None, timeout: float, context: ssl.SSLContext | None) -> Transport:
    """A transport over HTTP(S) with urllib, sending the bearer token when there is one."""

    def send(method: str, path: str, body: Any) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return Reply(response.status, _decode(response.read()))
        except urllib.error.HTTPError as error:
            return Reply(error.code, _decode(error.read()))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"{base_url}: {reason}") from None

    return send


def _decode(raw: bytes) -> Any:
    """A body as JSON, or its text when it is not JSON, or None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def items_of(payload: Any) -> list[Any]:
    """The rows of a list answer: a list, or the one list in a page (``{"sessions": [...], "count": N}``)."""
    if isinstance(payload, list):
        return payload
    lists = [value for value in payload.values() if isinstance(value, list)] if isinstance(payload, dict) else []
    if len(lists) != 1:
        raise ValueError("the answer is not a list")
    return list(lists[0])


def _cell(value: Any) -> str:
    """One table cell."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with a header."""
    cells = [[column.upper() for column in columns]] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def key_values(data: dict[str, Any]) -> str:
    """A mapping as ``key: value`` lines."""
    width = max((len(key) for key in data), default=0)
    return "\n".join(f"{key.ljust(width)}  {_cell(value)}" for key, value in data.items())


@dataclass(frozen=True)
class Command:
    """One nlbctl command: its HTTP request and how to print the answer for people."""

    method: str
    path: str  # a format string over the parsed arguments
    columns: tuple[str, ...] = ()  # a list answer's table columns; empty: print key-values
    query: tuple[str, ...] = ()  # arguments sent as query parameters when given
    body: Callable[[argparse.Namespace], Any] | None = None


def _file_body(args: argparse.Namespace) -> Any:
    """The body of a create or replace: the YAML or JSON file (``-`` for stdin)."""
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    return yaml.safe_load(text)


def _member_body(args: argparse.Namespace) -> dict[str, Any]:
    """A new member from its flags."""
    body: dict[str, Any] = {"address": args.address, "port": args.port}
    for key in ("name", "weight", "mac", "state"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    return body


def _forwarder_body(args: argparse.Namespace) -> dict[str, Any]:
    """A new forwarder from its flags: name, dpid and each ``--link PORT:PEER:PEER_PORT``."""
    links = []
    for text in args.link or []:
        port, peer, peer_port = text.split(":") if text.count(":") == 2 else ("", "", "")
        if not (port.isdigit() and peer and peer_port.isdigit()):
            raise ValueError(f"--link {text!r}: expected PORT:PEER:PEER_PORT, e.g. 3:s1:4")
        links.append({"port": int(port), "peer": peer, "peer_port": int(peer_port)})
    return {"name": args.forwarder, "dpid": args.dpid, "links": links}


STATUS_COLUMNS = ("provisioning_status", "operating_status")
"""The Octavia-style statuses every VIP and member answer carries (docs/rest.md)."""
VIP_COLUMNS = ("name", "address", "port", "mode", "dispatch", "members", *STATUS_COLUMNS)
MEMBER_COLUMNS = ("name", "address", "port", "weight", "state", *STATUS_COLUMNS)
FORWARDER_COLUMNS = ("name", "dpid", "role", "connected", "links", "hosts")
COMMANDS: dict[tuple[str, str], Command] = {
    ("vip", "list"): Command("GET", "/v1/vips", VIP_COLUMNS),
    ("vip", "show"): Command("GET", "/v1/vips/{vip}"),
    ("vip", "create"): Command("POST", "/v1/vips", body=_file_body),
    ("vip", "replace"): Command("PUT", "/v1/vips/{vip}", body=_file_body),
    ("vip", "patch"): Command("PATCH", "/v1/vips/{vip}", body=_file_body),
    ("vip", "status"): Command("GET", "/v1/vips/{vip}/status"),
    ("vip", "delete"): Command("DELETE", "/v1/vips/{vip}"),
    ("member", "list"): Command("GET", "/v1/vips/{vip}/members", MEMBER_COLUMNS),
    ("member", "show"): Command("GET", "/v1/vips/{vip}/members/{member}"),
    ("member", "add"): Command("POST", "/v1/vips/{vip}/members", body=_member_body),
    ("member", "weight"): Command("PUT", "/v1/vips/{vip}/members/{member}", body=lambda a: {"weight": a.weight}),
    ("member", "patch"): Command("PATCH", "/v1/vips/{vip}/members/{member}", body=_file_body),
    ("member", "remove"): Command("DELETE", "/v1/vips/{vip}/members/{member}"),
    ("member", "state"): Command("GET", "/v1/vips/{vip}/members/{member}/state"),
    ("member", "set-state"): Command("PUT", "/v1/vips/{vip}/members/{member}/state", body=lambda a: {"state": a.state}),
    ("vip", "allotment"): Command("GET", "/v1/vips/{vip}/allotment"),
    ("connection", "list"): Command(
        "GET", "/v1/connections", ("vip", "member", "client", "endpoint"), ("vip", "member", "limit", "marker")
    ),
    ("session", "list"): Command(
        "GET",
        "/v1/sessions",
        ("id", "vip", "member", "client", "expires_in", "origin"),
        ("vip", "endpoint", "limit", "marker"),
    ),
    ("session", "delete"): Command("DELETE", "/v1/sessions/{session}"),
    ("migration", "list"): Command("GET", "/v1/migrations", query=("limit",)),
    ("hl", "show"): Command("GET", "/v1/hl/cache"),
    ("dam", "list"): Command("GET", "/v1/dam", query=("kind", "cursor", "count")),
    ("stats", "show"): Command("GET", "/v1/stats"),
    ("config", "show"): Command("GET", "/v1/config"),
    ("config", "reload"): Command("POST", "/v1/config/reload", query=("vips",)),
    ("forwarder", "list"): Command("GET", "/v1/forwarders", FORWARDER_COLUMNS),
    ("forwarder", "show"): Command("GET", "/v1/forwarders/{forwarder}"),
    ("forwarder", "add"): Command("POST", "/v1/forwarders", body=_forwarder_body),
    ("forwarder", "remove"): Command("DELETE", "/v1/forwarders/{forwarder}"),
}


def request_of(command: Command, args: argparse.Namespace) -> tuple[str, str, Any]:
    """The method, path with query and body of a command."""
    quoted = {key: urllib.parse.quote(str(value), safe="") for key, value in vars(args).items()}
    path = command.path.format(**quoted)
    query = {key: getattr(args, key) for key in command.query if getattr(args, key, None) is not None}
    if query:
        path += "?" + urllib.parse.urlencode(query)
    return command.method, path, command.body(args) if command.body else None


def render(command: Command, reply: Reply) -> str:
    """The answer for people: a table for lists, key-values for objects, nothing for an empty answer."""
    if reply.body is None:
        return ""
    if command.columns:
        rows = items_of(reply.body)
        text = table([_summary(row) for row in rows], command.columns)
        following = reply.body.get("next_marker") if isinstance(reply.body, dict) else None
        return text + (f"\n(more: --marker {following})" if following else "")
    if isinstance(reply.body, dict):
        return key_values(reply.body)
    return json.dumps(reply.body, indent=2)


def _summary(row: Any) -> dict[str, Any]:
    """A row for a table: nested member lists shown by their count."""
    if not isinstance(row, dict):
        return {"value": row}
    counted = ("members", "links", "hosts")
    return {key: len(value) if key in counted and isinstance(value, list) else value for key, value in row.items()}


def error_text(reply: Reply) -> str:
    """The API's error as one line."""
    body = reply.body
    if isinstance(body, dict) and "error" in body:
        return f"{reply.status} {body['error']}: {body.get('detail', '')}"
    return f"{reply.status}: {body}"


def run(args: argparse.Namespace, transport: Transport, out: TextIO, err: TextIO) -> Exit:
    """Carry out one parsed command; print the answer or the error; the exit code."""
    command = COMMANDS[(args.resource, args.verb)]
    try:
        method, path, body = request_of(command, args)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"nlbctl: {exc}", file=err)
        return Exit.USAGE
    try:
        reply = transport(method, path, body)
    except Unreachable as exc:
        print(f"nlbctl: cannot reach the controller: {exc}", file=err)
        return Exit.UNREACHABLE
    code = exit_for(reply.status)
    if code is not Exit.OK:
        print(f"nlbctl: {method} {path}: {error_text(reply)}", file=err)
        return code
    if args.json:
        if reply.body is not None:
            print(json.dumps(reply.body, indent=2, sort_keys=True), file=out)
    else:
        text = render(command, reply)
        if text:
            print(text, file=out)
    return Exit.OK


def _add_resources(sub: Any) -> None:
    """The resource sub-commands and their verbs' arguments."""
    vip = sub.add_parser("vip", help="VIP services").add_subparsers(dest="verb", required=True)
    vip.add_parser("list", help="every VIP service")
    for verb, text in (
        ("show", "one VIP service"),
        ("delete", "delete a VIP service"),
        ("allotment", "its shares"),
        ("status", "its and its members' provisioning and operating status"),
    ):
        vip.add_parser(verb, help=text).add_argument("vip")
    vip.add_parser("create", help="add a VIP service from a YAML/JSON file").add_argument("--file", required=True)
    replace = vip.add_parser("replace", help="replace a VIP service with a YAML/JSON file")
    patch = vip.add_parser("patch", help="change part of a VIP service: a JSON merge patch from a YAML/JSON file")
    for parser in (replace, patch):
        parser.add_argument("vip")
        parser.add_argument("--file", required=True)

    member = sub.add_parser("member", help="members of a VIP service").add_subparsers(dest="verb", required=True)
    member.add_parser("list", help="a VIP service's members").add_argument("vip")
    for verb, text in (
        ("show", "one member"),
        ("remove", "remove a member"),
        ("state", "its target and current state"),
    ):
        one = member.add_parser(verb, help=text)
        one.add_argument("vip")
        one.add_argument("member", help="name or ip:port")
    add = member.add_parser("add", help="add a member")
    add.add_argument("vip")
    add.add_argument("--address", required=True)
    add.add_argument("--port", type=int, required=True)
    add.add_argument("--name")
    add.add_argument("--weight", type=int)
    add.add_argument("--mac")
    add.add_argument("--state", choices=("active", "draining", "inactive"))
    weight = member.add_parser("weight", help="change a member's weight")
    set_state = member.add_parser("set-state", help="set a member's target state")
    for parser in (weight, set_state):
        parser.add_argument("vip")
        parser.add_argument("member", help="name or ip:port")
    weight.add_argument("weight", type=int)
    member_patch = member.add_parser("patch", help="change part of a member: a JSON merge patch from a YAML/JSON file")
    member_patch.add_argument("vip")
    member_patch.add_argument("member", help="name or ip:port")
    member_patch.add_argument("--file", required=True)
    set_state.add_argument("state", choices=("active", "draining", "inactive"))

    connection = sub.add_parser("connection", help="tracked connections").add_subparsers(dest="verb", required=True)
    session = sub.add_parser("session", help="the session table").add_subparsers(dest="verb", required=True)
    listing = connection.add_parser("list", help="tracked connections")
    listing.add_argument("--vip")
    listing.add_argument("--member")
    sessions = session.add_parser("list", help="sessions")
    sessions.add_argument("--vip")
    sessions.add_argument("--endpoint")
    for parser in (listing, sessions):
        parser.add_argument("--limit", type=int)
        parser.add_argument("--marker")
    session.add_parser("delete", help="forget a session").add_argument("session")

    migration = sub.add_parser("migration", help="l7 migrations").add_subparsers(dest="verb", required=True)
    migration.add_parser("list", help="recent migrations and counters").add_argument("--limit", type=int)
    dam = sub.add_parser("dam", help="DAM atoms").add_subparsers(dest="verb", required=True)
    atoms = dam.add_parser("list", help="one page of atoms")
    atoms.add_argument("--kind", choices=("route", "session"))
    atoms.add_argument("--cursor")
    atoms.add_argument("--count", type=int)
    for name, text in (("hl", "the H&L cache"), ("stats", "the controller's counters")):
        sub.add_parser(name, help=text).add_subparsers(dest="verb", required=True).add_parser("show", help=text)
    config = sub.add_parser("config", help="the live config").add_subparsers(dest="verb", required=True)
    config.add_parser("show", help="the live config")
    reload = config.add_parser("reload", help="re-read the config file and apply it (as SIGHUP does)")
    reload.add_argument("--vips", choices=("store", "file"), help="keep the stored VIPs (default) or take the file's")


def _add_forwarders(sub: Any) -> None:
    """The forwarder sub-command: list, show, add and remove fabric switches at runtime (docs/fabric.md)."""
    forwarder = sub.add_parser("forwarder", help="forwarders (fabric switches)").add_subparsers(
        dest="verb", required=True
    )
    forwarder.add_parser("list", help="every forwarder")
    forwarder.add_parser("show", help="one forwarder").add_argument("forwarder", help="name or dpid")
    forwarder.add_parser("remove", help="remove a forwarder and its links").add_argument(
        "forwarder", help="name or dpid"
    )
    add = forwarder.add_parser("add", help="add a forwarder and its links")
    add.add_argument("forwarder", help="the new switch's name")
    add.add_argument("--dpid", type=int, required=True)
    add.add_argument("--link", action="append", help="PORT:PEER:PEER_PORT, once per link")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="nlbctl", description=__doc__.splitlines()[0], allow_abbrev=False)
    add_version_option(parser)
    parser.add_argument("--url", help=f"the controller's REST base URL (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--token-file", help=f"a file holding the bearer token (default ${TOKEN_ENV})")
    parser.add_argument("--ca-file", help="CA certificate(s) to verify an https controller with")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    resources = parser.add_subparsers(dest="resource", required=True)
    _add_resources(resources)
    _add_forwarders(resources)
    return parser


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point of ``nlbctl``."""
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    try:
        token = load_token(args.token_file, environ)
    except ValueError as exc:
        print(f"nlbctl: {exc}", file=sys.stderr)
        return Exit.USAGE
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    url = args.url or environ.get(URL_ENV) or DEFAULT_URL
    return run(args, http_transport(url, token, args.timeout, context), sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
