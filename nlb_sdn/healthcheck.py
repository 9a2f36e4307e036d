"""A container health check: ``python -m nlb_sdn.healthcheck tcp HOST:PORT`` exits 0 when the port accepts a TCP
connection within the timeout, else 1 with the reason on stderr (the images' ``HEALTHCHECK``, ``Dockerfile``)."""

from __future__ import annotations

import argparse
import socket
import sys

from nlb_sdn import add_version_option

DEFAULT_TIMEOUT = 2.0


def tcp_accepts(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` seconds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one check and exit with its verdict."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-healthcheck", description=__doc__.splitlines()[0])
    add_version_option(parser)
    sub = parser.add_subparsers(dest="check", required=True)
    tcp = sub.add_parser("tcp", help="the port accepts a TCP connection")
    tcp.add_argument("address", metavar="HOST:PORT")
    tcp.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"{args.address!r} is not HOST:PORT")
    problem = tcp_accepts(host, int(port), args.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
