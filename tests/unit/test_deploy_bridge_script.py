"""``deploy/ovs-bridge.sh --dry-run``: the commands it would run for the kernel datapath, and its argument checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "ovs-bridge.sh"


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the script with ``--dry-run`` and ``args``."""
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=30)


def test_the_kernel_datapath_bridge_commands() -> None:
    proc = dry_run(
        "--bridge", "s1", "--dpid", "258",
        "--controller", "ssl:10.99.0.254:6653", "--controller", "ssl:10.99.0.253:6653",
        "--ssl", "key.pem", "cert.pem", "ca.pem", "--port", "eth1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "ovs-vsctl --may-exist add-br s1 -- set bridge s1 datapath_type=system protocols=OpenFlow13 fail_mode=secure"
        " other-config:datapath-id=0000000000000102 other-config:disable-in-band=true",
        "ovs-vsctl set-ssl key.pem cert.pem ca.pem",
        "ovs-vsctl set-controller s1 ssl:10.99.0.254:6653 ssl:10.99.0.253:6653",
        "ovs-vsctl --may-exist add-port s1 eth1",
    ]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--dpid", "1", "--controller", "tcp:1.2.3.4:6653"], "--bridge is required"),
        (["--bridge", "s1", "--dpid", "0x1", "--controller", "tcp:1.2.3.4:6653"], "--dpid must be a decimal"),
        (["--bridge", "s1", "--dpid", "1"], "at least one --controller"),
        (["--bridge", "s1", "--dpid", "1", "--controller", "1.2.3.4"], "is not tcp:IP:PORT"),
        (["--bridge", "s1", "--dpid", "1", "--controller", "ssl:1.2.3.4:6653"], "needs --ssl KEY CERT CA"),
        (
            ["--bridge", "s1", "--dpid", "1", "--controller", "tcp:1.2.3.4:6653", "--datapath", "dpdk"],
            "system (kernel)",
        ),
        (["--bridge", "s1", "--colour", "red"], "unknown argument: --colour"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(args: list[str], reason: str) -> None:
    proc = dry_run(*args)
    assert proc.returncode == 2 and reason in proc.stderr and not proc.stdout
