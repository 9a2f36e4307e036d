"""The ``nlb-sdn-router`` command: run the L7 request router, check its config offline, or print its counters."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Mapping

from nlb_sdn import add_version_option
from nlb_sdn.config import ConfigError, load_config
from nlb_sdn.logs import add_log_arguments, setup_from_args
from nlb_sdn.migration.wire import MIGRATION_PORT
from nlb_sdn.router.allotment import AllotmentChooser, follow_allotments
from nlb_sdn.router.daemon import Router, RouterSettings, Service, services_from_config
from nlb_sdn.router.migrator import ControllerClient, RepairMigrator
from nlb_sdn.router.sessions import follow_sessions

STATS_TIMEOUT = 5.0
TOKEN_ENV = "NLB_SDN_TOKEN"
"""The environment variable that may hold the controller's REST bearer token (instead of ``--token-file``)."""


def load_token(token_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The REST bearer token from ``token_file`` (whitespace stripped), else from ``$NLB_SDN_TOKEN``, else None.

    ValueError (never quoting the token) when the file cannot be read, or the token is empty or not one printable
    word; ``token_file`` takes precedence over the environment."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as file:
                token, source = file.read().strip(), f"--token-file {token_file}"
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--token-file {token_file}: cannot read the token: {exc}") from None
    elif TOKEN_ENV in environ:
        token, source = environ[TOKEN_ENV].strip(), TOKEN_ENV
    else:
        return None
    if not token:
        raise ValueError(f"{source}: the token is empty")
    if not token.isascii() or not token.isprintable() or any(char.isspace() for char in token):
        raise ValueError(f"{source}: the token must be one word of printable ASCII characters")
    return token


def load_services(path: str, vips: list[str]) -> list[Service]:
    """The routed services of a controller config file, or raise ConfigError."""
    config = load_config(path)
    try:
        services = services_from_config(config, vips)
    except ValueError as exc:
        raise ConfigError(path, "vips", str(exc)) from None
    if not services:
        raise ConfigError(path, "vips", "no VIP has pools or rules (name the VIPs to route with --vip)")
    return services


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class _RefuseTokenValue(argparse.Action):
    """``--token VALUE`` is refused (the value would show in ``ps``) without echoing the value."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        """Stop with a usage error that points at the safe ways to pass a token."""
        parser.error(
            f"--token is not supported (a token on the command line shows in ps): use --token-file or ${TOKEN_ENV}"
        )


def settings_from_args(args: argparse.Namespace) -> RouterSettings:
    """The router settings the ``run`` flags ask for (pydantic's ValidationError, a ValueError, if out of range)."""
    return RouterSettings(
        max_head=args.max_head,
        head_timeout=args.head_timeout,
        proxy_idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_per_client,
        status_host=args.status[0],
        status_port=args.status[1],
    )


def run(args: argparse.Namespace) -> int:
    """Run the router in the foreground until SIGTERM or SIGINT; the exit status."""
    setup_from_args(args)
    try:
        services = load_services(args.config, args.vips or [])
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    try:
        controller = controller_client(args, os.environ)
        router = Router(services, settings)
        if controller is not None:
            router.migrator = repair_migrator(args, router, controller)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(router, controller))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(router: Router, controller: ControllerClient | None) -> None:
    """Run the router; with a controller, follow its session table (pin rules) and allotments (default choice)."""
    if controller is None:
        await router.run()
        return
    names = [service.name for service in router.services]
    chooser = AllotmentChooser()
    router.chooser = chooser
    feeds = [
        asyncio.create_task(follow_sessions(router.sessions, names, controller.sessions, time.time)),
        asyncio.create_task(follow_allotments(chooser, names, controller.allotment)),
    ]
    try:
        await router.run()
    finally:
        for feed in feeds:
            feed.cancel()


def controller_client(args: argparse.Namespace, environ: Mapping[str, str]) -> ControllerClient | None:
    """The client of ``--controller`` with the token of ``--token-file`` or ``$NLB_SDN_TOKEN``; None without a
    controller (ValueError for a token file without a controller, or an unusable token)."""
    if not args.controller:
        if args.token_file is not None:
            raise ValueError("--token-file needs --controller (the token is for the controller's REST API)")
        return None
    return ControllerClient(args.controller, token=load_token(args.token_file, environ))


def repair_migrator(args: argparse.Namespace, router: Router, controller: ControllerClient) -> RepairMigrator:
    """The TCP_REPAIR migrator the run flags ask for, committing at ``controller``, falling back to the router's
    own proxy."""
    config = load_config(args.config)
    settings = {vip.name: vip.migration for vip in config.vips}
    return RepairMigrator(
        controller,
        router.proxy,
        settings,
        args.migration_port,
        args.router_name,
    )


def check_config(args: argparse.Namespace) -> int:
    """Validate the config and list the routed services; the exit status."""
    try:
        services = load_services(args.config, args.vips or [])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for service in services:
        print(
            f"{service.name} {service.address}:{service.port}: {len(service.members)} members, "
            f"{len(service.pools)} pools, {len(service.rules)} rules"
        )
    return 0


def stats(args: argparse.Namespace) -> int:
    """Print a running router's counters as JSON; the exit status."""
    host, port = args.status
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/stats", timeout=STATS_TIMEOUT) as response:
            counters = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"error: http://{host}:{port}/stats: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(counters, indent=2))
    return 0


def _add_controller_arguments(run_parser: argparse.ArgumentParser) -> None:
    """The ``run`` flags of the controller: its URL, the REST token, the migration port and the router's name."""
    run_parser.add_argument(
        "--controller",
        metavar="URL",
        help="the controller's REST base URL (e.g. http://10.99.0.254:8080): migrate connections "
        "with TCP_REPAIR and commit them there (default: proxy every connection)",
    )
    run_parser.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"a file holding the bearer token for the controller's REST API (an admin token: commits need it); "
        f"default: ${TOKEN_ENV} if set, else no token",
    )
    run_parser.add_argument("--token", nargs="?", action=_RefuseTokenValue, help=argparse.SUPPRESS)
    run_parser.add_argument(
        "--migration-port",
        type=int,
        default=MIGRATION_PORT,
        help=f"the agents' migration port (default {MIGRATION_PORT})",
    )
    run_parser.add_argument("--router-name", default="", help="this router's name in reports to the controller")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    defaults = RouterSettings()
    status = (defaults.status_host, defaults.status_port)
    parser = argparse.ArgumentParser(prog="nlb-sdn-router", description=__doc__)
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the request router in the foreground")
    check = sub.add_parser("check-config", help="validate the config and list the services the router would serve")
    for command in (run_parser, check):
        command.add_argument("--config", required=True, help="the controller's config file (YAML, TOML or JSON)")
        command.add_argument(
            "--vip",
            dest="vips",
            action="append",
            metavar="NAME",
            help="route this VIP service (repeatable; default: every VIP with pools or rules)",
        )
    run_parser.add_argument(
        "--status",
        type=_address,
        default=status,
        metavar="HOST:PORT",
        help=f"status address (default {status[0]}:{status[1]})",
    )
    run_parser.add_argument(
        "--max-head",
        type=int,
        default=defaults.max_head,
        help=f"largest request head in bytes (default {defaults.max_head})",
    )
    run_parser.add_argument(
        "--head-timeout",
        type=float,
        default=defaults.head_timeout,
        help=f"seconds a client has to send its head (default {defaults.head_timeout:g})",
    )
    run_parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.proxy_idle_timeout,
        help=f"seconds a proxied connection may move no bytes before it is closed "
        f"(default {defaults.proxy_idle_timeout:g})",
    )
    run_parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help=f"connections the router holds at most; more are closed at once (default {defaults.max_connections})",
    )
    run_parser.add_argument(
        "--max-per-client",
        type=int,
        default=defaults.max_connections_per_client,
        help=f"connections one client address may hold; more are closed at once "
        f"(default {defaults.max_connections_per_client})",
    )
    _add_controller_arguments(run_parser)
    run_parser.add_argument("--verbose", action="store_true")
    add_log_arguments(run_parser)
    stats_parser = sub.add_parser("stats", help="print a running router's counters")
    stats_parser.add_argument("--status", type=_address, default=status, metavar="HOST:PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nlb-sdn-router``."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "check-config":
        return check_config(args)
    return stats(args)


if __name__ == "__main__":
    sys.exit(main())
