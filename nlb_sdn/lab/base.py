"""The state every part of the lab shares, and the primitives they all use: the running check, the record of our
processes, host lookup and commands in a host's namespace.

``Lab`` (``nlb_sdn.lab.harness``) is composed of parts that each derive from ``LabBase``: ``LabMachine`` (lock,
Open vSwitch, leftovers, signals), ``LabNetwork`` (the Mininet network), ``LabController`` (the controller process
and its REST API) and ``LabServices`` (backends, routers, agents and load clients on the hosts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlb_sdn.config import parse_config
from nlb_sdn.lab.commands import COMMAND_TIMEOUT, LabError, command_line, start_time, terminate
from topologies import TOPOLOGIES, LabTopo

if TYPE_CHECKING:
    from mininet.net import Mininet
    from mininet.node import Host

STATE_DIR = Path("/run/nlb_sdn_lab")
PIDS_FILE = STATE_DIR / "pids.json"


class LabBase:
    """The lab's description and running state: topology, config, workdir, ports, network and our processes."""

    def __init__(
        self,
        topo: str | LabTopo,
        config: dict[str, Any],
        *,
        workdir: str,
        controller_cmd: list[str] | None = None,
        ofp_port: int = 6653,
        rest_port: int | None = None,
        static_arp: bool = False,
        disable_ipv6: bool = True,
        backend_ports: list[int] | None = None,
        lock_timeout: float = 300.0,
    ) -> None:
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
            [
                sys.executable,
                "-m",
                "nlb_sdn.cli",
                "controller",
                "--config",
                str(self.config_path),
                "--ofp-tcp-listen-port",
                str(ofp_port),
            ]
            if controller_cmd is None
            else [
                item.format(config=self.config_path, ofp_port=ofp_port, rest_port=self.rest_port, workdir=self.workdir)
                for item in controller_cmd
            ]
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

    def _require_running(self) -> None:
        """Raise LabError unless the lab is up (holds the lock and is not closing)."""
        if self._lock_fd is None or self._closing:
            raise LabError("the lab is not running")

    def _all_procs(self) -> list[subprocess.Popen[Any]]:
        """Every process the lab started or had Mininet start."""
        procs: list[subprocess.Popen[Any]] = [
            *self._node_shells,
            *self.backend_procs.values(),
            *self.client_procs,
            *self.agent_procs.values(),
            *self.host_procs,
        ]
        if self.controller_proc is not None:
            procs.append(self.controller_proc)
        return procs

    def _record(self) -> None:
        """Write the PIDs and command lines of everything we started, for the cleanup after a crash."""
        entries = [
            {"pid": p.pid, "start_time": start_time(p.pid), "args": command_line(p)}
            for p in self._all_procs()
            if p.poll() is None
        ]
        PIDS_FILE.write_text(json.dumps([e for e in entries if e["start_time"] is not None], indent=1))

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

    def host_run(
        self, name: str, cmd: Sequence[str], timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside host ``name``'s namespace with a time bound (killed by PID on timeout)."""
        proc = self.host(name).popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate(proc)
            raise LabError(f"{name}: {' '.join(cmd)}: no answer within {timeout:g}s") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def start_process(self, name: str, cmd: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in host ``name`` (output to ``<workdir>/<log_name>``); stopped by PID at teardown."""
        with open(self.workdir / log_name, "ab") as log:
            proc = self.host(name).popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.host_procs.append(proc)
        self._record()
        return proc

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a process started with ``start_process`` by PID (SIGTERM, then SIGKILL)."""
        terminate(proc)
        if proc in self.host_procs:
            self.host_procs.remove(proc)
