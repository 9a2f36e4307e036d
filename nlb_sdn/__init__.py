"""nlb_sdn: an SDN network load balancer with traffic routing, built as os-ken/Ryu controller apps."""

from __future__ import annotations

import argparse

__version__ = "0.1.0"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Give a command-line parser ``--version``, printing the program's name and this package's version."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
