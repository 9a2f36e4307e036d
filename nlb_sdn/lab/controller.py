"""The lab's controller: its subprocess in the root namespace, the switches' connections to it, its REST API."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from typing import Any

from nlb_sdn.lab.base import LabBase
from nlb_sdn.lab.commands import LabError, RestError, run, tail, terminate, wait_for


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


class LabController(LabBase):
    """The controller subprocess of the lab, the wait for its switches and calls to its REST API."""

    def start_controller(self) -> None:
        """Start the controller subprocess (own process group, output to ``controller.log``)."""
        self._require_running()
        if self.controller_proc is not None and self.controller_proc.poll() is None:
            raise LabError("the controller is already running")
        with open(self.controller_log, "ab") as log:
            self.controller_proc = subprocess.Popen(
                self.controller_cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(os.environ, NLB_SDN_CONFIG=str(self.config_path)),
            )
        self._record()

    def stop_controller(self) -> None:
        """Stop the controller subprocess by PID (SIGTERM, then SIGKILL)."""
        if self.controller_proc is not None:
            terminate(self.controller_proc)

    def check_controller(self) -> None:
        """Raise LabError with the log tail if the controller process has exited."""
        if self.controller_proc is None or self.controller_proc.poll() is not None:
            code = None if self.controller_proc is None else self.controller_proc.returncode
            raise LabError(f"controller not running (exit {code}); {self.controller_log}:\n{tail(self.controller_log)}")

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
        return any(
            run(["ovs-vsctl", "--timeout=5", "get", "Controller", u, "is_connected"]).stdout.strip() == "true"
            for u in uuids
        )

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        """Call the controller REST API on 127.0.0.1 with a JSON body; return the decoded JSON (None if empty).

        Raises RestError (``status``, ``body``) for HTTP error statuses, OSError when nothing answers.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
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
