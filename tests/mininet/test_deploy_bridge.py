"""``deploy/ovs-bridge.sh`` makes a bridge the controller can use: checked on the userspace datapath (the only one
this machine has), and its kernel-datapath form is refused with a clear reason where the module is missing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.mininet

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "ovs-bridge.sh"
BRIDGE = "nlbdeploy0"


def vsctl(*args: str) -> str:
    """Run ovs-vsctl; its stdout, stripped."""
    return subprocess.run(["ovs-vsctl", *args], check=True, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture
def bridge() -> Iterator[str]:
    """A bridge name that exists only during the test."""
    vsctl("--if-exists", "del-br", BRIDGE)
    yield BRIDGE
    vsctl("--if-exists", "del-br", BRIDGE)


def test_the_script_makes_a_secure_openflow13_bridge_with_its_dpid_and_controllers(bridge: str) -> None:
    targets = ["tcp:127.0.0.1:16653", "tcp:127.0.0.1:16654"]
    argv = ["bash", str(SCRIPT), "--bridge", bridge, "--dpid", "42", "--datapath", "netdev"]
    for target in targets:
        argv += ["--controller", target]
    subprocess.run(argv, check=True, timeout=60)
    assert vsctl("get", "bridge", bridge, "datapath_type") == "netdev"
    assert vsctl("get", "bridge", bridge, "fail_mode") == "secure"
    assert vsctl("get", "bridge", bridge, "protocols") == "[OpenFlow13]"
    assert vsctl("get", "bridge", bridge, "other-config:datapath-id") == '"000000000000002a"'
    assert sorted(vsctl("get-controller", bridge).split()) == targets
    dpid = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "show", bridge], capture_output=True, text=True, timeout=30)
    assert "dpid:000000000000002a" in dpid.stdout
    subprocess.run(argv, check=True, timeout=60)  # idempotent: a second run changes nothing and does not fail


def test_the_kernel_datapath_is_refused_clearly_without_the_module(bridge: str) -> None:
    if Path("/sys/module/openvswitch").is_dir():
        pytest.skip("this machine has the kernel module: the kernel datapath would work")
    argv = ["bash", str(SCRIPT), "--bridge", bridge, "--dpid", "1", "--controller", "tcp:127.0.0.1:16653"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "needs the kernel's openvswitch module" in proc.stderr
    assert bridge not in vsctl("list-br").split()
