"""The OpenFlow channel in the lab (``controller.openflow``): a switch outside the fabric is refused and gets no flows,
and with ``tls`` the switches connect over TLS with certificates made at test time, and the VIP still works.

OVS's SSL settings are global, so the TLS test removes them (``ovs-vsctl del-ssl``) however it ends; the extra bridge
of the allowlist test is deleted by its name.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import needs_lab, open_connections, plumbed_since, web_vip
from tests.lib.net import free_port
from topologies import SingleTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

WEIGHTS = {"h1": 1, "h2": 1}
STRANGER_BRIDGE = "nlbofstranger"
STRANGER_DPID = 0x0000_00DE_ADBE_EF01
CONNECT_TIMEOUT = 30.0


def ovs_vsctl(*args: str) -> str:
    """Run ``ovs-vsctl`` with a time bound; its output (CalledProcessError on failure)."""
    return subprocess.run(
        ["ovs-vsctl", "--timeout=10", *args], capture_output=True, text=True, timeout=20, check=True
    ).stdout


def flows_of(bridge: str) -> list[str]:
    """The flow entries of ``bridge`` as ``ovs-ofctl -O OpenFlow13 dump-flows`` lines."""
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if "actions=" in line]


def small_lab(tmp_path: Path, ofp_port: int, **controller: Any) -> Lab:
    """A one-switch lab (one client, backends h1 and h2) with the VIP web; ``controller`` overrides config keys."""
    topo = SingleTopo(clients=1, backends=2)
    config = lab_config(topo, [web_vip(topo, WEIGHTS)], **controller)
    return Lab(topo, config, workdir=str(tmp_path / "lab"), ofp_port=ofp_port, rest_port=free_port())


def assert_vip_classified(lab: Lab) -> None:
    """Connections from c1 to the VIP succeed and the controller plumbed them (classified by packet-in)."""
    started = time.time()
    open_connections(lab, "c1", 10)
    assert len(plumbed_since(lab, started)) >= 1


@contextmanager
def stranger_bridge(target: str) -> Iterator[str]:
    """A userspace OpenFlow 1.3 bridge (fail_mode secure, dpid ``STRANGER_DPID``) outside the fabric, pointed at
    ``target``; deleted by its name afterwards."""
    ovs_vsctl(
        "add-br",
        STRANGER_BRIDGE,
        "--",
        "set",
        "Bridge",
        STRANGER_BRIDGE,
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
        f"other-config:datapath-id={STRANGER_DPID:016x}",
    )
    try:
        ovs_vsctl("set-controller", STRANGER_BRIDGE, target)
        yield STRANGER_BRIDGE
    finally:
        ovs_vsctl("--if-exists", "del-br", STRANGER_BRIDGE)


def refusals(lab: Lab, dpid: int) -> int:
    """How often the controller refused ``dpid`` (``openflow.refused`` of ``GET /v1/stats``)."""
    return int(lab.rest("GET", "/v1/stats")["openflow"]["refused"].get(f"{dpid:016x}", 0))


def test_a_bridge_outside_the_fabric_is_refused_gets_no_flows_and_the_vip_still_works(tmp_path: Path) -> None:
    with small_lab(tmp_path, free_port()) as lab:
        lab.wait_switches_connected()
        with stranger_bridge(f"tcp:127.0.0.1:{lab.ofp_port}") as bridge:
            assert ovs_vsctl("get", "Bridge", bridge, "datapath_id").strip().strip('"') == f"{STRANGER_DPID:016x}"
            # Refused twice: the switch reconnected after the first refusal, so that connection's handling is over.
            wait_for(lambda: refusals(lab, STRANGER_DPID) >= 2, CONNECT_TIMEOUT, 0.2, "the stranger refused twice")
            assert flows_of(bridge) == []
            assert lab.rest("GET", "/v1/stats")["switches"] == list(lab.topo.dpids().values())
            assert_vip_classified(lab)
            assert flows_of(bridge) == []
        assert STRANGER_BRIDGE not in ovs_vsctl("list-br").split()


def rest_answers(lab: Lab) -> bool:
    """Whether the controller's REST API answers ``GET /v1/stats``."""
    try:
        lab.rest("GET", "/v1/stats", timeout=2.0)
    except OSError:
        return False
    return True


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a controller and a switch certificate it signed (RSA 2048, a day), made with the ``openssl`` CLI."""
    paths = {name: directory / name for name in ("ca.key", "ca.pem", "ctl.key", "ctl.pem", "sw.key", "sw.pem")}

    def openssl(*args: str | Path) -> None:
        """One ``openssl`` command, in ``directory``."""
        subprocess.run(["openssl", *map(str, args)], cwd=directory, capture_output=True, timeout=60, check=True)

    key = ["-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj"]
    openssl("req", "-x509", *key, "/CN=nlb-test-ca", "-keyout", paths["ca.key"], "-out", paths["ca.pem"])
    for who in ("ctl", "sw"):
        csr = directory / f"{who}.csr"
        openssl("req", "-new", *key, f"/CN=nlb-test-{who}", "-keyout", paths[f"{who}.key"], "-out", csr)
        signed_by_ca = ["-CA", paths["ca.pem"], "-CAkey", paths["ca.key"], "-CAcreateserial", "-days", "1"]
        openssl("x509", "-req", "-in", csr, *signed_by_ca, "-out", paths[f"{who}.pem"])
    return paths


@contextmanager
def switch_ssl(key: Path, cert: Path, ca: Path) -> Iterator[None]:
    """OVS's (global) SSL settings for the duration: the switch's key and certificate and the CA it trusts."""
    ovs_vsctl("set-ssl", str(key), str(cert), str(ca))
    try:
        yield
    finally:
        ovs_vsctl("del-ssl")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_switches_connect_over_tls_and_the_vip_is_classified(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    ofp_port = free_port()
    tls = {"cert": str(certs["ctl.pem"]), "key": str(certs["ctl.key"]), "ca": str(certs["ca.pem"])}
    lab = small_lab(tmp_path, ofp_port, openflow={"port": ofp_port, "tls": tls})
    with lab, switch_ssl(certs["sw.key"], certs["sw.pem"], certs["ca.pem"]):
        # Mininet pointed the switches at tcp:, which a TLS-only listener does not speak.
        wait_for(lambda: rest_answers(lab), CONNECT_TIMEOUT, 0.2, "the REST API answering")
        assert lab.rest("GET", "/v1/stats")["switches"] == []
        for switch in lab.topo.data_switches():
            ovs_vsctl("set-controller", switch, f"ssl:127.0.0.1:{ofp_port}")
        lab.wait_switches_connected(timeout=CONNECT_TIMEOUT)
        # OVS refreshes a controller's is_connected column every few seconds, after the REST view already has it.
        switches = lab.topo.data_switches()
        wait_for(lambda: all(lab.ovs_connected(s) for s in switches), CONNECT_TIMEOUT, 0.2, "OVS connected over TLS")
        assert_vip_classified(lab)
    assert ovs_vsctl("get-ssl").strip() == ""
