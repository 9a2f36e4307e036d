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

``Lab`` composes its parts, each a ``LabBase`` in its own module: ``LabMachine`` (``nlb_sdn.lab.machine``: lock,
Open vSwitch, cleanup, signals), ``LabNetwork`` (``nlb_sdn.lab.network``: the Mininet network and its hosts),
``LabController`` (``nlb_sdn.lab.controller``: the controller process, switch connections, REST) and ``LabServices``
(``nlb_sdn.lab.services``: backends, routers, agents, load clients). ``LabError``, ``RestError``, ``run`` and
``wait_for`` live in ``nlb_sdn.lab.commands`` and are importable from here as well.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import TracebackType

import yaml

from nlb_sdn.lab.base import PIDS_FILE
from nlb_sdn.lab.commands import LabError, RestError, run, wait_for
from nlb_sdn.lab.controller import LabController
from nlb_sdn.lab.machine import LabMachine
from nlb_sdn.lab.network import LabNetwork, require_mininet
from nlb_sdn.lab.services import LabServices
from nlb_sdn.store import state_path

__all__ = ["Lab", "LabError", "RestError", "run", "wait_for"]


class Lab(LabMachine, LabNetwork, LabController, LabServices):
    """A running lab: Mininet network, controller subprocess and backend servers, torn down completely on exit."""

    def __enter__(self) -> Lab:
        """Bring the lab up (tearing everything down again if any step fails)."""
        self._install_signal_handlers()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Tear everything down; re-raise a SIGINT/SIGTERM that arrived during teardown."""
        pending = self.close(raise_leftovers=exc is None)
        if pending is not None and exc is None:
            raise KeyboardInterrupt if pending == signal.SIGINT else SystemExit(128 + pending)

    def _start(self) -> None:
        """Every bring-up step, in order."""
        if os.geteuid() != 0:
            raise LabError("the Mininet lab needs root")
        require_mininet()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._ensure_ovs()
        self._clean_leftovers()
        ports = [self.ofp_port] + ([self.rest_port] if self.model.controller.rest.enabled else [])
        for port in ports:
            if self._listening_locally(port):
                raise LabError(f"something already listens on 127.0.0.1:{port}; is another controller running?")
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        # A new lab: its config file seeds the operator state afresh (a state file left by an earlier lab goes).
        Path(state_path(str(self.config_path), self.model.controller.state.path)).unlink(missing_ok=True)
        self.start_controller()
        self._start_net()
        self._start_backends()
        self._record()
        self.check_controller()

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
            self._stop_host_processes()
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
