"""Benchmark: pinning switch-dispatched connections with OVS ``learn`` (what ``dispatch: switch`` does) vs conntrack.

Run as root from the repository root, under the Mininet lock::

    flock /tmp/nlb-mininet.lock .venv/bin/python benchmarks/pinning.py [--quick] [--out benchmarks/results/pinning.json]

One Mininet lab (SingleTopo: one userspace OVS switch ``s1``, OpenFlow 1.3, ``fail_mode=secure``, no controller;
clients c1..c3, backends h1..h3 running ``nlb-sdn-backend`` on port 80). Every flow is installed with
``ovs-ofctl -O OpenFlow13``. Variants, measured in the same run, interleaved, ``--repeats`` times:

- ``direct``: client cN connects to backend hN's own address; plain MAC forwarding flows.
- ``learn``: exactly the tables nlb_sdn installs for a ``dispatch: switch`` VIP (built by
  ``LoadBalancer(config).switch_flows(1)`` and translated message by message to ovs-ofctl syntax below).
- ``conntrack``: the same job with ``ct``: the member is chosen by the same 64-bucket select group, pinned in
  ``ct_mark`` and NATed by ``ct(commit, nat(dst=...))``; no per-connection OpenFlow entry (see ``ct_flows``).

Figures per variant and repetition: new connections/s (all clients in parallel), connect p50/p99, one 200 MB
download, ovs-vswitchd CPU during the loaded run, datapath flows after it (and a few OVS coverage counters). Once per
VIP variant: whether established downloads survive a group change (member h1 drained mid-download), and whether the
shares follow the group (40/35/25, then 0/50/50). JSON report in ``--out``; Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininet.net import Mininet  # noqa: E402

from nlb_sdn.config import parse_config  # noqa: E402
from nlb_sdn.core.balancer import LoadBalancer  # noqa: E402
from nlb_sdn.flows import dispatch  # noqa: E402
from nlb_sdn.health.allotment import largest_remainder  # noqa: E402
from topologies import SingleTopo, lab_config  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "pinning.json"
VENV_BIN = Path(sys.executable).parent
CLIENT = str(VENV_BIN / "nlb-sdn-client")
BACKEND = str(VENV_BIN / "nlb-sdn-backend")
DOWNLOADS = str(REPO / "benchmarks" / "suite" / "downloads.py")
SWITCH = "s1"
VIP = "10.0.0.100"
VIP_PORT = 80
VIP_MAC = "02:4e:0a:00:00:64"
MEMBER_PORT = 80
WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
DRAINED = {"h1": 0, "h2": 50, "h3": 50}
IDLE_TIMEOUT = 15
CT_ZONE = 1
CT_TABLE_FWD = 10
CT_TABLE_REPLY = 11
CT_TABLE_SELECT = 12
VARIANTS = ("direct", "learn", "conntrack")
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]
COVERAGE = (
    "rev_flow_table",
    "upcall_ukey_replace",
    "xlate_actions",
    "dpif_flow_put",
    "dpif_execute",
    "revalidate_missed_dp_flow",
    "upcall_flow_limit_hit",
    "handler_duplicate_upcall",
    "ofproto_flush",
    "conntrack_full",
)
NXM = {
    "eth_type_nxm": "NXM_OF_ETH_TYPE",
    "ip_proto_nxm": "NXM_OF_IP_PROTO",
    "ipv4_src_nxm": "NXM_OF_IP_SRC",
    "ipv4_dst_nxm": "NXM_OF_IP_DST",
    "tcp_src_nxm": "NXM_OF_TCP_SRC",
    "tcp_dst_nxm": "NXM_OF_TCP_DST",
    "eth_src_nxm": "NXM_OF_ETH_SRC",
    "eth_dst_nxm": "NXM_OF_ETH_DST",
}
OFPP_CONTROLLER = 0xFFFFFFFD
OFCTL_FIELD = {"ipv4_src": "ip_src", "ipv4_dst": "ip_dst"}
"""os-ken OXM names that ovs-ofctl spells differently."""


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = 30.0, stdin: str | None = None) -> str:
    """Run a root-namespace command, bounded; raise with its stderr on failure."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: rc={proc.returncode}: {proc.stderr.strip()[:2000]}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# Flows
# ---------------------------------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """An OXM value (or (value, mask)) in ovs-ofctl syntax."""
    if isinstance(value, tuple):
        return f"{value[0]:#x}/{value[1]:#x}"
    return f"{value:#x}" if isinstance(value, int) else str(value)


def _match(match: Any) -> str:
    return ",".join(f"{OFCTL_FIELD.get(name, name)}={_value(value)}" for name, value in match._fields2)


def _learn_spec(spec: Any) -> str:
    """One NXFlowSpec in ovs-ofctl learn syntax (every spec nlb_sdn builds covers whole fields at offset 0)."""
    dst_name, dst_ofs = spec.dst
    assert dst_ofs == 0 and (not isinstance(spec.src, tuple) or spec.src[1] == 0)
    dst = NXM[dst_name]
    if type(spec).__name__ == "NXFlowSpecMatch":
        if isinstance(spec.src, tuple):
            src = NXM[spec.src[0]]
            return f"{dst}[]" if src == dst else f"{dst}[]={src}[]"
        if dst in ("NXM_OF_IP_SRC", "NXM_OF_IP_DST"):  # immediates are parsed in the field's own format
            return f"{dst}[]={ipaddress.IPv4Address(spec.src)}"
        assert dst not in ("NXM_OF_ETH_SRC", "NXM_OF_ETH_DST")
        return f"{dst}[]={spec.src:#x}"
    if type(spec).__name__ == "NXFlowSpecLoad":
        src = f"{NXM[spec.src[0]]}[]" if isinstance(spec.src, tuple) else f"{spec.src:#x}"
        return f"load:{src}->{dst}[]"
    raise ValueError(f"unsupported learn spec {spec!r}")


def _action(action: Any) -> str:
    name = type(action).__name__
    if name == "OFPActionOutput":
        return f"CONTROLLER:{action.max_len}" if action.port == OFPP_CONTROLLER else f"output:{action.port}"
    if name == "OFPActionSetField":
        return f"set_field:{_value(action.value)}->{OFCTL_FIELD.get(action.key, action.key)}"
    if name == "OFPActionGroup":
        return f"group:{action.group_id}"
    if name == "NXActionResubmitTable":
        return f"resubmit(,{action.table_id})"
    if name == "NXActionLearn":
        head = [
            f"table={action.table_id}",
            f"idle_timeout={action.idle_timeout}",
            f"hard_timeout={action.hard_timeout}",
            f"priority={action.priority}",
            f"cookie={action.cookie:#x}",
        ]
        if action.flags & dispatch.NX_LEARN_F_SEND_FLOW_REM:
            head.append("send_flow_rem")
        assert action.flags & ~dispatch.NX_LEARN_F_SEND_FLOW_REM == 0
        return "learn(" + ",".join(head + [_learn_spec(s) for s in action.specs]) + ")"
    raise ValueError(f"unsupported action {action!r}")


def _instructions(instructions: list[Any]) -> str:
    parts: list[str] = []
    for inst in instructions:
        if type(inst).__name__ == "OFPInstructionActions":
            parts += [_action(a) for a in inst.actions]
        elif type(inst).__name__ == "OFPInstructionGotoTable":
            parts.append(f"goto_table:{inst.table_id}")
        else:
            raise ValueError(f"unsupported instruction {inst!r}")
    return ",".join(parts) or "drop"


def ofctl_flow(mod: Any) -> str:
    """An os-ken OFPFlowMod (add) in ovs-ofctl add-flows syntax."""
    assert mod.command == 0 and mod.flags == 0
    fields = [f"table={mod.table_id}", f"priority={mod.priority}", f"cookie={mod.cookie:#x}"]
    if mod.idle_timeout:
        fields.append(f"idle_timeout={mod.idle_timeout}")
    if mod.hard_timeout:
        fields.append(f"hard_timeout={mod.hard_timeout}")
    match = _match(mod.match)
    return ",".join(fields + ([match] if match else [])) + f" actions={_instructions(mod.instructions)}"


def ofctl_group(mod: Any) -> str:
    """An os-ken OFPGroupMod (add, select) in ovs-ofctl add-groups syntax."""
    assert mod.type == 1
    buckets = [f"bucket=weight:{b.weight},actions={','.join(_action(a) for a in b.actions)}" for b in mod.buckets]
    return f"group_id={mod.group_id},type=select," + ",".join(buckets)


def lab_vip_config(topo: SingleTopo) -> dict[str, Any]:
    """The config of one ``dispatch: switch`` VIP over h1..h3 (port 80) with WEIGHTS."""
    members = topo.members(MEMBER_PORT)
    for member in members:
        member["weight"] = WEIGHTS[member["name"]]
    vips = [
        {
            "name": "web",
            "address": VIP,
            "port": VIP_PORT,
            "mac": VIP_MAC,
            "dispatch": "switch",
            "idle_timeout": IDLE_TIMEOUT,
            "members": members,
        }
    ]
    return lab_config(topo, vips)


class Flows:
    """Flow and group text of every variant, derived from nlb_sdn's own builders where they exist."""

    def __init__(self, topo: SingleTopo) -> None:
        self.topo = topo
        lb = LoadBalancer(parse_config(lab_vip_config(topo), "<pinning>"))
        state = next(iter(lb.ctx.vips))
        self.vip_id = state.vip_id
        self.endpoints = {m.name: m.endpoint_id for m in state.vip.members}
        self.ports = {name: topo._attach[name][1] for name in topo.data_hosts()}
        msgs = lb.switch_flows(1)
        self.learn_flows = [ofctl_flow(m) for m in msgs if type(m).__name__ == "OFPFlowMod"]
        self.learn_group_template = next(m for m in msgs if type(m).__name__ == "OFPGroupMod" and m.command == 0)
        vip_mac_seen = any(
            VIP_MAC.replace(":", "") in f"{int(x.split('->')[0].split(':')[-1], 16):012x}"
            for f in self.learn_flows
            for x in re.findall(r"load:0x[0-9a-f]+->NXM_OF_ETH_SRC", f)
        )
        if not vip_mac_seen:
            raise RuntimeError("the learned reverse entry does not set the VIP MAC; check the config")

    def slots(self, weights: dict[str, int]) -> list[int]:
        """64 equal buckets, each naming a member's endpoint id, as nlb_sdn's LoadBalancer._slots does."""
        counts = largest_remainder({n: float(w) for n, w in weights.items()}, dispatch.SLOTS)
        return [self.endpoints[name] for name in sorted(counts) for _ in range(counts[name])]

    def learn_group(self, weights: dict[str, int]) -> str:
        """The select group of the learn variant, as ovs-ofctl text."""
        add = dispatch.group_mod(0, self.vip_id, self.slots(weights))
        return ofctl_group(add)

    def direct_flows(self) -> list[str]:
        """Plain MAC forwarding (no load balancer)."""
        return [
            f"table=0,priority=10,eth_dst={self.topo.host_mac(h)} actions=output:{p}" for h, p in self.ports.items()
        ] + ["table=0,priority=0 actions=drop"]

    def member(self, name: str) -> tuple[str, str, int]:
        """A member's (IP, MAC, endpoint id)."""
        return self.topo.host_ip(name), self.topo.host_mac(name), self.endpoints[name]

    def ct_flows(self) -> list[str]:
        """The conntrack pipeline: the member's endpoint id in ct_mark, NAT by ct, no per-connection entry."""
        z, fwd, rep = CT_ZONE, CT_TABLE_FWD, CT_TABLE_REPLY
        flows = [
            # client -> VIP service: through conntrack (NAT of known connections applied), on to table fwd
            f"table=0,priority=200,tcp,nw_dst={VIP},tp_dst={VIP_PORT} actions=ct(zone={z},nat,table={fwd})",
            f"table=0,priority=150,ip,nw_dst={VIP} actions=drop",
        ]
        for name in WEIGHTS:
            ip, _mac, _ep = self.member(name)
            # member -> anyone from the member port: un-NAT replies of VIP connections (others pass unchanged)
            flows.append(
                f"table=0,priority=190,tcp,nw_src={ip},tp_src={MEMBER_PORT} actions=ct(zone={z},nat,table={rep})"
            )
        flows += ["table=0,priority=10,ip actions=goto_table:3", "table=0,priority=0 actions=drop"]
        for name in WEIGHTS:
            _ip, mac, ep = self.member(name)
            # a committed connection (established, or a retransmitted SYN): its member is in ct_mark
            flows.append(
                f"table={fwd},priority=200,ct_state=+trk,ct_mark={ep:#x},tcp "
                f"actions=set_field:{mac}->eth_dst,resubmit(,3)"
            )
        flows += [
            # a new connection's SYN: the select group picks the member and commits
            f"table={fwd},priority=100,ct_state=+trk+new,tcp,tcp_flags=+syn-ack actions=group:{self.vip_id}",
            f"table={fwd},priority=0 actions=drop",
            # reply direction of a committed connection: ct already rewrote the source to VIP:port
            f"table={rep},priority=200,ct_state=+trk+rpl,tcp actions=set_field:{VIP_MAC}->eth_src,resubmit(,3)",
            f"table={rep},priority=0 actions=resubmit(,3)",
        ]
        flows += [
            f"table=3,priority=10,eth_dst={self.topo.host_mac(h)} actions=output:{p}" for h, p in self.ports.items()
        ]
        flows.append("table=3,priority=0 actions=drop")
        for name in WEIGHTS:
            ip, mac, ep = self.member(name)
            # the bucket chose this member: commit with its NAT and its endpoint id in ct_mark, rewrite, forward
            flows.append(
                f"table={CT_TABLE_SELECT},priority=200,reg0={ep:#x},tcp "
                f"actions=ct(commit,zone={z},nat(dst={ip}:{MEMBER_PORT}),exec(set_field:{ep:#x}->ct_mark)),"
                f"set_field:{mac}->eth_dst,resubmit(,3)"
            )
        flows.append(f"table={CT_TABLE_SELECT},priority=0 actions=drop")
        return flows

    def ct_group(self, weights: dict[str, int]) -> str:
        """64 equal buckets naming members as the learn variant's do: load the endpoint id, resubmit to the select
        table. (OVS runs a bucket's actions as an OpenFlow action *set*, which has no place for ``ct``: a ct action
        written in the bucket itself is silently dropped, so the commit lives in table CT_TABLE_SELECT.)"""
        buckets = [
            f"bucket=weight:1,actions=set_field:{ep:#x}->reg0,resubmit(,{CT_TABLE_SELECT})"
            for ep in self.slots(weights)
        ]
        return f"group_id={self.vip_id},type=select," + ",".join(buckets)

    def variant(self, name: str, weights: dict[str, int]) -> tuple[list[str], list[str]]:
        """(flows, groups) of a variant."""
        if name == "direct":
            return self.direct_flows(), []
        if name == "learn":
            return self.learn_flows, [self.learn_group(weights)]
        if name == "conntrack":
            return self.ct_flows(), [self.ct_group(weights)]
        raise ValueError(name)


def install(flows: list[str], groups: list[str]) -> None:
    """Replace everything on s1: flows, groups, conntrack entries and datapath flows."""
    run([*OFCTL, "del-flows", SWITCH])
    run([*OFCTL, "del-groups", SWITCH])
    run(["ovs-appctl", "dpctl/flush-conntrack"])
    run(["ovs-appctl", "dpctl/del-flows"])
    with tempfile.NamedTemporaryFile("w", suffix=".groups", delete=False) as gf:
        gf.write("\n".join(groups) + "\n")
    with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as ff:
        ff.write("\n".join(flows) + "\n")
    try:
        if groups:
            run([*OFCTL, "add-groups", SWITCH, gf.name])
        run([*OFCTL, "add-flows", SWITCH, ff.name])
    finally:
        os.unlink(gf.name)
        os.unlink(ff.name)


def modify_group(group: str) -> None:
    """Replace a group on s1 (``mod-group``), leaving flows and connections in place."""
    run([*OFCTL, "mod-group", SWITCH, group])


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def vswitchd_pid() -> int:
    """ovs-vswitchd's PID."""
    return int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name without digits (handler, revalidator, ...)."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = re.sub(r"\d+$", "", (task / "comm").read_text().strip())
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return totals


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def coverage() -> dict[str, int]:
    """OVS coverage counters' totals."""
    out = run(["ovs-appctl", "coverage/show"])
    totals: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+.*total:\s*(\d+)", line)
        if m:
            totals[m.group(1)] = int(m.group(2))
    return totals


def of_flow_count() -> int:
    """OpenFlow entries on s1."""
    out = run([*OFCTL, "dump-flows", SWITCH], timeout=60)
    return len([line for line in out.splitlines() if "actions=" in line])


def ct_count() -> int:
    """Entries in the datapath conntrack table."""
    out = run(["ovs-appctl", "dpctl/ct-get-nconns"])
    return int(out.strip() or 0)


class FlowSampler:
    """Polls ``upcall/show`` (cheap: no flow dump) during a run and keeps the largest current datapath flow count."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                out = run(["ovs-appctl", "upcall/show"], timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            m = re.search(r"\(current (\d+)\)", out)
            if m:
                self.peak = max(self.peak, int(m.group(1)))
                self.samples += 1

    def __enter__(self) -> FlowSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def dp_flow_kinds() -> dict[str, int]:
    """Datapath flows by kind: all, those after a dp_hash selection, and those matching an exact TCP 5-tuple."""
    out = run(["ovs-appctl", "dpctl/dump-flows"], timeout=60)
    lines = [line for line in out.splitlines() if line.strip()]
    exact = re.compile(r"ipv4\(src=[\d.]+,dst=[\d.]+,.*tcp\(src=\d+,dst=\d+\)")
    return {
        "all": len(lines),
        "dp_hash": sum("dp_hash(" in line for line in lines),
        "exact_5tuple": sum(bool(exact.search(line)) for line in lines),
    }


def json_line(text: str) -> dict[str, Any] | None:
    """The last JSON object line of a client's output (None if there is none)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


class Bench:
    """The lab and the figures."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.topo = SingleTopo(clients=3, backends=3)
        self.flows = Flows(self.topo)
        self.net: Mininet | None = None
        self.backends: list[Any] = []

    # -- lab ----------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the Mininet lab and a backend on every member host; return once they listen."""
        self.net = Mininet(topo=self.topo.mininet_topo(), controller=None, build=True, waitConnected=False)
        self.net.start()
        hosts = [self.net[name] for name in self.topo.data_hosts()]
        for host in hosts:
            for intf in host.intfNames():
                out = host.cmd(f"ethtool -K {intf} tx off >/dev/null 2>&1; echo rc=$?")
                if "rc=0" not in out:
                    raise RuntimeError(f"{host.name}: ethtool -K {intf} tx off failed: {out}")
            host.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            for other in hosts:
                if other is not host:
                    host.cmd(f"arp -s {other.IP()} {other.MAC()}")
            if host.name.startswith("c"):
                host.cmd(f"arp -s {VIP} {VIP_MAC}")
        for name in WEIGHTS:
            host = self.net[name]
            log_file = open(self.workdir / f"backend-{name}.log", "w")  # noqa: SIM115 (closed with the process)
            self.backends.append(
                host.popen(
                    [BACKEND, "--name", name, "--port", str(MEMBER_PORT)], stdout=log_file, stderr=subprocess.STDOUT
                )
            )
        deadline = time.monotonic() + 15
        for name in WEIGHTS:
            while f":{MEMBER_PORT} " not in self.net[name].cmd("ss -ltnH"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backend on {name} not listening on port {MEMBER_PORT}")
                time.sleep(0.1)
        log("lab up, backends listening")

    def stop(self) -> None:
        """Stop the backends (SIGTERM, then SIGKILL) and the lab."""
        for proc in self.backends:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.net is not None:
            self.net.stop()

    # -- helpers ------------------------------------------------------------------------------------------------
    def target(self, variant: str, client: str) -> str:
        """The address a client connects to: its paired member when ``direct``, else the VIP."""
        return self.topo.host_ip("h" + client[1:]) if variant == "direct" else VIP

    def connections(
        self, variant: str, count: int, concurrency: int, timeout: float, clients: list[str]
    ) -> list[dict[str, Any]]:
        """One connections run from each of ``clients`` in parallel; their JSON summaries."""
        procs = []
        for client in clients:
            cmd = [
                CLIENT,
                "connections",
                self.target(variant, client),
                "--port",
                str(VIP_PORT),
                "--count",
                str(count),
                "--concurrency",
                str(concurrency),
                "--timeout",
                str(timeout),
            ]
            procs.append(self.net[client].popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            try:
                out, _err = proc.communicate(timeout=timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _err = proc.communicate(timeout=10)
            results.append(json_line(out) or {"ok": 0, "errors": count, "error": "no output"})
        return results

    def download(self, variant: str, size: int, timeout: float) -> dict[str, Any]:
        """One timed download of ``size`` bytes from c1 through ``variant``."""
        cmd = [
            CLIENT,
            "download",
            self.target(variant, "c1"),
            "--port",
            str(VIP_PORT),
            "--bytes",
            str(size),
            "--timeout",
            str(timeout),
        ]
        proc = self.net["c1"].popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, _err = proc.communicate(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _err = proc.communicate(timeout=10)
        return json_line(out) or {"ok": False, "mbps": 0.0, "error": "no output"}

    # -- one measurement ----------------------------------------------------------------------------------------
    def measure(self, variant: str, rep: int) -> dict[str, Any]:
        """One repetition of ``variant``: connection rate, CPU, flow and conntrack counts, a download."""
        a = self.args
        install(*self.flows.variant(variant, WEIGHTS))
        self.connections(variant, a.warmup, 4, 15.0, ["c1", "c2", "c3"])
        time.sleep(1.5)
        pid = vswitchd_pid()
        cov0 = coverage()
        threads0 = thread_cpu(pid)
        cpu0, busy0, wall0 = cpu_seconds(pid), machine_busy(), time.monotonic()
        with FlowSampler() as sampler:
            runs = self.connections(variant, a.count, a.concurrency, a.run_timeout, ["c1", "c2", "c3"])
        wall = time.monotonic() - wall0
        cpu1, busy1 = cpu_seconds(pid), machine_busy()
        threads1 = thread_cpu(pid)
        kinds = dp_flow_kinds()
        dp_flows = kinds["all"]
        of_flows = of_flow_count()
        conns = ct_count()
        time.sleep(1.5)  # coverage counters of other threads reach coverage/show about once a second
        cov1 = coverage()
        upcall = run(["ovs-appctl", "upcall/show"])
        ok = sum(r.get("ok", 0) for r in runs)
        elapsed = max((r.get("elapsed_s", 0.0) for r in runs), default=0.0)
        weighted_p50 = (sum(r["connect_ms"]["p50"] * r["ok"] for r in runs if r.get("ok")) / ok) if ok else None
        served: dict[str, int] = {}
        for r in runs:
            for name, n in r.get("served_by", {}).items():
                served[name] = served.get(name, 0) + n
        down = self.download(variant, a.download_bytes, a.download_timeout)
        result = {
            "variant": variant,
            "rep": rep,
            "rate": round(ok / elapsed, 1) if elapsed else 0.0,
            "ok": ok,
            "errors": sum(r.get("errors", 0) for r in runs),
            "error_kinds": [r.get("error_kinds") for r in runs],
            "connect_p50_ms": round(weighted_p50, 3) if weighted_p50 is not None else None,
            "connect_p99_ms": max(
                (r["connect_ms"]["p99"] for r in runs if r.get("connect_ms", {}).get("p99")), default=None
            ),
            "served_by": dict(sorted(served.items())),
            "vswitchd_cpu_s": round(cpu1 - cpu0, 3),
            "vswitchd_cores": round((cpu1 - cpu0) / wall, 3),
            "machine_cores": round(2 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
            "wall_s": round(wall, 3),
            "dp_flows_after": dp_flows,
            "dp_flow_kinds_after": kinds,
            "dp_flows_peak": sampler.peak,
            "dp_flows_peak_samples": sampler.samples,
            "of_flows_after": of_flows,
            "ct_entries_after": conns,
            "vswitchd_thread_cpu_s": {
                k: round(threads1.get(k, 0.0) - threads0.get(k, 0.0), 2)
                for k in sorted(threads1)
                if threads1.get(k, 0.0) - threads0.get(k, 0.0) >= 0.01
            },
            "coverage": {k: cov1.get(k, 0) - cov0.get(k, 0) for k in COVERAGE},
            "upcall_show": upcall.strip().splitlines()[:6],
            "download_mbps": down.get("mbps"),
            "download_ok": down.get("ok"),
            "download_bytes": down.get("bytes"),
            "download_served_by": down.get("served_by"),
            "runs": runs,
        }
        log(
            f"{variant} rep {rep}: {result['rate']}/s ok={ok} err={result['errors']} p50={result['connect_p50_ms']} "
            f"p99={result['connect_p99_ms']} cpu={result['vswitchd_cpu_s']}s ({result['vswitchd_cores']} cores) "
            f"threads={result['vswitchd_thread_cpu_s']} rev_flow_table={result['coverage']['rev_flow_table']} "
            f"dp_flows={dp_flows} {kinds} peak={sampler.peak} of_flows={of_flows} ct={conns} "
            f"dl={down.get('mbps')} ok={down.get('ok')} "
            f"served={result['served_by']}"
        )
        return result

    # -- correctness: group change under established downloads, shares -----------------------------------------
    def group_change(self, variant: str) -> dict[str, Any]:
        """Shares and breakage when the group drains a member under running downloads."""
        a = self.args
        install(*self.flows.variant(variant, WEIGHTS))
        before = self.connections(variant, a.share_count, 8, 20.0, ["c1", "c2", "c3"])
        procs = []
        for client in ("c1", "c2", "c3"):
            cmd = [
                sys.executable,
                DOWNLOADS,
                "--target",
                f"{VIP}:{VIP_PORT}",
                "--count",
                str(a.dl_count),
                "--bytes",
                str(a.dl_bytes),
                "--rate",
                str(a.dl_rate),
                "--timeout",
                str(a.dl_timeout),
            ]
            procs.append(
                self.net[client].popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
            )
        time.sleep(a.dl_bytes / a.dl_rate * 0.4)
        change_at = time.time()
        group = (self.flows.learn_group if variant == "learn" else self.flows.ct_group)(DRAINED)
        modify_group(group)
        downloads = []
        for proc in procs:
            try:
                out, _err = proc.communicate(timeout=a.dl_timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _err = proc.communicate(timeout=10)
            downloads += (json_line(out) or {"downloads": []})["downloads"]
        learned_before_after_run = of_flow_count()
        established = [d for d in downloads if d.get("started", 1e18) < change_at < d.get("ended", 0)]
        broken = [d for d in established if not d["result"].get("ok")]
        after = self.connections(variant, a.share_count, 8, 20.0, ["c1", "c2", "c3"])
        of_after = of_flow_count()

        def shares(runs: list[dict[str, Any]]) -> dict[str, float]:
            served: dict[str, int] = {}
            for r in runs:
                for name, n in r.get("served_by", {}).items():
                    served[name] = served.get(name, 0) + n
            total = sum(served.values()) or 1
            return {name: round(100 * served.get(name, 0) / total, 1) for name in WEIGHTS}

        result = {
            "variant": variant,
            "shares_before_pct": shares(before),
            "ok_before": sum(r.get("ok", 0) for r in before),
            "downloads": len(downloads),
            "established_at_change": len(established),
            "broken": len(broken),
            "established_by_member": {
                n: sum(1 for d in established if d["result"].get("served_by") == n) for n in WEIGHTS
            },
            "broken_errors": [d["result"].get("error") for d in broken],
            "shares_after_pct": shares(after),
            "ok_after": sum(r.get("ok", 0) for r in after),
            "errors_after": sum(r.get("errors", 0) for r in after),
            "of_flows_before_after_run": learned_before_after_run,
            "of_flows_after_after_run": of_after,
        }
        log(f"group change {variant}: {json.dumps({k: v for k, v in result.items() if k != 'variant'})}")
        return result

    def direct_under_ct(self) -> dict[str, Any]:
        """With the conntrack pipeline installed, direct connections to members (port 80) still work."""
        install(*self.flows.variant("conntrack", WEIGHTS))
        runs = self.connections("direct", 200, 8, 20.0, ["c1", "c2", "c3"])
        vip = self.connections("conntrack", 200, 8, 20.0, ["c1", "c2", "c3"])
        down = self.download("direct", 20_000_000, 20.0)
        result = {
            "direct_ok": sum(r.get("ok", 0) for r in runs),
            "direct_errors": sum(r.get("errors", 0) for r in runs),
            "vip_ok_meanwhile": sum(r.get("ok", 0) for r in vip),
            "direct_download_ok": down.get("ok"),
            "direct_download_served_by": down.get("served_by"),
            "of_flows": of_flow_count(),
        }
        log(f"direct under conntrack pipeline: {result}")
        return result


def median(values: list[float]) -> float | None:
    """The median of the values that are not None (None if none are)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians (and every value) of each variant's repetitions, with its shares of connections."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        s: dict[str, Any] = {}
        for key in (
            "rate",
            "connect_p50_ms",
            "connect_p99_ms",
            "download_mbps",
            "vswitchd_cpu_s",
            "vswitchd_cores",
            "machine_cores",
            "dp_flows_after",
            "dp_flows_peak",
            "of_flows_after",
            "ct_entries_after",
        ):
            s[key] = median([r[key] for r in rows])
            s[key + "_all"] = [r[key] for r in rows]
        s["cpu_ms_per_1000_conn"] = median([1000 * 1000 * r["vswitchd_cpu_s"] / r["ok"] for r in rows if r["ok"]])
        s["main_thread_cpu_s"] = median([r["vswitchd_thread_cpu_s"].get("ovs-vswitchd", 0.0) for r in rows])
        s["revalidator_cpu_s"] = median([r["vswitchd_thread_cpu_s"].get("revalidator", 0.0) for r in rows])
        s["handler_cpu_s"] = median([r["vswitchd_thread_cpu_s"].get("handler", 0.0) for r in rows])
        s["rev_flow_table"] = median([r["coverage"]["rev_flow_table"] for r in rows])
        s["errors"] = sum(r["errors"] for r in rows)
        s["downloads_ok"] = all(r["download_ok"] for r in rows)
        served: dict[str, int] = {}
        for r in rows:
            for name, n in r["served_by"].items():
                served[name] = served.get(name, 0) + n
        total = sum(served.values()) or 1
        s["shares_pct"] = {name: round(100 * n / total, 1) for name, n in sorted(served.items())}
        summary[variant] = s
    return summary


def fmt(value: Any, spec: str = "{:.0f}") -> str:
    """``value`` formatted with ``spec``, or "-" for None."""
    return "-" if value is None else spec.format(value)


def markdown(summary: dict[str, dict[str, Any]], changes: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The summary and the group change results as a Markdown table."""
    cols = [v for v in VARIANTS if v in summary]
    lines = [
        f"| figure (median of {settings['repeats']}) | "
        + " | ".join(cols)
        + " | learn/direct | ct/direct | ct/learn |",
        "|---|" + "---:|" * (len(cols) + 3),
    ]

    def row(label: str, key: str, spec: str = "{:.0f}") -> None:
        vals = [summary[c].get(key) for c in cols]
        get = {c: summary[c].get(key) for c in cols}

        def ratio(a: str, b: str) -> str:
            if get.get(a) is None or not get.get(b):
                return "-"
            return f"{get[a] / get[b]:.2f}"

        lines.append(
            f"| {label} | "
            + " | ".join(fmt(v, spec) for v in vals)
            + f" | {ratio('learn', 'direct')} | {ratio('conntrack', 'direct')}"
            f" | {ratio('conntrack', 'learn')} |"
        )

    row(f"new connections/s (3 clients x {settings['concurrency']} in flight x {settings['count']})", "rate")
    row("connect p50 ms, loaded", "connect_p50_ms", "{:.2f}")
    row("connect p99 ms, loaded", "connect_p99_ms", "{:.2f}")
    row(f"download Mbit/s ({settings['download_bytes'] // 1_000_000} MB, 1 connection)", "download_mbps")
    row("ovs-vswitchd CPU s, loaded run", "vswitchd_cpu_s", "{:.2f}")
    row("  of which main thread (forwarding, upcalls, learn), CPU s", "main_thread_cpu_s", "{:.2f}")
    row("  of which revalidator threads, CPU s", "revalidator_cpu_s", "{:.2f}")
    row("  of which handler threads, CPU s", "handler_cpu_s", "{:.2f}")
    row("ovs-vswitchd cores, loaded run", "vswitchd_cores", "{:.2f}")
    row("ovs-vswitchd CPU ms per 1000 connections", "cpu_ms_per_1000_conn", "{:.0f}")
    row("whole machine cores (of 2), loaded run", "machine_cores", "{:.2f}")
    row("datapath flows, peak during the run (upcall/show every 0.5 s)", "dp_flows_peak")
    row("datapath flows after the run", "dp_flows_after")
    row("OpenFlow entries after the run", "of_flows_after")
    row("conntrack entries after the run", "ct_entries_after")
    row("revalidations for flow-table changes (rev_flow_table), loaded run", "rev_flow_table")
    out = "\n".join(lines)
    out += "\n\nShares (all loaded runs): " + "; ".join(
        f"{c}: " + "/".join(f"{n} {p}%" for n, p in summary[c]["shares_pct"].items()) for c in cols if c != "direct"
    )
    out += "; errors: " + ", ".join(f"{c} {summary[c]['errors']}" for c in cols)
    out += "; every download complete and verified: " + ", ".join(
        f"{c} {'yes' if summary[c]['downloads_ok'] else 'NO'}" for c in cols
    )
    if changes:
        out += (
            "\n\n| group change (h1 drained: 40/35/25 -> 0/50/50) | " + " | ".join(c["variant"] for c in changes) + " |"
        )
        out += "\n|---|" + "---:|" * len(changes)
        out += (
            "\n| shares before (h1/h2/h3 %) | "
            + " | ".join("/".join(str(v) for v in c["shares_before_pct"].values()) for c in changes)
            + " |"
        )
        out += (
            "\n| downloads established at the change (on h1/h2/h3) | "
            + " | ".join(
                f"{c['established_at_change']} ({'/'.join(str(v) for v in c['established_by_member'].values())})"
                for c in changes
            )
            + " |"
        )
        out += "\n| of those broken | " + " | ".join(str(c["broken"]) for c in changes) + " |"
        out += (
            "\n| shares after (h1/h2/h3 %) | "
            + " | ".join("/".join(str(v) for v in c["shares_after_pct"].values()) for c in changes)
            + " |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the pinning benchmark and write its JSON report; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="1 repetition, 300 connections per client, 20 MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, default=2000, help="connections per client in the loaded run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--run-timeout", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--download-bytes", type=int, default=200_000_000)
    parser.add_argument("--download-timeout", type=float, default=20.0)
    parser.add_argument("--share-count", type=int, default=300, help="connections per client for the share checks")
    parser.add_argument("--dl-count", type=int, default=4, help="downloads per client during the group change")
    parser.add_argument("--dl-bytes", type=int, default=4_000_000)
    parser.add_argument("--dl-rate", type=int, default=1_000_000)
    parser.add_argument("--dl-timeout", type=float, default=30.0)
    parser.add_argument("--only", action="append", choices=VARIANTS, help="variants to measure (repeatable)")
    parser.add_argument("--no-checks", action="store_true", help="skip the group-change and direct-under-ct checks")
    parser.add_argument("--print-flows", action="store_true", help="print every variant's flows and groups, exit")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.count, args.download_bytes, args.download_timeout = 1, 300, 20_000_000, 10.0
    variants = [v for v in VARIANTS if not args.only or v in args.only]
    if args.print_flows:
        flows = Flows(SingleTopo(clients=3, backends=3))
        for v in variants:
            f, g = flows.variant(v, WEIGHTS)
            print(f"## {v}\n" + "\n".join(g + f))
        return 0
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    settings = {
        k: getattr(args, k)
        for k in (
            "repeats",
            "count",
            "concurrency",
            "run_timeout",
            "warmup",
            "download_bytes",
            "download_timeout",
            "share_count",
            "dl_count",
            "dl_bytes",
            "dl_rate",
        )
    }
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="nlb-pinning-"))
    bench = Bench(args, workdir)
    results: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        bench.start()
        for rep in range(1, args.repeats + 1):
            for variant in variants:
                results.append(bench.measure(variant, rep))
        if not args.no_checks:
            for variant in variants:
                if variant != "direct":
                    changes.append(bench.group_change(variant))
            if "conntrack" in variants:
                extra["direct_under_conntrack"] = bench.direct_under_ct()
    finally:
        bench.stop()
    summary = summarize(results)
    table = markdown(summary, changes, settings)
    report = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "ovs_version": run(["ovs-vswitchd", "--version"]).splitlines()[0],
        "loadavg": Path("/proc/loadavg").read_text().strip(),
        "settings": settings,
        "weights": WEIGHTS,
        "summary": summary,
        "group_change": changes,
        **extra,
        "flows": {v: dict(zip(("flows", "groups"), bench.flows.variant(v, WEIGHTS), strict=True)) for v in variants},
        "results": results,
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table)
    log(f"report in {args.out}; backend logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
