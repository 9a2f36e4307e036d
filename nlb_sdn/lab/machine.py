"""The lab's footprint on the machine: the lab lock, Open vSwitch, what carries the lab's names (bridges, links,
recorded processes) before bring-up and after teardown, and SIGINT/SIGTERM turned into a clean teardown."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import threading
from types import FrameType

from nlb_sdn.lab.base import PIDS_FILE, STATE_DIR, LabBase
from nlb_sdn.lab.commands import command_line, run, start_time, wait_for

LOCK_FILE = STATE_DIR / "lab.lock"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class LabMachine(LabBase):
    """Lock, Open vSwitch, cleanup of our bridges, links and processes, and signal handling for the lab."""

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
            if isinstance(pid, int) and pid > 1 and started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        PIDS_FILE.unlink(missing_ok=True)
        self._clean_ours()

    def leftovers(self) -> list[str]:
        """Anything of ours still present: live processes, OVS bridges, root-namespace interfaces."""
        found = [f"pid {p.pid} ({command_line(p)[:60]})" for p in self._all_procs() if p.poll() is None]
        bridges = set(run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split())
        found += [f"bridge {b}" for b in self.topo.switches() if b in bridges]
        found += [f"interface {name}" for name in self._our_link_names()]
        return found

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
