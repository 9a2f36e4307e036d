"""What runs on the lab's hosts: backend servers, routers, health agents and load clients, each started in its
host's namespace, waited for until it serves, and stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nlb_sdn.lab.base import LabBase
from nlb_sdn.lab.commands import STOP_TIMEOUT, LabError, command_line, run, tail, terminate, wait_for
from nlb_sdn.signed import derive_host_key, load_key


class LabServices(LabBase):
    """Backends, routers, agents and load clients on the lab's hosts."""

    def _ports_of(self, backend: str) -> list[int]:
        """The ports backend ``backend`` serves: ``backend_ports``, else its members' ports, else 80."""
        if self.backend_ports is not None:
            return list(self.backend_ports)
        address = self.topo.host_ip(backend)
        ports = sorted({m.port for v in self.model.vips for m in v.members if m.address == address})
        return ports or [80]

    def _start_backends(self) -> None:
        """Start a backend server on every backend host, on each port it serves."""
        for name in self.topo.backends:
            for port in self._ports_of(name):
                self.start_backend(name, port)

    def _stop_host_processes(self) -> None:
        """Stop by PID every client, backend, agent and other process the lab started on its hosts."""
        for proc in self.client_procs:
            terminate(proc)
        for key in list(self.backend_procs):
            terminate(self.backend_procs.pop(key))
        for name in list(self.agent_procs):
            terminate(self.agent_procs.pop(name))
        while self.host_procs:
            terminate(self.host_procs.pop())

    def start_backend(
        self, name: str, port: int = 80, timeout: float = 15.0, handoff_socket: str | None = None
    ) -> None:
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
            dual_stack = ["--bind", "::"] if self.topo.ipv6 else []
            proc = node.popen(
                [
                    sys.executable,
                    "-m",
                    "nlb_sdn.lab.backend",
                    "--name",
                    name,
                    "--port",
                    str(port),
                    *handoff,
                    *dual_stack,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.backend_procs[(name, port)] = proc
        self._record()

        def listening() -> bool:
            """One poll of the listening socket (failing fast if the server died)."""
            if proc.poll() is not None:
                raise LabError(f"backend {name}:{port} exited with {proc.returncode}:\n{tail(log_path)}")
            return bool(self.host_run(name, ["ss", "-ltnH", f"sport = :{port}"], timeout=5.0).stdout.strip())

        wait_for(listening, timeout, 0.05, f"backend {name} listening on port {port}")

    def stop_backend(self, name: str, port: int = 80) -> None:
        """Stop the backend server of ``name`` on ``port`` by PID."""
        proc = self.backend_procs.pop((name, port), None)
        if proc is None:
            raise LabError(f"no backend {name}:{port} was started")
        terminate(proc)

    def handoff_socket(self, name: str) -> str:
        """The Unix socket on which host ``name``'s backend takes migrated connections from its agent."""
        return str(self.workdir / f"handoff-{name}.sock")

    def start_router(
        self, name: str, args: Sequence[str] = (), status_port: int = 9180, timeout: float = 15.0
    ) -> subprocess.Popen[bytes]:
        """Start ``nlb-sdn-router run`` on router host ``name`` with the lab's config and ``args``.

        Waits until its status port (``127.0.0.1:status_port`` in the router's namespace) listens; the router is
        stopped by PID at teardown, or earlier with ``stop_process``.
        """
        self._require_running()
        if name not in self.topo.routers:
            raise LabError(f"{name!r} is not a router of this topology ({', '.join(self.topo.routers) or 'none'})")
        log_name = f"router-{name}.log"
        proc = self.start_process(
            name,
            [
                sys.executable,
                "-m",
                "nlb_sdn.router.cli",
                "run",
                "--config",
                str(self.config_path),
                "--status",
                f"127.0.0.1:{status_port}",
                *args,
            ],
            log_name,
        )

        def listening() -> bool:
            """One poll of the status port (failing fast if the router died)."""
            if proc.poll() is not None:
                raise LabError(f"router {name} exited with {proc.returncode}:\n{tail(self.workdir / log_name)}")
            return bool(self.host_run(name, ["ss", "-ltnH", f"sport = :{status_port}"], timeout=5.0).stdout.strip())

        wait_for(listening, timeout, 0.05, f"router {name} status port {status_port}")
        return proc

    def host_key_file(self, name: str, master_file: str | Path) -> str:
        """Host ``name``'s own H&L and migration key, derived from the deployment's master key file (what
        ``nlb-sdn derive-key`` writes), in the workdir with mode 0600; its path, for the agent's ``key_file``."""
        path = self.workdir / f"key-{name}"
        path.touch(mode=0o600)
        path.write_bytes(derive_host_key(load_key(master_file), name) + b"\n")
        return str(path)

    def agent_config_path(self, name: str) -> Path:
        """Where the agent config of host ``name`` is written."""
        return self.workdir / f"agent-{name}.yaml"

    def agent_socket(self, name: str) -> str:
        """The control socket of host ``name``'s agent (in the workdir, since hosts share the file system)."""
        return str(self.workdir / f"agent-{name}.sock")

    def start_agent(
        self, name: str, config: dict[str, Any], timeout: float = 15.0, extra_args: Sequence[str] = ()
    ) -> None:
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
            proc = self.host(name).popen(
                [sys.executable, "-m", "nlb_sdn.agent.cli", "run", "--config", str(path), *extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.agent_procs[name] = proc
        self._record()

        def answering() -> bool:
            """One poll of the agent's control socket (failing fast if the agent died)."""
            if proc.poll() is not None:
                raise LabError(f"agent {name} exited with {proc.returncode}:\n{tail(log_path)}")
            return self.agent_cli(name, ["table", "--json"]).returncode == 0

        wait_for(answering, timeout, 0.1, f"agent {name} answering")

    def stop_agent(self, name: str, graceful: bool = True) -> None:
        """Stop host ``name``'s agent by PID: SIGTERM (it says goodbye) or SIGKILL (it just goes silent)."""
        proc = self.agent_procs.pop(name, None)
        if proc is None:
            raise LabError(f"no agent was started on {name}")
        if graceful:
            terminate(proc)
        else:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def agent_cli(self, name: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run ``nlb-sdn-agent ARGS --socket <its socket>`` (table, set-target, set-load) from the root namespace."""
        return run([sys.executable, "-m", "nlb_sdn.agent.cli", *args, "--socket", self.agent_socket(name)])

    def start_client(self, name: str, args: Sequence[Any]) -> subprocess.Popen[bytes]:
        """Start ``nlb-sdn-client`` with ``args`` in host ``name`` without waiting (see ``collect_client``)."""
        proc = self.host(name).popen(
            [sys.executable, "-m", "nlb_sdn.lab.client", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.client_procs.append(proc)
        self._record()
        return proc

    def collect_client(self, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a started client and return its JSON summary plus ``returncode``; kill it after ``timeout`` s."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate(proc)
            raise LabError(f"client {command_line(proc)} still running after {timeout:g}s") from None
        finally:
            if proc in self.client_procs and proc.poll() is not None:
                self.client_procs.remove(proc)
        lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
        try:
            summary = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise LabError(
                f"client exit {proc.returncode} without a JSON summary: {err.decode(errors='replace').strip()[-2000:]}"
            ) from None
        summary["returncode"] = proc.returncode
        return summary

    def run_client(self, name: str, args: Sequence[Any], timeout: float = 120.0) -> dict[str, Any]:
        """Run ``nlb-sdn-client`` with ``args`` in host ``name`` and return its JSON summary plus ``returncode``."""
        return self.collect_client(self.start_client(name, args), timeout)
