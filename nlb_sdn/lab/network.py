"""The lab's Mininet network: built from the topology on userspace OVS, its hosts configured (offloads, IPv6,
loopback VIPs, static ARP), lossy links in front of a host, and the switches' flow tables."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from nlb_sdn.lab.base import LabBase
from nlb_sdn.lab.commands import LabError, run, terminate
from topologies import SWITCH_OPTS
from topologies.base import IPV6_PREFIX_LEN

if TYPE_CHECKING:
    from mininet.net import Mininet
    from mininet.node import Host, Node


def require_mininet() -> None:
    """Raise a LabError naming the ``lab`` extra when Mininet is not installed."""
    if importlib.util.find_spec("mininet") is None:
        raise LabError("the Mininet lab needs Mininet: install the lab extra (pip install 'nlb_sdn[lab]')")


@functools.cache
def _lab_controller_class() -> type:
    """The controller node class the lab gives Mininet (made on first use: Mininet is imported only for a lab)."""
    from mininet.node import RemoteController

    class ControllerNode(RemoteController):
        """The controller as Mininet sees it: the process is ours (a Lab subprocess); only its idle shell is
        Mininet's."""

        def checkListening(self) -> None:
            """Skip Mininet's telnet probe: the lab polls the controller itself."""

        def stop(self, *_args: Any, **_kwargs: Any) -> None:
            """Close the shell Mininet spawned for this node (RemoteController would leave it running)."""
            self.terminate()

    return ControllerNode


class LabNetwork(LabBase):
    """The Mininet network of the lab: bring-up, host configuration, lossy links and flow dumps."""

    def _make_net(self) -> Mininet:
        """The Mininet network of the topology, not built yet, with our controller node."""
        from mininet.net import Mininet
        from mininet.node import Host, OVSSwitch

        return Mininet(
            topo=self.topo.mininet_topo(),
            switch=partial(OVSSwitch, **SWITCH_OPTS),
            host=Host,
            controller=partial(_lab_controller_class(), ip="127.0.0.1", port=self.ofp_port),
            build=False,
            autoSetMacs=False,
            waitConnected=False,
        )

    def _start_net(self) -> None:
        """Build and start the network, recording the nodes' shells as soon as they exist, and configure it."""
        self.net = self._make_net()
        try:
            self.net.build()
        finally:
            self._record_nodes()
        self.net.start()
        self._record_nodes()
        for host in self.net.hosts:
            self._configure_host(host)
        self._configure_tunnel_members()
        self._configure_l7_hosts()
        if self.static_arp:
            self._set_static_arp()

    def _record_nodes(self) -> None:
        """Remember the shells Mininet spawned for its nodes (they must be gone after teardown)."""
        if self.net is not None:
            nodes: list[Node] = [*self.net.hosts, *self.net.switches, *self.net.controllers]
            self._node_shells = [n.shell for n in nodes if n.shell is not None]
        self._record()

    def _stop_net(self, net: Mininet) -> None:
        """``net.stop()`` with a time bound (a hung ovs-vsctl must not hang the teardown)."""
        worker = threading.Thread(target=net.stop, name="mininet-stop", daemon=True)
        worker.start()
        worker.join(60.0)
        for shell in self._node_shells:
            if shell.poll() is None:
                terminate(shell)

    def _configure_host(self, host: Host) -> None:
        """Turn off tx checksum offload (userspace OVS needs it) and optionally IPv6 on every host interface."""
        for intf in host.intfNames():
            if intf == "lo":
                continue
            out = host.cmd(f"ethtool -K {intf} tx off >/dev/null 2>&1; echo rc=$?")
            if "rc=0" not in out:
                raise LabError(f"{host.name}: ethtool -K {intf} tx off failed: {out.strip()}")
        address = self.topo.host_ipv6(host.name)
        if address is not None:
            self._configure_ipv6(host, address)
        elif self.disable_ipv6 and host.inNamespace:
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")

    @staticmethod
    def _configure_ipv6(host: Host, address: str) -> None:
        """A dual-stack host of an ``ipv6`` topology: its static address on eth0 (no duplicate address detection, no
        router advertisements taken), so it is usable at once and the switches only see neighbour discovery."""
        intf = f"{host.name}-eth0"
        out = host.cmd(
            f"sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.{intf}.disable_ipv6=0 "
            f"net.ipv6.conf.{intf}.accept_ra=0 net.ipv6.conf.{intf}.accept_dad=0 && "
            f"ip -6 addr add {address}/{IPV6_PREFIX_LEN} dev {intf} nodad; echo rc=$?"
        )
        if "rc=0" not in out:
            raise LabError(f"{host.name}: IPv6 address {address} not set: {out.strip()}")

    def _configure_tunnel_members(self) -> None:
        """Put every tunnel-mode VIP on the loopback of each of its members' hosts (direct server return)."""
        for vip in self.model.vips:
            if vip.mode != "tunnel":
                continue
            for member in vip.members:
                host = next((h.name for h in self.model.fabric.hosts if h.ip == member.address), None)
                if host is not None:
                    self.add_loopback_vip(host, vip.address)

    def _configure_l7_hosts(self) -> None:
        """Put every l7 VIP on the loopback of its routers' and its members' hosts (FIG. 33: both ends hold it)."""
        for vip in self.model.vips:
            if vip.mode != "l7":
                continue
            for ident in [*vip.routers, *(member.address for member in vip.members)]:
                host = self.model.fabric.host(ident)
                if host is not None:
                    self.add_loopback_vip(host.name, vip.address)

    def add_loopback_vip(self, name: str, address: str) -> None:
        """Let host ``name`` accept packets to ``address`` (on ``lo``) without ever answering ARP for it.

        ``arp_ignore=1`` answers ARP only for addresses of the asking interface and ``arp_announce=2`` never uses
        the VIP as the source of the host's own ARP requests, so the controller stays the only one answering for it.
        """
        node = self.host(name)
        intf = node.defaultIntf().name
        out = node.cmd(
            f"sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 "
            f"net.ipv4.conf.{intf}.arp_ignore=1 net.ipv4.conf.{intf}.arp_announce=2 && "
            f"ip addr replace {address}/32 dev lo; echo rc=$?"
        )
        if "rc=0" not in out:
            raise LabError(f"{name}: cannot put {address} on lo: {out.strip()}")

    def _set_static_arp(self) -> None:
        """Permanent neighbour entries on every host for every other host and every VIP."""
        assert self.net is not None
        entries = [(h.ip, h.mac) for h in self.model.fabric.hosts] + [(v.address, v.mac) for v in self.model.vips]
        for host in self.net.hosts:
            if not host.inNamespace:
                continue
            intf = host.defaultIntf().name
            commands = [
                f"ip neigh replace {ip} lladdr {mac} dev {intf} nud permanent" for ip, mac in entries if ip != host.IP()
            ]
            host.cmd("; ".join(commands))

    def make_lossy(self, name: str, loss: float, seconds: float = 300.0) -> subprocess.Popen[bytes]:
        """Put a lossy link in front of host ``name`` (the kernel has no netem): see ``nlb_sdn.lab.lossy``.

        The host's address and MAC move to a new veth ``<name>-in``; a relay process drops each frame between its
        peer ``<name>-out`` and the host's old interface with probability ``loss``. ``restore_link`` undoes it.
        """
        node = self.host(name)
        intf = node.defaultIntf().name
        inner, outer = f"{name}-in", f"{name}-out"
        address = node.cmd(f"ip -o -4 addr show dev {intf} | awk '{{print $4}}'").strip()
        neighbours = node.cmd(f"ip neigh show dev {intf} nud permanent").strip().splitlines()
        offloads = "tx off tso off gso off gro off"
        script = [
            f"ip link add {inner} type veth peer name {outer}",
            f"ip link set {inner} address {node.MAC()}",
            f"ethtool -K {inner} {offloads}",
            f"ethtool -K {outer} {offloads}",
            f"ethtool -K {intf} {offloads}",
            f"ip addr del {address} dev {intf}",
            f"ip addr add {address} dev {inner}",
            f"sysctl -qw net.ipv4.conf.{inner}.arp_ignore=1 net.ipv4.conf.{inner}.arp_announce=2",
            f"ip link set {inner} up",
            f"ip link set {outer} up promisc on",
            f"ip link set {intf} promisc on",
            *(
                f"ip neigh replace {line.split()[0]} lladdr {line.split()[2]} dev {inner} nud permanent"
                for line in neighbours
                if "lladdr" in line
            ),
        ]
        out = node.cmd(" && ".join(script) + "; echo rc=$?")
        if "rc=0" not in out:
            raise LabError(f"{name}: cannot make its link lossy: {out.strip()}")
        proc = self.start_process(
            name,
            [
                sys.executable,
                "-m",
                "nlb_sdn.lab.lossy",
                "--a",
                intf,
                "--b",
                outer,
                "--loss",
                str(loss),
                "--seconds",
                str(seconds),
            ],
            f"lossy-{name}.log",
        )
        self._lossy[name] = (proc, address)
        return proc

    def restore_link(self, name: str) -> None:
        """Undo ``make_lossy``: the address back on the host's interface, the relay stopped by PID."""
        proc, address = self._lossy.pop(name)
        self.stop_process(proc)
        node = self.host(name)
        intf = node.defaultIntf().name
        neighbours = node.cmd(f"ip neigh show dev {name}-in nud permanent").strip().splitlines()
        script = [
            f"ip link del {name}-in",
            f"ip addr add {address} dev {intf}",
            f"ip link set {intf} promisc off",
            *(
                f"ip neigh replace {line.split()[0]} lladdr {line.split()[2]} dev {intf} nud permanent"
                for line in neighbours
                if "lladdr" in line
            ),
        ]
        out = node.cmd(" && ".join(script) + "; echo rc=$?")
        if "rc=0" not in out:
            raise LabError(f"{name}: cannot restore its link: {out.strip()}")

    @staticmethod
    def dump_flows(switch: str, table: int | None = None) -> list[str]:
        """The flow entries of ``switch`` (optionally one table) as ``ovs-ofctl -O OpenFlow13 dump-flows`` lines."""
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch]
        if table is not None:
            cmd.append(f"table={table}")
        out = run(cmd, check=True).stdout
        return [line.strip() for line in out.splitlines() if "actions=" in line]
