"""The soak in one Mininet lab: mixed load through both dispatch modes while members churn, agents flap and the
controller restarts; memory sampled throughout; the connection table compared with the switch's flows at the end.

One SingleTopo switch (userspace OVS), clients ``c1..c3``, members ``h1..h3`` with a health agent each (both VIPs'
apps, TCP health checks) on the management network, and the spare member ``h4`` that churn adds and removes:

| VIP | address | dispatch | members |
|---|---|---|---|
| soak-ctl | 10.0.0.100:80 | controller | h1..h3 port 80, ``health: agent`` |
| soak-sw | 10.0.0.101:80 | switch (``learn`` pinning) | h1..h3 port 8080, ``health: agent`` |
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.soaklib.figures import Sample, compare_connections, nat_flow_keys
from nlb_sdn.lab.harness import Lab, LabError, wait_for
from topologies import SingleTopo, lab_config

MEMBERS = ("h1", "h2", "h3")
FLAP_HOSTS = ("h1", "h2")
"""Whose agent flaps: each of them twice in a row (stopped with a goodbye, then with SIGKILL); h3 is the drained one."""
SPARE = "h4"
VIPS = {
    "soak-ctl": {"address": "10.0.0.100", "port": 80, "member_port": 80, "dispatch": "controller"},
    "soak-sw": {
        "address": "10.0.0.101",
        "port": 80,
        "member_port": 8080,
        "dispatch": "switch",
        "switch_pinning": "learn",
    },
}
IDLE_TIMEOUT = 10
MGMT_CONTROLLER = "10.99.0.254"
OVS_PID_FILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")
STREAMS_SCRIPT = Path(__file__).with_name("streams.py")
STREAM_STALL_S = 10.0
SHORT_CHUNK_S = 30.0
SHORT_CONCURRENCY = 8
CLIENT_MARGIN_S = 40.0
SWITCH_WAIT_S = 60.0
FLAP_WAIT_S = 10.0
CHURN_STEPS = (
    (0.10, "add_spare"),
    (0.20, "weight_up"),
    (0.30, "drain"),
    (0.40, "flap_down"),
    (0.55, "flap_up"),
    (0.65, "undrain"),
    (0.70, "weight_back"),
    (0.80, "remove_spare"),
    (0.90, "restart"),
)
"""Each cycle's steps, at these fractions of the cycle; the last cycle skips the restart."""


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SoakSettings:
    """What one soak run does: load time, cycles, rates and stream sizes."""

    duration_s: float
    cycles: int
    short_rate: float
    streams_per_target: int
    stream_rate: int
    sample_s: float

    @property
    def cycle_s(self) -> float:
        """Seconds per churn cycle (each ends with a controller restart but the last)."""
        return self.duration_s / self.cycles


def settings_for(duration_s: float, short_rate: float, streams_per_target: int, stream_rate: int) -> SoakSettings:
    """Five cycles for a long soak, three for a short one (both restart signals); samples every 5 s (1 s short)."""
    cycles = 5 if duration_s >= 600 else 3
    return SoakSettings(
        duration_s, cycles, short_rate, streams_per_target, stream_rate, 5.0 if duration_s >= 300 else 1.0
    )


def soak_topo() -> SingleTopo:
    """Three clients, four members (h4 spare), the management network for the agents."""
    return SingleTopo(clients=3, backends=len(MEMBERS) + 1, mgmt=True)


def vip_entries(topo: SingleTopo) -> list[dict[str, Any]]:
    """The two VIPs over h1..h3, every member health-checked by its host's agent."""
    entries = []
    for name, vip in VIPS.items():
        members = [dict(m, health="agent") for m in topo.members(int(vip["member_port"]), list(MEMBERS))]
        entry = {k: v for k, v in vip.items() if k != "member_port"}
        entries.append({"name": name, **entry, "idle_timeout": IDLE_TIMEOUT, "members": members})
    return entries


def agent_config(topo: SingleTopo, host: str, hl_port: int, key_file: Path) -> dict[str, Any]:
    """An agent with one app per VIP (its member port), TCP health checks, static load."""
    apps = [
        {
            "vip": vip["address"],
            "vport": vip["port"],
            "pip": topo.host_ip(host),
            "pport": vip["member_port"],
            "capacity": 100,
            "health": {"type": "tcp", "interval": 0.5, "timeout": 0.4, "rise": 1, "fall": 2},
            "load": {"type": "static", "value": 0},
        }
        for vip in VIPS.values()
    ]
    return {
        "host_id": host,
        "key_file": str(key_file),
        "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
        "listen": f"{topo.mgmt_ip(host)}:9101",
        "hb_period": 1.0,
        "apps": apps,
    }


def rss_kb(pid: int | None) -> int | None:
    """``VmRSS`` of a process in kB, None when it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class SoakState:
    """What the run records while it goes: samples, churn events, restarts, flaps, short-connection summaries."""

    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    flaps: list[dict[str, Any]] = field(default_factory=list)
    short: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.started


class SoakRun:
    """One soak: the lab, the settings, and the threads and steps that drive it."""

    def __init__(self, lab: Lab, settings: SoakSettings, hl_port: int, key_file: Path) -> None:
        """Drive ``lab`` as ``settings`` say; agents talk to the H&L port with ``key_file``."""
        self.lab = lab
        self.settings = settings
        self.hl_port = hl_port
        self.key_file = key_file
        self.state = SoakState()
        self.flap_index = 0

    # --- load -------------------------------------------------------------------------------------------------

    def host_key(self, host: str) -> Path:
        """``host``'s own H&L key, derived from the master ``key_file`` (controller.health.key_mode derived)."""
        return Path(self.lab.host_key_file(host, self.key_file))

    def sample_memory(self) -> None:
        """Sample the controller's and ovs-vswitchd's RSS every ``sample_s`` until the load stops."""
        ovs_pid = int(OVS_PID_FILE.read_text().strip())
        while not self.state.stop.is_set():
            proc = self.lab.controller_proc
            pid = proc.pid if proc is not None and proc.poll() is None else None
            self.state.samples.append(
                Sample(round(self.state.now(), 2), {"controller": rss_kb(pid), "ovs-vswitchd": rss_kb(ovs_pid)})
            )
            self.state.stop.wait(self.settings.sample_s)

    def short_load(self) -> None:
        """New short connections from every client to both VIPs, in bounded chunks, until the load ends."""
        while (remaining := self.settings.duration_s - self.state.now()) > 1.0:
            chunk = min(SHORT_CHUNK_S, remaining)
            count = max(1, int(self.settings.short_rate * chunk))
            procs = [
                self.lab.start_client(
                    client,
                    [
                        "connections",
                        vip["address"],
                        "--port",
                        vip["port"],
                        "--count",
                        count,
                        "--rate",
                        self.settings.short_rate,
                        "--concurrency",
                        SHORT_CONCURRENCY,
                        "--timeout",
                        chunk + 5.0,
                    ],
                )
                for client in self.lab.topo.clients
                for vip in VIPS.values()
            ]
            for proc in procs:
                try:
                    self.state.short.append(self.lab.collect_client(proc, chunk + CLIENT_MARGIN_S))
                except LabError as exc:
                    self.state.short.append(
                        {"ok": 0, "errors": count, "error_kinds": {"client": count}, "note": str(exc)}
                    )

    def start_streams(self) -> list[tuple[str, Any]]:
        """The long-lived streams: from every client, ``streams_per_target`` to each VIP, for the whole load."""
        size = int(self.settings.stream_rate * self.settings.duration_s)
        procs = []
        for client in self.lab.topo.clients:
            cmd = [sys.executable, str(STREAMS_SCRIPT), "--count", str(self.settings.streams_per_target)]
            cmd += ["--bytes", str(size), "--rate", str(self.settings.stream_rate), "--stall", str(STREAM_STALL_S)]
            cmd += ["--timeout", str(self.settings.duration_s + 60.0)]
            for vip in VIPS.values():
                cmd += ["--target", f"{vip['address']}:{vip['port']}"]
            procs.append((client, self.lab.start_process(client, cmd, f"streams-{client}.json")))
        return procs

    def collect_streams(self, procs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Wait for every streams process (bounded) and return every stream's outcome."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 90.0
        for client, proc in procs:
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"  streams of {client} still running, stopped")
            self.lab.stop_process(proc)
            lines = (self.lab.workdir / f"streams-{client}.json").read_text().strip().splitlines()
            streams = json.loads(lines[-1])["streams"] if lines else []
            found += [dict(s, client=client) for s in streams]
        expected = len(procs) * len(VIPS) * self.settings.streams_per_target
        found += [{"outcome": "no report"}] * max(0, expected - len(found))
        return found

    # --- churn ------------------------------------------------------------------------------------------------

    def churn(self, step: str, cycle: int) -> None:
        """One churn step on both VIPs; REST failures are recorded, not raised."""
        started = self.state.now()
        event: dict[str, Any] = {"at": round(started, 1), "cycle": cycle, "step": step}
        try:
            if step == "restart":
                self.restart(cycle)
            elif step in ("flap_down", "flap_up"):
                self.flap(step == "flap_down")
            else:
                for name, vip in VIPS.items():
                    self.rest_change(step, name, int(vip["member_port"]))
            event["ok"] = True
        except (OSError, LabError, TimeoutError) as exc:
            event.update(ok=False, error=str(exc)[:300])
        event["took_s"] = round(self.state.now() - started, 2)
        self.state.events.append(event)
        log(f"  {event}")

    def rest_change(self, step: str, vip: str, member_port: int) -> None:
        """One REST change of one VIP's membership, weight or state."""
        base = f"/v1/vips/{vip}/members"
        calls = {
            "add_spare": ("POST", base, {"name": SPARE, "address": self.lab.topo.host_ip(SPARE), "port": member_port}),
            "remove_spare": ("DELETE", f"{base}/{SPARE}", None),
            "weight_up": ("PUT", f"{base}/h2", {"weight": 3}),
            "weight_back": ("PUT", f"{base}/h2", {"weight": 1}),
            "drain": ("PUT", f"{base}/h3/state", {"state": "draining"}),
            "undrain": ("PUT", f"{base}/h3/state", {"state": "active"}),
        }
        method, path, body = calls[step]
        self.lab.rest(method, path, body)

    def allotted(self, host: str) -> bool:
        """Whether ``host`` has a share of the controller-dispatched VIP's allotment."""
        return bool(self.lab.rest("GET", "/v1/vips/soak-ctl/allotment")["values"].get(host, 0) > 0)

    def flap(self, down: bool) -> None:
        """Stop (alternately with a goodbye and with SIGKILL) or restart the agent of one of ``FLAP_HOSTS``."""
        host = FLAP_HOSTS[(self.flap_index // 2) % len(FLAP_HOSTS)]
        started = time.monotonic()
        if down:
            graceful = self.flap_index % 2 == 0
            self.lab.stop_agent(host, graceful=graceful)
            left = self.wait_allotted(host, False)
            self.state.flaps.append(
                {
                    "host": host,
                    "stop": "SIGTERM" if graceful else "SIGKILL",
                    "left_allotment_s": left,
                    "at": self.state.now(),
                }
            )
        else:
            self.lab.start_agent(host, agent_config(self.lab.topo, host, self.hl_port, self.host_key(host)))
            self.state.flaps[-1]["back_in_allotment_s"] = self.wait_allotted(host, True)
            self.flap_index += 1
        log(f"  flap {host} {'down' if down else 'up'} after {time.monotonic() - started:.1f} s")

    def wait_allotted(self, host: str, wanted: bool) -> float | None:
        """Seconds until ``host`` is (or is no longer) allotted, None when that did not happen within FLAP_WAIT_S."""
        started = time.monotonic()
        try:
            wait_for(lambda: self.allotted(host) == wanted, FLAP_WAIT_S, 0.1, f"{host} allotted={wanted}")
        except TimeoutError:
            return None
        return round(time.monotonic() - started, 2)

    def restart(self, cycle: int) -> None:
        """Restart the controller: SIGTERM in odd cycles, SIGKILL in even ones; time until the switch is back."""
        proc = self.lab.controller_proc
        assert proc is not None
        signum = signal.SIGTERM if cycle % 2 == 1 else signal.SIGKILL
        started = time.monotonic()
        os.killpg(proc.pid, signum)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            self.lab.stop_controller()
        stopped = time.monotonic()
        self.lab.start_controller()
        self.lab.wait_switches_connected(SWITCH_WAIT_S)
        back = time.monotonic()
        self.state.restarts.append(
            {
                "cycle": cycle,
                "signal": signal.Signals(signum).name,
                "exit": proc.returncode,
                "at": round(self.state.now(), 1),
                "stop_s": round(stopped - started, 2),
                "back_s": round(back - started, 2),
            }
        )

    def schedule(self) -> None:
        """Every cycle's churn steps at their times, in the main thread, until the load ends."""
        for cycle in range(1, self.settings.cycles + 1):
            for fraction, step in CHURN_STEPS:
                if step == "restart" and cycle == self.settings.cycles:
                    continue
                at = (cycle - 1 + fraction) * self.settings.cycle_s
                time.sleep(max(0.0, at - self.state.now()))
                self.churn(step, cycle)
        time.sleep(max(0.0, self.settings.duration_s - self.state.now()))

    # --- end --------------------------------------------------------------------------------------------------

    def comparison(self) -> dict[str, Any]:
        """The connection table against the switch's per-connection entries, now."""
        tracked = self.lab.rest("GET", "/v1/connections", timeout=30.0)["connections"]
        forward, reverse = nat_flow_keys(self.lab.dump_flows("s1"), {str(v["address"]) for v in VIPS.values()})
        return compare_connections(tracked, forward, reverse)

    def settle(self) -> tuple[dict[str, Any], dict[str, Any], float | None]:
        """Poll (bounded) until the idle timeouts emptied both the table and the flows; (first, last, seconds)."""
        started = time.monotonic()
        bound = IDLE_TIMEOUT * 3 + 30.0
        first = last = self.comparison()
        while not (last["equal"] and last["tracked"] == 0 and last["reverse_entries"] == 0):
            if time.monotonic() - started > bound:
                return first, last, None
            time.sleep(1.0)
            last = self.comparison()
        return first, last, round(time.monotonic() - started, 1)


def run_soak(settings: SoakSettings, workdir: Path, ofp_port: int, rest_port: int, hl_port: int) -> dict[str, Any]:
    """Bring the lab up, run the load with churn, flaps and restarts, settle, and return the raw findings."""
    key_file = workdir / "hl.key"
    workdir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(secrets.token_hex(32))
    topo = soak_topo()
    health = {"enabled": True, "listen_host": "0.0.0.0", "listen_port": hl_port, "key_file": str(key_file)}
    config = lab_config(topo, vip_entries(topo), health=health)
    ports = sorted({int(v["member_port"]) for v in VIPS.values()})
    lab = Lab(
        topo, config, workdir=str(workdir), ofp_port=ofp_port, rest_port=rest_port, backend_ports=ports, static_arp=True
    )
    with lab:
        lab.wait_switches_connected()
        run = SoakRun(lab, settings, hl_port, key_file)
        for host in MEMBERS:
            lab.start_agent(host, agent_config(topo, host, hl_port, run.host_key(host)))
        wait_for(lambda: all(run.allotted(h) for h in MEMBERS), 30.0, 0.2, "every member allotted")
        run.state = SoakState()
        streams = run.start_streams()
        threads = [threading.Thread(target=run.sample_memory, daemon=True), threading.Thread(target=run.short_load)]
        for thread in threads:
            thread.start()
        try:
            run.schedule()
        finally:
            load_s = run.state.now()
            threads[1].join(SHORT_CHUNK_S + CLIENT_MARGIN_S + 10.0)
            stream_results = run.collect_streams(streams)
            run.state.stop.set()
            threads[0].join(10.0)
        first, last, settle_s = run.settle()
        stats = lab.rest("GET", "/v1/stats")
    return {
        "load_s": round(load_s, 1),
        "state": run.state,
        "streams": stream_results,
        "comparison_at_load_end": first,
        "final_comparison": last,
        "settle_s": settle_s,
        "stats_at_end": stats,
    }
