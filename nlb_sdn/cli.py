"""The ``nlb-sdn`` command: run the controller, check a config file offline, or derive a host's key."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nlb_sdn import add_version_option
from nlb_sdn.config.openflow import DEFAULT_OPENFLOW_PORT
from nlb_sdn.logs import LOG_ENV, add_log_arguments, level_of, log_env

CLASSIFIER_APP = "nlb_sdn.apps.classifier"
LISTENER_FLAGS = (
    ("ofp_listen_host", "--ofp-listen-host"),
    ("ofp_tcp_listen_port", "--ofp-tcp-listen-port"),
    ("ofp_ssl_listen_port", "--ofp-ssl-listen-port"),
    ("ctl_privkey", "--ctl-privkey"),
    ("ctl_cert", "--ctl-cert"),
    ("ca_certs", "--ca-certs"),
)
"""The OpenFlow listener options passed on to the manager when given (they override ``controller.openflow``)."""
MANAGER_LOG_FLAGS = ("--nouse-stderr",)
"""The manager adds no log handler of its own: ``$NLB_SDN_LOG`` (nlb_sdn.logs) sets them up."""


def check_config(*paths: str) -> int:
    """Validate config files; print every problem of each naming file, line, key and reason; return an exit status."""
    from nlb_sdn.config import ConfigError, load_config

    status = 0
    for path in paths:
        try:
            config = load_config(path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=sys.stderr)
            status = 2
            continue
        members = sum(len(vip.members) for vip in config.vips)
        print(
            f"{path}: ok ({len(config.vips)} VIP services, {members} members, "
            f"{len(config.fabric.switches)} switches, {len(config.fabric.hosts)} hosts)"
        )
    return status


def check_state(path: str) -> int:
    """Check the stored operator state the controller would start from (``controller.state``); print the error
    naming the state file (or Redis key) and why; return an exit status."""
    from nlb_sdn.config import load_config
    from nlb_sdn.store import StateError
    from nlb_sdn.store.operator import OperatorState, make_store

    config = load_config(path)
    store = make_store(config, path)
    try:
        stored = store.load()
        if stored is not None:
            OperatorState(store, config).model_of(stored)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def derive_key(master_file: str, host_id: str, out: str | None) -> int:
    """Write host ``host_id``'s key, derived from the master key file, to ``out`` (mode 0600) or stdout."""
    from nlb_sdn.signed import derive_host_key, is_ident, load_key

    if not is_ident(host_id):
        print(f"error: --host: {host_id!r} is not a host id (1 to 128 characters)", file=sys.stderr)
        return 2
    try:
        key = derive_host_key(load_key(master_file), host_id) + b"\n"
        if out is None:
            sys.stdout.write(key.decode())
            return 0
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def listener_args(args: argparse.Namespace) -> list[str]:
    """The manager's listener options the operator gave (``controller.openflow`` supplies the others' defaults).

    File paths are made absolute; TLS files without a TLS port listen on 6653; ValueError when TLS is asked for
    without its certificate, key or CA.
    """
    tls = [args.ctl_privkey, args.ctl_cert, args.ca_certs]
    if any(tls) and not all(tls):
        raise ValueError("--ctl-privkey, --ctl-cert and --ca-certs go together (switch certificates are checked)")
    argv: list[str] = []
    for dest, flag in LISTENER_FLAGS:
        value = getattr(args, dest)
        if value is not None:
            path = dest in ("ctl_privkey", "ctl_cert", "ca_certs")
            argv += [flag, os.path.abspath(value) if path else str(value)]
    if all(tls) and args.ofp_ssl_listen_port is None:
        argv += ["--ofp-ssl-listen-port", str(DEFAULT_OPENFLOW_PORT)]
    return argv


def run_controller(args: argparse.Namespace) -> int:
    """Validate the config, then replace this process with the framework's manager running the classifier app.

    The manager starts in a fresh interpreter (same PID), so eventlet monkey-patches before any library loads.
    """
    status = check_config(args.config) or check_state(args.config)
    if status:
        return status
    try:
        listener = listener_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ["NLB_SDN_CONFIG"] = os.path.abspath(args.config)
    if args.framework:
        os.environ["NLB_SDN_FRAMEWORK"] = args.framework
    os.environ[LOG_ENV] = log_env(args)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # library warnings while the framework loads
    level = logging.getLevelName(level_of(args))
    argv = [sys.executable, "-m", "nlb_sdn.framework", *listener, *MANAGER_LOG_FLAGS, "--default-log-level", str(level)]
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
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    controller = sub.add_parser("controller", help="run one LBU instance (os-ken or ryu manager + classifier app)")
    controller.add_argument("--config", required=True, help="YAML, TOML or JSON config file")
    listen = controller.add_argument_group(
        "OpenFlow channel", "override controller.openflow (default: 127.0.0.1:6653, TCP; TLS when tls is set)"
    )
    listen.add_argument("--ofp-listen-host", help="address switches connect to")
    listen.add_argument("--ofp-tcp-listen-port", type=int, help="TCP port (plain OpenFlow)")
    listen.add_argument("--ofp-ssl-listen-port", type=int, help="TLS port (with the three files below)")
    listen.add_argument("--ctl-privkey", help="the controller's private key (PEM)")
    listen.add_argument("--ctl-cert", help="the controller's certificate (PEM)")
    listen.add_argument("--ca-certs", help="the CA certificate(s) that signed the switches' certificates (PEM)")
    controller.add_argument("--framework", choices=["os_ken", "ryu"], help="default: os_ken if installed")
    controller.add_argument("--verbose", action="store_true")
    add_log_arguments(controller)
    controller.add_argument(
        "--extra-app",
        dest="extra_apps",
        action="append",
        default=[],
        help="another app module to load in the same manager",
    )
    check = sub.add_parser("check-config", help="validate config files offline, reporting every problem")
    check.add_argument("config", nargs="+")
    derive = sub.add_parser("derive-key", help="write one host's H&L and migration key, derived from the master key")
    derive.add_argument("--master", required=True, help="the master key file (controller.health.key_file)")
    derive.add_argument("--host", required=True, help="the host id (the agent's host_id)")
    derive.add_argument("--out", help="the file to write (mode 0600; default: standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nlb-sdn``."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(*args.config)
    if args.command == "derive-key":
        return derive_key(args.master, args.host, args.out)
    return run_controller(args)


if __name__ == "__main__":
    sys.exit(main())
