"""The ``nlb-sdn`` command: run the controller, or check a config file offline."""

from __future__ import annotations

import argparse
import os
import sys

CLASSIFIER_APP = "nlb_sdn.apps.classifier"


def check_config(path: str) -> int:
    """Validate a config file; print the error naming file, key and reason; return an exit status."""
    from nlb_sdn.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    members = sum(len(vip.members) for vip in config.vips)
    print(
        f"{path}: ok ({len(config.vips)} VIP services, {members} members, "
        f"{len(config.fabric.switches)} switches, {len(config.fabric.hosts)} hosts)"
    )
    return 0


def run_controller(args: argparse.Namespace) -> int:
    """Validate the config, then replace this process with the framework's manager running the classifier app.

    The manager starts in a fresh interpreter (same PID), so eventlet monkey-patches before any library loads.
    """
    status = check_config(args.config)
    if status:
        return status
    os.environ["NLB_SDN_CONFIG"] = os.path.abspath(args.config)
    if args.framework:
        os.environ["NLB_SDN_FRAMEWORK"] = args.framework
    argv = [sys.executable, "-m", "nlb_sdn.framework", "--ofp-tcp-listen-port", str(args.ofp_tcp_listen_port)]
    if args.verbose:
        argv.append("--verbose")
    argv += [*args.extra_apps, CLASSIFIER_APP]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="nlb-sdn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    controller = sub.add_parser("controller", help="run one LBU instance (os-ken or ryu manager + classifier app)")
    controller.add_argument("--config", required=True, help="YAML, TOML or JSON config file")
    controller.add_argument("--ofp-tcp-listen-port", type=int, default=6653)
    controller.add_argument("--framework", choices=["os_ken", "ryu"], help="default: os_ken if installed")
    controller.add_argument("--verbose", action="store_true")
    controller.add_argument(
        "--extra-app",
        dest="extra_apps",
        action="append",
        default=[],
        help="another app module to load in the same manager",
    )
    check = sub.add_parser("check-config", help="validate a config file offline")
    check.add_argument("config")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nlb-sdn``."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    return run_controller(args)


if __name__ == "__main__":
    sys.exit(main())
