"""The ``nlb-sdn-agent`` command: run the host agent, show its H&L table, change a target or a static load, report
application sessions (session table 2014)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from nlb_sdn import add_version_option
from nlb_sdn.agent.config import AgentConfig, load_agent_config, parse_agent_config
from nlb_sdn.agent.core import DEFAULT_STYPE, SESSION_TTL
from nlb_sdn.config import ConfigError
from nlb_sdn.health.table import TARGET_STATES
from nlb_sdn.logs import add_log_arguments, setup_from_args
from nlb_sdn.signed import load_key

CONTROL_TIMEOUT = 5.0
COLUMNS = ("VIP", "PHYSICAL", "PROTO", "PROTO_INFO", "HEALTH", "LOAD", "CAPACITY", "TARGET", "CURRENT")
SESSION_COLUMNS = ("SID", "STYPE", "CLIENT", "VIP", "PHYSICAL", "EXPIRES_IN")


def load_agent(
    path: str, controllers: list[str] | None = None, key_file: str | None = None
) -> tuple[AgentConfig, bytes]:
    """The config (with command-line overrides) and the key it names, or raise ConfigError."""
    config = load_agent_config(path)
    overrides: dict[str, Any] = {}
    if controllers:
        overrides["controllers"] = controllers
    if key_file:
        overrides["key_file"] = key_file
    if overrides:
        config = parse_agent_config({**config.model_dump(), **overrides}, "command line")
    try:
        key = load_key(config.key_file)
    except OSError as exc:
        raise ConfigError(path, "key_file", f"{config.key_file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(path, "key_file", f"{config.key_file}: {exc}") from None
    return config, key


def check_config(path: str) -> int:
    """Validate an agent config file and its key file; print the error naming file, key and reason; exit status."""
    try:
        config, _ = load_agent(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: ok (host {config.host_id}, {len(config.apps)} apps, {len(config.controllers)} controllers)")
    return 0


def _aligned(header: str, columns: tuple[str, ...], lines: list[list[str]]) -> str:
    """``header``, then ``columns`` and ``lines`` as left-aligned columns."""
    widths = [max(len(cells[i]) for cells in [list(columns), *lines]) for i in range(len(columns))]
    text = [header]
    text += [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [list(columns), *lines]
    ]
    return "\n".join(text)


def format_table(view: dict[str, Any]) -> str:
    """The table as aligned text: every FIG. 13A field of every row, under a header with host, rows and checksum."""
    lines = [
        [
            f"{row['vip']}:{row['vport']}",
            f"{row['pip']}:{row['pport']}",
            row["proto"],
            row["proto_info"] or "(any)",
            row["health"],
            f"{row['load']:g}",
            f"{row['capacity']:g}",
            row["target"],
            row["current"],
        ]
        for row in view["rows"]
    ]
    return _aligned(
        f"host {view['host_id']}  rows {len(view['rows'])}  checksum {view['checksum']:#010x}", COLUMNS, lines
    )


def format_sessions(view: dict[str, Any]) -> str:
    """The session table as aligned text: id, type, client, service, endpoint and seconds left of each session."""
    lines = [
        [
            s["sid"],
            s["stype"],
            s["client"],
            f"{s['vip']}:{s['vport']}/{s['proto']}",
            f"{s['pip']}:{s['pport']}",
            f"{max(0.0, s['expires_in']):.1f}s",
        ]
        for s in view["sessions"]
    ]
    return _aligned(f"host {view['host_id']}  sessions {len(view['sessions'])}", SESSION_COLUMNS, lines)


def control(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to a running agent's control socket; its reply (OSError if unreachable)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONTROL_TIMEOUT)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and (chunk := sock.recv(65536)):
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError:
        raise OSError(f"unreadable reply {data[:80]!r}") from None
    if not isinstance(reply, dict):
        raise OSError(f"unreadable reply {data[:80]!r}")
    return reply


def socket_path(args: argparse.Namespace) -> str:
    """The control socket named on the command line, or by the config file (ConfigError if it is bad)."""
    return args.socket or load_agent_config(args.config).control_socket


def control_command(args: argparse.Namespace) -> int:
    """Run ``table``, ``set-target``, ``set-load``, ``session-up``, ``session-down`` or ``sessions`` against a running
    agent; exit status."""
    try:
        path = socket_path(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("table", "sessions"):
        request: dict[str, Any] = {"cmd": args.command}
    elif args.command == "session-up":
        request = {
            "cmd": "session-up",
            "app_id": args.app_id,
            "sid": args.sid,
            "client": args.client,
            "ttl_s": args.ttl,
            "stype": args.stype,
        }
    elif args.command == "session-down":
        request = {"cmd": "session-down", "app_id": args.app_id, "sid": args.sid}
    elif args.command == "set-target":
        request = {"cmd": "set-target", "app_id": args.app_id, "target": args.state}
    else:
        request = {"cmd": "set-load", "app_id": args.app_id, "load": args.load}
    try:
        reply = control(path, request)
    except OSError as exc:
        print(f"error: cannot reach the agent at {path}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"error: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.command in ("table", "sessions"):
        text = format_table(reply) if args.command == "table" else format_sessions(reply)
        print(json.dumps(reply, indent=2, sort_keys=True) if args.json else text)
    elif args.command in ("session-up", "session-down"):
        s = reply["session"]
        state = f"up for {s['ttl_s']:g} s" if args.command == "session-up" else "down"
        print(f"session {s['stype']} {s['sid']} of client {s['client']} on {s['app_id']}: {state}")
    else:
        row = reply["row"]
        print(
            f"{row['app_id']}: target {row['target']}, load {row['load']:g}, health {row['health']}, "
            f"current {row['current']}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the agent in the foreground until SIGTERM or SIGINT."""
    from nlb_sdn.agent.daemon import run_agent

    try:
        config, key = load_agent(args.config, args.controllers, args.key_file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_from_args(args)
    try:
        return run_agent(config, key, args.drop_next_row_change)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _agent_socket(parser: argparse.ArgumentParser) -> None:
    """Add the ``--config FILE | --socket PATH`` choice of agent to a subcommand."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the agent's config file (names its control socket)")
    where.add_argument("--socket", help="the agent's control socket")


def non_negative(text: str) -> float:
    """A load given on the command line: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def positive_seconds(text: str) -> float:
    """A session TTL given on the command line: a finite number of seconds > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-agent", description=__doc__)
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the host agent in the foreground")
    run_parser.add_argument("--config", required=True, help="YAML agent config file")
    run_parser.add_argument(
        "--controller",
        dest="controllers",
        action="append",
        metavar="HOST:PORT",
        help="controller address (repeatable; replaces the config's list; default port 9100)",
    )
    run_parser.add_argument("--key-file", help="deployment key file (replaces the config's key_file)")
    run_parser.add_argument(
        "--drop-next-row-change",
        action="store_true",
        help="test hook: do not send the first row_change (to exercise resync)",
    )
    run_parser.add_argument("--verbose", action="store_true")
    add_log_arguments(run_parser)
    table = sub.add_parser("table", help="print a running agent's H&L table")
    _agent_socket(table)
    table.add_argument("--json", action="store_true", help="print JSON (rows, checksum, receive counters)")
    target = sub.add_parser("set-target", help="set an app's target state on a running agent")
    target.add_argument("app_id")
    target.add_argument("state", choices=TARGET_STATES)
    _agent_socket(target)
    set_load = sub.add_parser("set-load", help="set the load of an app with a static load source")
    set_load.add_argument("app_id")
    set_load.add_argument("load", type=non_negative)
    _agent_socket(set_load)
    up = sub.add_parser("session-up", help="report (or renew) an application session on a running agent")
    up.add_argument("app_id", help="the app the session belongs to (gives vip, vport, proto, pip, pport)")
    up.add_argument("--sid", required=True, help="session identifier (at most 256 characters)")
    up.add_argument("--client", required=True, help="IPv4 address of the session's client")
    up.add_argument(
        "--ttl",
        type=positive_seconds,
        default=SESSION_TTL,
        help=f"seconds the session lives unless renewed by another session-up (default {SESSION_TTL:g})",
    )
    up.add_argument("--stype", default=DEFAULT_STYPE, help=f"session type (default {DEFAULT_STYPE})")
    _agent_socket(up)
    down = sub.add_parser("session-down", help="end an application session on a running agent")
    down.add_argument("app_id")
    down.add_argument("--sid", required=True)
    _agent_socket(down)
    sessions = sub.add_parser("sessions", help="print a running agent's session table")
    _agent_socket(sessions)
    sessions.add_argument("--json", action="store_true", help="print JSON")
    check = sub.add_parser("check-config", help="validate an agent config file and its key file offline")
    check.add_argument("config")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nlb-sdn-agent``."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "run":
        return run(args)
    return control_command(args)


if __name__ == "__main__":
    sys.exit(main())
