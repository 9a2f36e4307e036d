"""Mininet lab harness: a topology on userspace OVS, the controller as a subprocess, backends and load clients.

Used by the demo, the Mininet tests and the benchmarks::

    topo = FabricTopo()
    config = lab_config(topo, [{"name": "web", "address": "10.0.0.100", "port": 80, "members": topo.members()}])
    with Lab(topo, config, workdir=tmp) as lab:
        lab.wait_switches_connected()
        summary = lab.run_client("c1", ["connections", "10.0.0.100", "--count", "100"])

Every process the lab starts is tracked by PID and stopped by PID. Teardown first removes what carries the lab's own
names (the topology's bridges and ``<node>-ethN`` links, and the processes a crashed earlier lab recorded in its state
file), then runs ``mn -c`` as the final sweep the project's rules ask for; our controllers and backends are already
gone by then, so its kill-by-name list (Mininet's own helpers) never hits them. An exclusive lock serialises labs on
one machine, since they share switch names and ports.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from nlb_sdn.config import parse_config
from topologies import SWITCH_OPTS, TOPOLOGIES, LabTopo

if TYPE_CHECKING:
    from mininet.net import Mininet
    from mininet.node import Host, Node

T = TypeVar("T")

STATE_DIR = Path("/run/nlb_sdn_lab")
LOCK_FILE = STATE_DIR / "lab.lock"
PIDS_FILE = STATE_DIR / "pids.json"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
COMMAND_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class LabError(RuntimeError):
    """The lab could not be brought up, used or torn down as asked."""


class RestError(LabError):
    """The controller REST API answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value and return it; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def run(cmd: Sequence[str], timeout: float = COMMAND_TIMEOUT, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace with a time bound and captured text output."""
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(cmd)}: no answer within {timeout:g}s") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (empty if missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of process ``pid``, or None if it is gone; with the PID it names one
    process instance, across exec and PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _dpid_set(switches: Any) -> set[int]:
    """The dpids in the ``switches`` entry of ``GET /v1/stats`` (list of ints/dicts with ``dpid``, or a mapping)."""
    items = switches.keys() if isinstance(switches, dict) else (switches or [])
    dpids = set()
    for item in items:
        value = item.get("dpid") if isinstance(item, dict) else item
        if isinstance(value, int):
            dpids.add(value)
        elif isinstance(value, str) and value.isdigit():
            dpids.add(int(value))
    return dpids


def _terminate(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process we started (and its process group, which it leads) by PID: SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            continue


def _require_mininet() -> None:
    """Raise a LabError naming the ``lab`` extra when Mininet is not installed."""
    if importlib.util.find_spec("mininet") is None:
        raise LabError("the Mininet lab needs Mininet: install the lab extra (pip install 'nlb_sdn[lab]')")


@functools.cache
def _lab_controller_class() -> type:
    """The controller node class the lab gives Mininet (made on first use: Mininet is imported only for a lab)."""
    from mininet.node import RemoteController

    class LabController(RemoteController):
        """The controller as Mininet sees it: the process is ours (a Lab subprocess); only its idle shell is
        Mininet's."""

        def checkListening(self) -> None:
            """Skip Mininet's telnet probe: the lab polls the controller itself."""

        def stop(self, *_args: Any, **_kwargs: Any) -> None:
            """Close the shell Mininet spawned for this node (RemoteController would leave it running)."""
            self.terminate()

    return LabController


class Lab:
    """A running lab: Mininet network, controller subprocess and backend servers, torn down completely on exit."""

    def __init__(self, topo: str | LabTopo, config: dict[str, Any], *, workdir: str,
                 controller_cmd: list[str] | None = None, ofp_port: int = 6653, rest_port: int | None = None,
                 static_arp: bool = False, disable_ipv6: bool = True, backend_ports: list[int] | None = None,
                 lock_timeout: float = 300.0) -> None:
        """Describe the lab; nothing starts before ``__enter__``.

        ``topo`` is a LabTopo or a name in ``TOPOLOGIES``. ``config`` is a config dict; a missing ``fabric`` is
        filled from the topology and the REST port is set to ``rest_port`` when given (else the config's, 8080
        by default). ``controller_cmd`` replaces the nlb controller; its items may use ``{config}``,
        ``{ofp_port}``, ``{rest_port}`` and ``{workdir}``. Backends listen on ``backend_ports`` or, by default, on
        every port the config's members use for that host (80 when none).
        """
        self.topo: LabTopo = TOPOLOGIES[topo]() if isinstance(topo, str) else topo
        self.workdir = Path(workdir)
        self.ofp_port = ofp_port
        config = json.loads(json.dumps(config))
        config.setdefault("fabric", self.topo.fabric_config())
        rest = config.setdefault("controller", {}).setdefault("rest", {})
        if rest_port is not None:
            rest["port"] = rest_port
        self.model = parse_config(config, "<lab config>")
        self.config = config
        self.rest_port = self.model.controller.rest.port
        self.config_path = self.workdir / "config.yaml"
        self.controller_log = self.workdir / "controller.log"
        self.nlb_controller = controller_cmd is None
        self.controller_cmd = (
            [sys.executable, "-m", "nlb_sdn.cli", "controller", "--config", str(self.config_path),
             "--ofp-tcp-listen-port", str(ofp_port)]
            if controller_cmd is None
            else [item.format(config=self.config_path, ofp_port=ofp_port, rest_port=self.rest_port,
                              workdir=self.workdir) for item in controller_cmd]
        )
        self.static_arp = static_arp
        self.disable_ipv6 = disable_ipv6
        self.backend_ports = backend_ports
        self.lock_timeout = lock_timeout
        self.net: Mininet | None = None
        self.controller_proc: subprocess.Popen[bytes] | None = None
        self.backend_procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.client_procs: list[subprocess.Popen[bytes]] = []
        self.agent_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.host_procs: list[subprocess.Popen[bytes]] = []
        self._lossy: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._node_shells: list[subprocess.Popen[bytes]] = []
        self._lock_fd: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self._closing = False
        self._pending_signal: int | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Lab":
        """Bring the lab up (tearing everything down again if any step fails)."""
        self._install_signal_handlers()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Tear everything down; re-raise a SIGINT/SIGTERM that arrived during teardown."""
        pending = self.close(raise_leftovers=exc is None)
        if pending is not None and exc is None:
            raise KeyboardInterrupt if pending == signal.SIGINT else SystemExit(128 + pending)

    def _start(self) -> None:
        """Every bring-up step, in order."""
        if os.geteuid() != 0:
            raise LabError("the Mininet lab needs root")
        _require_mininet()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._ensure_ovs()
        self._clean_leftovers()
        ports = [self.ofp_port] + ([self.rest_port] if self.model.controller.rest.enabled else [])
        for port in ports:
            if self._listening_locally(port):
                raise LabError(f"something already listens on 127.0.0.1:{port}; is another controller running?")
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.start_controller()
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
        for name in self.topo.backends:
            for port in self._ports_of(name):
                self.start_backend(name, port)
        self._record()
        self.check_controller()

    def _make_net(self) -> Mininet:
        """The Mininet network of the topology, not built yet, with our controller node."""
        from mininet.net import Mininet
        from mininet.node import Host, OVSSwitch

        return Mininet(topo=self.topo.mininet_topo(), switch=partial(OVSSwitch, **SWITCH_OPTS), host=Host,
                       controller=partial(_lab_controller_class(), ip="127.0.0.1", port=self.ofp_port),
                       build=False, autoSetMacs=False, waitConnected=False)

    def close(self, raise_leftovers: bool = False) -> int | None:
        """Stop everything by PID, stop Mininet, remove our bridges and links, verify; return a deferred signal.

        Idempotent; does nothing to the network unless this lab holds the lab lock (so it never touches another
        lab's bridges). With ``raise_leftovers`` a LabError names anything of ours still present afterwards.
        """
        if self._closing:
            return None
        self._closing = True
        if self._lock_fd is None:
            self._restore_signal_handlers()
            return self._pending_signal
        try:
            for proc in self.client_procs:
                _terminate(proc)
            for key in list(self.backend_procs):
                _terminate(self.backend_procs.pop(key))
            for name in list(self.agent_procs):
                _terminate(self.agent_procs.pop(name))
            while self.host_procs:
                _terminate(self.host_procs.pop())
            self.stop_controller()
            if self.net is not None:
                self._stop_net(self.net)
            self._clean_ours()
            run(["mn", "-c"], timeout=60.0)
            leftovers = self.leftovers()
            if not leftovers:
                PIDS_FILE.unlink(missing_ok=True)
            elif raise_leftovers:
                raise LabError(f"left over after teardown: {', '.join(leftovers)}")
            else:
                print(f"nlb_sdn lab: left over after teardown: {', '.join(leftovers)}", file=sys.stderr)
        finally:
            self.net = None
            self._release_lock()
            self._restore_signal_handlers()
        pending, self._pending_signal = self._pending_signal, None
        return pending

    def _stop_net(self, net: Mininet) -> None:
        """``net.stop()`` with a time bound (a hung ovs-vsctl must not hang the teardown)."""
        worker = threading.Thread(target=net.stop, name="mininet-stop", daemon=True)
        worker.start()
        worker.join(60.0)
        for shell in self._node_shells:
            if shell.poll() is None:
                _terminate(shell)

    # ----------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> None:
        """Turn SIGINT/SIGTERM into exceptions so ``__exit__`` tears down (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        """Put back the handlers found at ``__enter__``."""
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Raise out of the lab's body; during teardown only remember the signal."""
        if self._closing:
            self._pending_signal = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    # ----------------------------------------------------------------- host environment

    def _acquire_lock(self) -> None:
        """Take the machine-wide lab lock, waiting at most ``lock_timeout`` s for another lab to finish."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)

        def locked() -> bool:
            """Try the lock once."""
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            wait_for(locked, self.lock_timeout, 0.5, f"the lab lock {LOCK_FILE} (another lab is running)")
        except TimeoutError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _release_lock(self) -> None:
        """Release the lab lock if held."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def _ensure_ovs() -> None:
        """Start Open vSwitch with ovs-ctl when ``ovs-vsctl show`` cannot reach it."""
        if run(["ovs-vsctl", "--timeout=5", "show"]).returncode == 0:
            return
        run([OVS_CTL, "start"], timeout=60.0, check=True)
        wait_for(lambda: run(["ovs-vsctl", "--timeout=5", "show"]).returncode == 0, 30.0, 0.5, "Open vSwitch")

    @staticmethod
    def _listening_locally(port: int) -> bool:
        """Whether a TCP socket listens on ``port`` in the root namespace (checked with ss, no connection made)."""
        return bool(run(["ss", "-ltnH", f"sport = :{port}"]).stdout.strip())

    def _our_link_names(self) -> list[str]:
        """Interfaces in the root namespace that carry our node names (``<node>-ethN`` and switch taps)."""
        nodes = set(self.topo.switches()) | set(self.topo.hosts())
        names = []
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
            fields = line.split(":", 2)
            if len(fields) < 3:
                continue
            name = fields[1].strip().split("@")[0]
            match = re.fullmatch(r"(.+)-eth\d+", name)
            if (match and match.group(1) in nodes) or name in self.topo.switches():
                names.append(name)
        return names

    def _clean_ours(self) -> None:
        """Delete our bridges and our interfaces from the root namespace (scoped replacement for ``mn -c``)."""
        switches = self.topo.switches()
        if switches:
            cmd = ["ovs-vsctl", "--timeout=10"]
            for name in switches:
                cmd += ["--", "--if-exists", "del-br", name]
            run(cmd)
        for name in self._our_link_names():
            run(["ip", "link", "del", name])

    def _clean_leftovers(self) -> None:
        """Before bring-up: kill what a crashed earlier lab recorded (PID and start time must match), clean ours."""
        try:
            recorded = json.loads(PIDS_FILE.read_text())
        except (OSError, ValueError):
            recorded = []
        for entry in recorded:
            pid, started = entry.get("pid"), entry.get("start_time")
            if isinstance(pid, int) and pid > 1 and started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        PIDS_FILE.unlink(missing_ok=True)
        self._clean_ours()

    def _record(self) -> None:
        """Write the PIDs and command lines of everything we started, for ``_clean_leftovers`` after a crash."""
        entries = [{"pid": p.pid, "start_time": _start_time(p.pid), "args": " ".join(map(str, p.args))}
                   for p in self._all_procs() if p.poll() is None]
        PIDS_FILE.write_text(json.dumps([e for e in entries if e["start_time"] is not None], indent=1))

    def _record_nodes(self) -> None:
        """Remember the shells Mininet spawned for its nodes (they must be gone after teardown)."""
        if self.net is not None:
            nodes: list[Node] = [*self.net.hosts, *self.net.switches, *self.net.controllers]
            self._node_shells = [n.shell for n in nodes if n.shell is not None]
        self._record()

    def _all_procs(self) -> list[subprocess.Popen[Any]]:
        """Every process the lab started or had Mininet start."""
        procs: list[subprocess.Popen[Any]] = [*self._node_shells, *self.backend_procs.values(), *self.client_procs,
                                              *self.agent_procs.values(), *self.host_procs]
        if self.controller_proc is not None:
            procs.append(self.controller_proc)
        return procs

    def leftovers(self) -> list[str]:
        """Anything of ours still present: live processes, OVS bridges, root-namespace interfaces."""
        found = [f"pid {p.pid} ({' '.join(map(str, p.args))[:60]})" for p in self._all_procs() if p.poll() is None]
        bridges = set(run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split())
        found += [f"bridge {b}" for b in self.topo.switches() if b in bridges]
        found += [f"interface {name}" for name in self._our_link_names()]
        return found

    # ----------------------------------------------------------------- network setup

    def _configure_host(self, host: Host) -> None:
        """Turn off tx checksum offload (userspace OVS needs it) and optionally IPv6 on every host interface."""
        for intf in host.intfNames():
            if intf == "lo":
                continue
            out = host.cmd(f"ethtool -K {intf} tx off >/dev/null 2>&1; echo rc=$?")
            if "rc=0" not in out:
                raise LabError(f"{host.name}: ethtool -K {intf} tx off failed: {out.strip()}")
        if self.disable_ipv6 and host.inNamespace:
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")

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
        out = node.cmd(f"sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 "
                       f"net.ipv4.conf.{intf}.arp_ignore=1 net.ipv4.conf.{intf}.arp_announce=2 && "
                       f"ip addr replace {address}/32 dev lo; echo rc=$?")
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
            commands = [f"ip neigh replace {ip} lladdr {mac} dev {intf} nud permanent"
                        for ip, mac in entries if ip != host.IP()]
            host.cmd("; ".join(commands))

    def _ports_of(self, backend: str) -> list[int]:
        """The ports backend ``backend`` serves: ``backend_ports``, else its members' ports, else 80."""
        if self.backend_ports is not None:
            return list(self.backend_ports)
        address = self.topo.host_ip(backend)
        ports = sorted({m.port for v in self.model.vips for m in v.members if m.address == address})
        return ports or [80]

    # ----------------------------------------------------------------- controller

    def _require_running(self) -> None:
        """Raise LabError unless the lab is up (holds the lock and is not closing)."""
        if self._lock_fd is None or self._closing:
            raise LabError("the lab is not running")

    def start_controller(self) -> None:
        """Start the controller subprocess (own process group, output to ``controller.log``)."""
        self._require_running()
        if self.controller_proc is not None and self.controller_proc.poll() is None:
            raise LabError("the controller is already running")
        with open(self.controller_log, "ab") as log:
            self.controller_proc = subprocess.Popen(
                self.controller_cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=dict(os.environ, NLB_SDN_CONFIG=str(self.config_path)))
        self._record()

    def stop_controller(self) -> None:
        """Stop the controller subprocess by PID (SIGTERM, then SIGKILL)."""
        if self.controller_proc is not None:
            _terminate(self.controller_proc)

    def check_controller(self) -> None:
        """Raise LabError with the log tail if the controller process has exited."""
        if self.controller_proc is None or self.controller_proc.poll() is not None:
            code = None if self.controller_proc is None else self.controller_proc.returncode
            raise LabError(f"controller not running (exit {code}); {self.controller_log}:\n"
                           f"{_tail(self.controller_log)}")

    def wait_switches_connected(self, timeout: float = 30.0, via: str | None = None) -> None:
        """Wait until every switch of the topology is connected to the controller.

        ``via="rest"`` polls ``GET /v1/stats`` until ``switches`` lists every dpid (default for the nlb controller);
        ``via="ovs"`` asks OVS whether each bridge's controller is connected (default for ``controller_cmd``).
        """
        mode = via or ("rest" if self.nlb_controller else "ovs")
        expected = set(self.topo.dpids().values())

        def connected() -> bool:
            """One poll of the connection state."""
            self.check_controller()
            if mode == "rest":
                try:
                    stats = self.rest("GET", "/v1/stats", timeout=2.0)
                except (OSError, LabError, ValueError):
                    return False
                return isinstance(stats, dict) and expected <= _dpid_set(stats.get("switches"))
            return all(self.ovs_connected(name) for name in self.topo.data_switches())

        wait_for(connected, timeout, 0.2, f"switches {sorted(expected)} connected ({mode})")

    @staticmethod
    def ovs_connected(switch: str) -> bool:
        """Whether OVS reports bridge ``switch`` connected to one of its controllers."""
        out = run(["ovs-vsctl", "--timeout=5", "get", "Bridge", switch, "controller"]).stdout.strip()
        uuids = [u.strip() for u in out.strip("[]").split(",") if u.strip()]
        return any(run(["ovs-vsctl", "--timeout=5", "get", "Controller", u, "is_connected"]).stdout.strip()
                   == "true" for u in uuids)

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        """Call the controller REST API on 127.0.0.1 with a JSON body; return the decoded JSON (None if empty).

        Raises RestError (``status``, ``body``) for HTTP error statuses, OSError when nothing answers.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw) if raw else None
            except ValueError:
                detail = raw.decode(errors="replace")
            raise RestError(method, path, exc.code, detail) from None
        return json.loads(raw) if raw else None

    # ----------------------------------------------------------------- hosts, backends, clients

    def host(self, name: str) -> Host:
        """The Mininet host called ``name``."""
        self._require_running()
        if self.net is None or name not in self.topo.hosts():
            raise LabError(f"no host {name!r} in the running lab")
        return self.net.get(name)

    def client(self, name: str) -> Host:
        """The Mininet host of client ``name`` (c1, c2, ...)."""
        if name not in self.topo.clients:
            raise LabError(f"{name!r} is not a client of this topology ({', '.join(self.topo.clients)})")
        return self.host(name)

    def start_backend(self, name: str, port: int = 80, timeout: float = 15.0,
                      handoff_socket: str | None = None) -> None:
        """Start ``nlb-sdn-backend`` on backend host ``name`` and wait until it listens on ``port``.

        With ``handoff_socket`` it also takes migrated connections on that Unix socket (``handoff_socket(name)``).
        """
        self._require_running()
        if name not in self.topo.backends:
            raise LabError(f"{name!r} is not a backend of this topology ({', '.join(self.topo.backends)})")
        old = self.backend_procs.get((name, port))
        if old is not None and old.poll() is None:
            raise LabError(f"backend {name}:{port} is already running")
        node = self.host(name)
        log_path = self.workdir / f"backend-{name}-{port}.log"
        with open(log_path, "ab") as log:
            handoff = ["--handoff-socket", handoff_socket] if handoff_socket else []
            proc = node.popen([sys.executable, "-m", "nlb_sdn.lab.backend", "--name", name, "--port", str(port),
                               *handoff], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.backend_procs[(name, port)] = proc
        self._record()

        def listening() -> bool:
            """One poll of the listening socket (failing fast if the server died)."""
            if proc.poll() is not None:
                raise LabError(f"backend {name}:{port} exited with {proc.returncode}:\n{_tail(log_path)}")
            return bool(self.host_run(name, ["ss", "-ltnH", f"sport = :{port}"], timeout=5.0).stdout.strip())

        wait_for(listening, timeout, 0.05, f"backend {name} listening on port {port}")

    def stop_backend(self, name: str, port: int = 80) -> None:
        """Stop the backend server of ``name`` on ``port`` by PID."""
        proc = self.backend_procs.pop((name, port), None)
        if proc is None:
            raise LabError(f"no backend {name}:{port} was started")
        _terminate(proc)

    def handoff_socket(self, name: str) -> str:
        """The Unix socket on which host ``name``'s backend takes migrated connections from its agent."""
        return str(self.workdir / f"handoff-{name}.sock")

    def start_router(self, name: str, args: Sequence[str] = (), status_port: int = 9180,
                     timeout: float = 15.0) -> subprocess.Popen[bytes]:
        """Start ``nlb-sdn-router run`` on router host ``name`` with the lab's config and ``args``.

        Waits until its status port (``127.0.0.1:status_port`` in the router's namespace) listens; the router is
        stopped by PID at teardown, or earlier with ``stop_process``.
        """
        self._require_running()
        if name not in self.topo.routers:
            raise LabError(f"{name!r} is not a router of this topology ({', '.join(self.topo.routers) or 'none'})")
        log_name = f"router-{name}.log"
        proc = self.start_process(name, [sys.executable, "-m", "nlb_sdn.router.cli", "run", "--config",
                                         str(self.config_path), "--status", f"127.0.0.1:{status_port}", *args],
                                  log_name)

        def listening() -> bool:
            """One poll of the status port (failing fast if the router died)."""
            if proc.poll() is not None:
                raise LabError(f"router {name} exited with {proc.returncode}:\n{_tail(self.workdir / log_name)}")
            return bool(self.host_run(name, ["ss", "-ltnH", f"sport = :{status_port}"], timeout=5.0).stdout.strip())

        wait_for(listening, timeout, 0.05, f"router {name} status port {status_port}")
        return proc

    def agent_config_path(self, name: str) -> Path:
        """Where the agent config of host ``name`` is written."""
        return self.workdir / f"agent-{name}.yaml"

    def agent_socket(self, name: str) -> str:
        """The control socket of host ``name``'s agent (in the workdir, since hosts share the file system)."""
        return str(self.workdir / f"agent-{name}.sock")

    def start_agent(self, name: str, config: dict[str, Any], timeout: float = 15.0,
                    extra_args: Sequence[str] = ()) -> None:
        """Start ``nlb-sdn-agent`` on backend or router ``name`` with ``config`` (dict); wait until it answers its CLI.

        A router's agent has no apps: its heartbeats tell the controller that the router node lives (SPEC §2.3).
        """
        self._require_running()
        hosts = [*self.topo.backends, *self.topo.routers]
        if name not in hosts:
            raise LabError(f"{name!r} is not a backend or router of this topology ({', '.join(hosts)})")
        old = self.agent_procs.get(name)
        if old is not None and old.poll() is None:
            raise LabError(f"the agent of {name} is already running")
        config = dict(config, control_socket=self.agent_socket(name))
        path = self.agent_config_path(name)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = self.workdir / f"agent-{name}.log"
        with open(log_path, "ab") as log:
            proc = self.host(name).popen([sys.executable, "-m", "nlb_sdn.agent.cli", "run", "--config", str(path),
                                          *extra_args], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.agent_procs[name] = proc
        self._record()

        def answering() -> bool:
            """One poll of the agent's control socket (failing fast if the agent died)."""
            if proc.poll() is not None:
                raise LabError(f"agent {name} exited with {proc.returncode}:\n{_tail(log_path)}")
            return self.agent_cli(name, ["table", "--json"]).returncode == 0

        wait_for(answering, timeout, 0.1, f"agent {name} answering")

    def stop_agent(self, name: str, graceful: bool = True) -> None:
        """Stop host ``name``'s agent by PID: SIGTERM (it says goodbye) or SIGKILL (it just goes silent)."""
        proc = self.agent_procs.pop(name, None)
        if proc is None:
            raise LabError(f"no agent was started on {name}")
        if graceful:
            _terminate(proc)
        else:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def agent_cli(self, name: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run ``nlb-sdn-agent ARGS --socket <its socket>`` (table, set-target, set-load) from the root namespace."""
        return run([sys.executable, "-m", "nlb_sdn.agent.cli", *args, "--socket", self.agent_socket(name)])

    def host_run(self, name: str, cmd: Sequence[str],
                 timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a command inside host ``name``'s namespace with a time bound (killed by PID on timeout)."""
        proc = self.host(name).popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            raise LabError(f"{name}: {' '.join(cmd)}: no answer within {timeout:g}s") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

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
        script = [f"ip link add {inner} type veth peer name {outer}", f"ip link set {inner} address {node.MAC()}",
                  f"ethtool -K {inner} {offloads}", f"ethtool -K {outer} {offloads}", f"ethtool -K {intf} {offloads}",
                  f"ip addr del {address} dev {intf}", f"ip addr add {address} dev {inner}",
                  f"sysctl -qw net.ipv4.conf.{inner}.arp_ignore=1 net.ipv4.conf.{inner}.arp_announce=2",
                  f"ip link set {inner} up", f"ip link set {outer} up promisc on", f"ip link set {intf} promisc on",
                  *(f"ip neigh replace {line.split()[0]} lladdr {line.split()[2]} dev {inner} nud permanent"
                    for line in neighbours if "lladdr" in line)]
        out = node.cmd(" && ".join(script) + "; echo rc=$?")
        if "rc=0" not in out:
            raise LabError(f"{name}: cannot make its link lossy: {out.strip()}")
        proc = self.start_process(name, [sys.executable, "-m", "nlb_sdn.lab.lossy", "--a", intf, "--b", outer,
                                          "--loss", str(loss), "--seconds", str(seconds)], f"lossy-{name}.log")
        self._lossy[name] = (proc, address)
        return proc

    def restore_link(self, name: str) -> None:
        """Undo ``make_lossy``: the address back on the host's interface, the relay stopped by PID."""
        proc, address = self._lossy.pop(name)
        self.stop_process(proc)
        node = self.host(name)
        intf = node.defaultIntf().name
        neighbours = node.cmd(f"ip neigh show dev {name}-in nud permanent").strip().splitlines()
        script = [f"ip link del {name}-in", f"ip addr add {address} dev {intf}", f"ip link set {intf} promisc off",
                  *(f"ip neigh replace {line.split()[0]} lladdr {line.split()[2]} dev {intf} nud permanent"
                    for line in neighbours if "lladdr" in line)]
        out = node.cmd(" && ".join(script) + "; echo rc=$?")
        if "rc=0" not in out:
            raise LabError(f"{name}: cannot restore its link: {out.strip()}")

    def start_process(self, name: str, cmd: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in host ``name`` (output to ``<workdir>/<log_name>``); stopped by PID at teardown."""
        with open(self.workdir / log_name, "ab") as log:
            proc = self.host(name).popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.host_procs.append(proc)
        self._record()
        return proc

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a process started with ``start_process`` by PID (SIGTERM, then SIGKILL)."""
        _terminate(proc)
        if proc in self.host_procs:
            self.host_procs.remove(proc)

    def start_client(self, name: str, args: Sequence[Any]) -> subprocess.Popen[bytes]:
        """Start ``nlb-sdn-client`` with ``args`` in host ``name`` without waiting (see ``collect_client``)."""
        proc = self.host(name).popen([sys.executable, "-m", "nlb_sdn.lab.client", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.client_procs.append(proc)
        self._record()
        return proc

    def collect_client(self, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a started client and return its JSON summary plus ``returncode``; kill it after ``timeout`` s."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            raise LabError(f"client {' '.join(map(str, proc.args))} still running after {timeout:g}s") from None
        finally:
            if proc in self.client_procs and proc.poll() is not None:
                self.client_procs.remove(proc)
        lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
        try:
            summary = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise LabError(f"client exit {proc.returncode} without a JSON summary: "
                           f"{err.decode(errors='replace').strip()[-2000:]}") from None
        summary["returncode"] = proc.returncode
        return summary

    def run_client(self, name: str, args: Sequence[Any], timeout: float = 120.0) -> dict[str, Any]:
        """Run ``nlb-sdn-client`` with ``args`` in host ``name`` and return its JSON summary plus ``returncode``."""
        return self.collect_client(self.start_client(name, args), timeout)

    # ----------------------------------------------------------------- switches

    @staticmethod
    def dump_flows(switch: str, table: int | None = None) -> list[str]:
        """The flow entries of ``switch`` (optionally one table) as ``ovs-ofctl -O OpenFlow13 dump-flows`` lines."""
        cmd = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch]
        if table is not None:
            cmd.append(f"table={table}")
        out = run(cmd, check=True).stdout
        return [line.strip() for line in out.splitlines() if "actions=" in line]
