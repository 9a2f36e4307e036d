"""Benchmark: a cbench-like OpenFlow 1.3 load generator, N fake switches sending packet-ins of new TCP connections.

Each fake switch connects to a running controller, answers the handshake (HELLO, FEATURES_REQUEST, SET_CONFIG,
BARRIER, ECHO, GET_CONFIG, ROLE and multipart requests, the latter with empty bodies), counts and otherwise ignores
flow-mods, and sends table-miss packet-ins whose data is a real 74-byte Ethernet/IPv4/TCP SYN to the VIP, from a
distinct client address and port per connection. A "response" is the packet-out that releases that very frame
(matched by its data). Messages are built and parsed with the framework's OpenFlow 1.3 classes and constants; frames
with ``nlb_sdn.core.frames`` (a template per attachment port, packed per connection). It runs as a separate process on
asyncio, never inside eventlet.

Modes:

* ``throughput``: ``--window`` packet-ins outstanding per switch (like cbench); responses per second per switch and in
  total, over ``--duration`` seconds after ``--warmup`` seconds.
* ``latency``: one packet-in outstanding per switch; round trip packet-in -> its packet-out, p50/p99 in ms.

Against a controller that is already running (it must know the VIP; ``--print-config`` prints a matching nlb_sdn
config)::

    .venv/bin/python benchmarks/ofload.py --port 6653 --mode throughput --switches 4

or let it start one on free ports, run, and stop it by its PID::

    .venv/bin/python benchmarks/ofload.py --launch nlb --mode latency --switches 4 --duration 10
    .venv/bin/python benchmarks/ofload.py --launch learning --mode throughput --out /tmp/learning.json

JSON (settings, environment, results) on stdout or in ``--out``; a one-line summary on stderr. See
``benchmarks/README.md`` for the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/ofload.py` from anywhere
    sys.path.insert(0, str(REPO))

from nlb_sdn import framework  # noqa: E402 - after the path fix
from nlb_sdn.config import parse_config, vip_mac  # noqa: E402
from nlb_sdn.core import frames  # noqa: E402
from nlb_sdn.flows.pipeline import CookieKind, Table, make_cookie  # noqa: E402
from nlb_sdn.framework import ofproto_v1_3, ofproto_v1_3_parser  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402

ofp = ofproto_v1_3
parser = ofproto_v1_3_parser
msg_pack_into = importlib.import_module(f"{framework.NAME}.lib.pack_utils").msg_pack_into

OFP_HEADER = struct.Struct(ofp.OFP_HEADER_PACK_STR)
PACKET_OUT = struct.Struct(ofp.OFP_PACKET_OUT_PACK_STR)  # after the header: buffer_id, in_port, actions_len
MULTIPART_REQUEST = struct.Struct(ofp.OFP_MULTIPART_REQUEST_PACK_STR)  # after the header: type, flags
ROLE_REQUEST = struct.Struct(ofp.OFP_ROLE_REQUEST_PACK_STR)  # after the header: role, generation_id
FLOW_MOD_TABLE = struct.Struct("!QQBB")  # after the header: cookie, cookie_mask, table_id, command (ofp_flow_mod)
PORT_NAMES = {
    value: name[len("OFPP_") :]
    for name, value in vars(ofp).items()
    if name.startswith("OFPP_") and isinstance(value, int) and value >= ofp.OFPP_MAX
}
MSG_NAMES = {
    value: name[len("OFPT_") :].lower()
    for name, value in vars(ofp).items()
    if name.startswith("OFPT_") and isinstance(value, int)
}

CLIENT_PORT_BASE = 1024
CLIENT_PORTS = 65536 - CLIENT_PORT_BASE
CLIENT_HOSTS = 65534  # client addresses per switch: 10.(100+i).0.1 .. 10.(100+i).255.254
MAX_SWITCHES = 155
UPLINK_PORT = 1000  # where the learning switch learns the VIP MAC (see --no-prime)
MEMBERS = [
    ("m1", "10.0.0.11", "00:00:00:00:00:11"),
    ("m2", "10.0.0.12", "00:00:00:00:00:12"),
    ("m3", "10.0.0.13", "00:00:00:00:00:13"),
]
MEMBER_PORT_BASE = 2000
LINK_PORTS = (3000, 3001)  # the fabric config chains s1 - s2 - ... - sN through these ports
ETH_LEN = frames.ETH_HEADER.size  # where things are in the 74-byte SYN (SynFrames)
IP_CHECKSUM_AT = ETH_LEN + 10
IP_SRC_AT = ETH_LEN + 12
TCP_AT = ETH_LEN + 20
TCP_SEQ_AT = TCP_AT + 4
TCP_CHECKSUM_AT = TCP_AT + 16
SYN_TCP_LEN = 40  # header with MSS, SACK permitted, timestamps, NOP, window scale
TS_VAL_AT = TCP_AT + 20 + 4 + 2 + 2  # after MSS, SACK permitted and the timestamp option's kind and length
IP_WORDS = struct.Struct("!10H")
TCP_WORDS = struct.Struct(f"!{SYN_TCP_LEN // 2}H")
WORD_PAIR = struct.Struct("!HH")
WORD16 = struct.Struct("!H")
WORD32 = struct.Struct("!I")
LINUX_SYN_OPTIONS = struct.Struct("!BBHBBBBIIBBBB")
SWEEP_PERIOD = 0.05
PROBE_PERIOD = 0.1
LISTEN_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

MODES = ("throughput", "latency")
LAUNCH_KINDS = ("nlb", "learning")


def log(message: str) -> None:
    """Progress on stderr (stdout may carry the JSON)."""
    print(message, file=sys.stderr, flush=True)


# --- OpenFlow messages: the framework's classes, with the switch-side serializers os-ken does not ship ----------


class Datapath:
    """What the framework's message classes need of a datapath to serialize and parse: the protocol modules."""

    ofproto = ofp
    ofproto_parser = parser
    id = None


class FeaturesReply(parser.OFPSwitchFeatures):
    """OFPT_FEATURES_REPLY (os-ken only parses it)."""

    def _serialize_body(self) -> None:
        msg_pack_into(
            ofp.OFP_SWITCH_FEATURES_PACK_STR,
            self.buf,
            ofp.OFP_HEADER_SIZE,
            self.datapath_id,
            self.n_buffers,
            self.n_tables,
            self.auxiliary_id,
            self.capabilities,
            0,
        )


class GetConfigReply(parser.OFPGetConfigReply):
    """OFPT_GET_CONFIG_REPLY."""

    def _serialize_body(self) -> None:
        msg_pack_into(ofp.OFP_SWITCH_CONFIG_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE, self.flags, self.miss_send_len)


class RoleReply(parser.OFPRoleReply):
    """OFPT_ROLE_REPLY."""

    def _serialize_body(self) -> None:
        msg_pack_into(ofp.OFP_ROLE_REQUEST_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE, self.role, self.generation_id)


class MultipartReply(parser.OFPMultipartReply):
    """OFPT_MULTIPART_REPLY of any type with a raw body (empty for the list-valued types)."""

    def __init__(self, datapath: Any, mp_type: int, body: bytes = b"", flags: int = 0) -> None:
        super().__init__(datapath, body=body, flags=flags)
        self.type = mp_type

    def _serialize_body(self) -> None:
        msg_pack_into(ofp.OFP_MULTIPART_REPLY_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE, self.type, self.flags)
        self.buf += self.body


class PacketIn(parser.OFPPacketIn):
    """OFPT_PACKET_IN: fixed part, the match (``in_port``), 2 bytes of padding, then the frame."""

    def _serialize_body(self) -> None:
        msg_pack_into(
            ofp.OFP_PACKET_IN_PACK_STR,
            self.buf,
            ofp.OFP_HEADER_SIZE,
            self.buffer_id,
            self.total_len,
            self.reason,
            self.table_id,
            self.cookie,
        )
        self.match.serialize(self.buf, ofp.OFP_PACKET_IN_SIZE - ofp.OFP_MATCH_SIZE)  # pads the match to 8 bytes
        self.buf += b"\x00\x00" + self.data


def encode(msg: Any, xid: int) -> bytes:
    """Serialize a framework message object with ``xid``."""
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


class PacketInEncoder:
    """Packet-ins as :class:`PacketIn` serializes them, at a fraction of the cost.

    Everything but the header's length and xid and the trailing frame is the same for all packet-ins of one in_port
    and frame length, so the framework serializes that part once (per key) and each message only packs a header.
    """

    def __init__(self, table_id: int, cookie: int, reason: int) -> None:
        self.table_id = table_id
        self.cookie = cookie
        self.reason = reason
        self.bodies: dict[tuple[int, int], bytes] = {}

    def message(self, in_port: int, frame: bytes) -> PacketIn:
        """The framework message object for one packet-in (what :meth:`encode` is equivalent to)."""
        return PacketIn(
            Datapath(),
            buffer_id=ofp.OFP_NO_BUFFER,
            total_len=len(frame),
            reason=self.reason,
            table_id=self.table_id,
            cookie=self.cookie,
            match=parser.OFPMatch(in_port=in_port),
            data=frame,
        )

    def encode(self, in_port: int, frame: bytes, xid: int) -> bytes:
        """The bytes of one packet-in with this xid: the cached body for (in_port, frame length), then the frame."""
        key = (in_port, len(frame))
        body = self.bodies.get(key)
        if body is None:
            whole = encode(self.message(in_port, b"\x00" * len(frame)), 0)
            body = self.bodies[key] = whole[ofp.OFP_HEADER_SIZE : len(whole) - len(frame)]
        return (
            OFP_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, ofp.OFP_HEADER_SIZE + len(body) + len(frame), xid)
            + body
            + frame
        )


def multipart_body(mp_type: int) -> bytes:
    """The body of an empty answer: nothing for list-valued types, zeros/strings for the single-struct ones."""
    if mp_type == ofp.OFPMP_DESC:
        return struct.pack(
            ofp.OFP_DESC_PACK_STR, b"nlb_sdn", b"ofload fake switch", b"benchmarks/ofload.py", b"0", b"fake"
        )
    if mp_type == ofp.OFPMP_AGGREGATE:
        return struct.pack(ofp.OFP_AGGREGATE_STATS_REPLY_PACK_STR, 0, 0, 0)
    return b""


def linux_syn_options(ts_val: int) -> bytes:
    """The options of a Linux SYN: MSS 1460, SACK permitted, timestamps (``ts_val``, 0), NOP, window scale 7."""
    return LINUX_SYN_OPTIONS.pack(2, 4, 1460, 4, 2, 8, 10, ts_val, 0, 1, 3, 3, 7)


def syn_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, seq: int) -> bytes:
    """A 74-byte TCP SYN as Linux sends it (MSS, SACK permitted, timestamps, NOP, window scale)."""
    return frames.tcp_frame(
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        sport,
        dport,
        frames.TCP_SYN,
        seq=seq,
        window=64240,
        options=linux_syn_options(seq),
        dont_fragment=True,
    )


def prime_frame(vip: str, vport: int, client_mac: str, client_ip: str) -> bytes:
    """A SYN-ACK from the VIP's MAC: lets a learning switch learn where the VIP is (the nlb controller drops it)."""
    return frames.tcp_frame(
        vip_mac(vip),
        client_mac,
        vip,
        client_ip,
        vport,
        CLIENT_PORT_BASE,
        frames.TCP_SYN | frames.TCP_ACK,
        seq=1,
        ack=1,
        window=65160,
        dont_fragment=True,
    )


# --- addressing shared by the generator and the nlb config it launches with ----------------------------------------


def gateway_hosts(index: int, hosts: int) -> list[tuple[int, str, str]]:
    """The attachment points of switch ``index`` (0-based): (port, MAC, IP) per host; clients enter through them."""
    return [(h + 1, f"02:00:00:00:{index + 1:02x}:{h + 1:02x}", f"10.99.{index + 1}.{h + 1}") for h in range(hosts)]


def client_address(index: int, k: int) -> tuple[str, int]:
    """Client IP and source port of connection ``k`` of switch ``index``: distinct for 65534 x 64512 connections."""
    n = k % CLIENT_HOSTS + 1
    return f"10.{100 + index}.{n >> 8}.{n & 0xFF}", CLIENT_PORT_BASE + (k // CLIENT_HOSTS) % CLIENT_PORTS


class SynFrames:
    """The SYN of each connection of one switch, as :func:`syn_frame` builds it, at a fraction of the cost.

    Connection ``k`` comes from :func:`client_address` and enters through gateway host ``k mod --hosts``; its SYN is
    that host's template (built once by :func:`syn_frame`) with the client address, source port, sequence number
    and timestamp packed in and both checksums recomputed (the unit test checks the bytes are the same).
    """

    def __init__(self, args: argparse.Namespace, index: int) -> None:
        self.index = index
        self.vip = socket.inet_aton(args.vip)
        self.hosts = [
            (port, bytearray(syn_frame(mac, vip_mac(args.vip), "0.0.0.0", args.vip, CLIENT_PORT_BASE, args.vport, 0)))
            for port, mac, _ip in gateway_hosts(index, args.hosts)
        ]
        for _port, template in self.hosts:
            WORD16.pack_into(template, IP_CHECKSUM_AT, 0)
            WORD16.pack_into(template, TCP_CHECKSUM_AT, 0)
        self.pseudo_header = sum(WORD_PAIR.unpack(self.vip)) + frames.IPPROTO_TCP + SYN_TCP_LEN

    def frame(self, k: int) -> tuple[bytes, int]:
        """Frame and in_port of connection ``k``."""
        in_port, template = self.hosts[k % len(self.hosts)]
        client_ip, client_port = client_address(self.index, k)
        client = socket.inet_aton(client_ip)
        seq = (k * 2654435761) & 0xFFFFFFFF
        frame = bytearray(template)
        frame[IP_SRC_AT : IP_SRC_AT + 4] = client
        WORD16.pack_into(frame, TCP_AT, client_port)
        WORD32.pack_into(frame, TCP_SEQ_AT, seq)
        WORD32.pack_into(frame, TS_VAL_AT, seq)
        WORD16.pack_into(frame, IP_CHECKSUM_AT, frames.checksum_fold(sum(IP_WORDS.unpack_from(frame, ETH_LEN))))
        tcp_sum = self.pseudo_header + sum(WORD_PAIR.unpack(client)) + sum(TCP_WORDS.unpack_from(frame, TCP_AT))
        WORD16.pack_into(frame, TCP_CHECKSUM_AT, frames.checksum_fold(tcp_sum))
        return bytes(frame), in_port


def nlb_config(args: argparse.Namespace, rest_port: int) -> dict[str, Any]:
    """An nlb_sdn config for this run: the VIP over three members, and a fabric with every fake switch and host."""
    switches = [{"name": f"s{i + 1}", "dpid": args.dpid_base + i} for i in range(args.switches)]
    links = [
        {"a": f"s{i + 1}", "a_port": LINK_PORTS[0], "b": f"s{i + 2}", "b_port": LINK_PORTS[1]}
        for i in range(args.switches - 1)
    ]
    hosts = [
        {"name": f"g{i + 1}-{port}", "ip": ip, "mac": mac, "switch": f"s{i + 1}", "port": port}
        for i in range(args.switches)
        for port, mac, ip in gateway_hosts(i, args.hosts)
    ]
    hosts += [
        {"name": name, "ip": ip, "mac": mac, "switch": "s1", "port": MEMBER_PORT_BASE + n}
        for n, (name, ip, mac) in enumerate(MEMBERS)
    ]
    return {
        "version": 1,
        "controller": {
            "max_connections": max(100_000, 2 * args.max_packets),
            "rest": {"enabled": True, "host": "127.0.0.1", "port": rest_port},
        },
        "vips": [
            {
                "name": "bench",
                "address": args.vip,
                "port": args.vport,
                "members": [{"name": name, "address": ip, "port": args.vport} for name, ip, _mac in MEMBERS],
            }
        ],
        "fabric": {"switches": switches, "links": links, "hosts": hosts},
    }


# --- one fake switch -------------------------------------------------------------------------------------------------


class Run:
    """Settings and phase times shared by the switches of one run (times are time.perf_counter())."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.window = 1 if args.mode == "latency" else args.window
        self.cookie = args.cookie
        self.reason = ofp.OFPR_ACTION if args.reason == "action" else ofp.OFPR_NO_MATCH
        self.packet_ins = PacketInEncoder(args.table_id, self.cookie, self.reason)
        self.sending = True
        self.sent_total = 0
        self.warm_end = float("inf")
        self.end = float("inf")
        self.last_response = 0.0

    def may_send(self) -> bool:
        """Whether another packet-in may go out: not stopped, and under --max-packets."""
        return self.sending and self.sent_total < self.args.max_packets


class FakeSwitch(asyncio.Protocol):
    """One OpenFlow 1.3 switch: answers the controller, sends packet-ins, matches packet-outs to them."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.index = index
        self.dpid = run.args.dpid_base + index
        self.dp = Datapath()
        self.hosts = gateway_hosts(index, run.args.hosts)
        self.frames = SynFrames(run.args, index)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []  # written in one go by flush()
        self.xid = 0
        self.ready = asyncio.get_running_loop().create_future()  # the controller has asked for our ports
        self.answered = asyncio.Event()  # a packet-in of ours has been released
        self.active = False  # the window is open
        self.outstanding: dict[bytes, float] = {}  # frame -> send time, oldest first
        self.next_conn = 0
        self.sent = 0
        self.responses = 0
        self.measured = 0
        self.per_second: list[int] = []
        self.latencies: list[float] = []
        self.timeouts = 0
        self.unmatched = 0
        self.received: Counter[str] = Counter()
        self.flow_mods_by_table: Counter[int] = Counter()
        self.measured_flow_mods = 0
        self.measured_packet_outs = 0
        self.sample_actions: list[str] | None = None
        self.lost: str | None = None

    # connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport, turn Nagle off and say hello (the handshake starts here)."""
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send(parser.OFPHello(self.dp))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """A connection lost while still sending ends the run with that reason (and fails a pending handshake)."""
        if self.run.sending:
            self.lost = f"connection lost: {exc or 'closed by the controller'}"
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(self.lost))
        self.transport = None

    def next_xid(self) -> int:
        """The next transaction id (32-bit, wrapping)."""
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        return self.xid

    def send(self, msg: Any, xid: int | None = None) -> None:
        """Serialize and queue one message (a fresh xid unless answering one); flush() writes the queue."""
        self.out.append(encode(msg, self.next_xid() if xid is None else xid))

    def flush(self) -> None:
        """Write what the last burst of work queued, in one system call."""
        if self.out:
            if self.transport is not None:
                self.transport.write(b"".join(self.out))
            self.out.clear()

    # receiving

    def data_received(self, data: bytes) -> None:
        """Take every complete OpenFlow message from the stream and answer or count it."""
        buf = self.buf
        buf += data
        offset, size = 0, len(buf)
        while size - offset >= ofp.OFP_HEADER_SIZE:
            _version, msg_type, length, xid = OFP_HEADER.unpack_from(buf, offset)
            if length < ofp.OFP_HEADER_SIZE:
                self.lost = f"bad OpenFlow length {length}"
                if self.transport is not None:
                    self.transport.close()
                return
            if size - offset < length:
                break
            self.handle(msg_type, xid, buf, offset, length)
            offset += length
        if offset:
            del buf[:offset]
        self.flush()

    def handle(self, msg_type: int, xid: int, buf: bytearray, offset: int, length: int) -> None:
        """Act on one message from the controller (hot path first: packet-outs and flow-mods)."""
        if msg_type == ofp.OFPT_PACKET_OUT:
            self.packet_out(buf, offset, length)
            return
        self.received[MSG_NAMES.get(msg_type, str(msg_type))] += 1
        if msg_type == ofp.OFPT_FLOW_MOD:
            _cookie, _mask, table_id, _command = FLOW_MOD_TABLE.unpack_from(buf, offset + ofp.OFP_HEADER_SIZE)
            self.flow_mods_by_table[table_id] += 1
            if self.run.warm_end <= time.perf_counter() < self.run.end:
                self.measured_flow_mods += 1
        elif msg_type == ofp.OFPT_ECHO_REQUEST:
            self.send(
                parser.OFPEchoReply(self.dp, data=bytes(buf[offset + ofp.OFP_HEADER_SIZE : offset + length])), xid
            )
        elif msg_type == ofp.OFPT_FEATURES_REQUEST:
            self.send(
                FeaturesReply(
                    self.dp,
                    datapath_id=self.dpid,
                    n_buffers=0,
                    n_tables=254,
                    auxiliary_id=0,
                    capabilities=ofp.OFPC_FLOW_STATS | ofp.OFPC_TABLE_STATS | ofp.OFPC_PORT_STATS,
                ),
                xid,
            )
        elif msg_type == ofp.OFPT_BARRIER_REQUEST:
            self.send(parser.OFPBarrierReply(self.dp), xid)
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            mp_type, _flags = MULTIPART_REQUEST.unpack_from(buf, offset + ofp.OFP_HEADER_SIZE)
            self.send(MultipartReply(self.dp, mp_type, multipart_body(mp_type)), xid)
            if mp_type == ofp.OFPMP_PORT_DESC and not self.ready.done():
                self.ready.set_result(True)
        elif msg_type == ofp.OFPT_GET_CONFIG_REQUEST:
            self.send(GetConfigReply(self.dp, flags=ofp.OFPC_FRAG_NORMAL, miss_send_len=ofp.OFPCML_NO_BUFFER), xid)
        elif msg_type == ofp.OFPT_ROLE_REQUEST:
            role, generation_id = ROLE_REQUEST.unpack_from(buf, offset + ofp.OFP_HEADER_SIZE)
            self.send(RoleReply(self.dp, role=role, generation_id=generation_id), xid)
        # HELLO (we sent ours on connect), SET_CONFIG, ECHO_REPLY, ERROR and the rest: counted only

    def packet_out(self, buf: bytearray, offset: int, length: int) -> None:
        """Match a packet-out to the packet-in whose frame it releases; refill the window."""
        now = time.perf_counter()
        run = self.run
        measuring = run.warm_end <= now < run.end
        self.received["packet_out"] += 1
        if measuring:
            self.measured_packet_outs += 1
        _buffer_id, _in_port, actions_len = PACKET_OUT.unpack_from(buf, offset + ofp.OFP_HEADER_SIZE)
        actions_at = offset + ofp.OFP_PACKET_OUT_SIZE
        if measuring and self.sample_actions is None:
            self.sample_actions = self.parse_actions(bytes(buf[actions_at : actions_at + actions_len]))
        sent_at = self.outstanding.pop(bytes(buf[actions_at + actions_len : offset + length]), None)
        if sent_at is None:
            self.unmatched += 1
            return
        self.responses += 1
        run.last_response = now
        if not self.answered.is_set():
            self.answered.set()
        if measuring:
            self.measured += 1
            second = int(now - run.warm_end)
            while len(self.per_second) <= second:
                self.per_second.append(0)
            self.per_second[second] += 1
            self.latencies.append((now - sent_at) * 1000.0)
        self.pump()

    @staticmethod
    def parse_actions(raw: bytes) -> list[str]:
        """The actions of a packet-out, parsed by the framework's action classes (a sample for the report)."""
        actions, offset = [], 0
        while offset < len(raw):
            action = parser.OFPAction.parser(raw, offset)
            if isinstance(action, parser.OFPActionOutput):
                actions.append(f"output:{PORT_NAMES.get(action.port, action.port)}")
            else:
                actions.append(str(action))
            offset += action.len
        return actions

    # sending

    def packet_in(self, frame: bytes, in_port: int) -> None:
        """Queue one table-miss packet-in carrying ``frame`` whole."""
        self.out.append(self.run.packet_ins.encode(in_port, frame, self.next_xid()))

    def send_next(self) -> None:
        """The next new connection's SYN, tracked until its packet-out (or --timeout)."""
        frame, in_port = self.frames.frame(self.next_conn)
        self.next_conn += 1
        self.outstanding[frame] = time.perf_counter()
        self.sent += 1
        self.run.sent_total += 1
        self.packet_in(frame, in_port)

    def pump(self) -> None:
        """Keep the window full."""
        if not self.active:
            return
        run = self.run
        while len(self.outstanding) < run.window and run.may_send() and self.transport is not None:
            self.send_next()

    def expire(self, now: float) -> None:
        """Give up on packet-ins older than --timeout (oldest first) and refill."""
        timeout = self.run.args.timeout
        while self.outstanding:
            frame, sent_at = next(iter(self.outstanding.items()))
            if now - sent_at < timeout:
                break
            del self.outstanding[frame]
            self.timeouts += 1
        self.pump()
        self.flush()

    async def probe(self) -> None:
        """Send a SYN every PROBE_PERIOD until one is released: the controller has this switch in MAIN state."""
        while not self.answered.is_set():
            if self.transport is None:
                raise ConnectionError(f"dpid {self.dpid}: {self.lost or 'not connected'}")
            self.send_next()
            self.flush()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.answered.wait(), PROBE_PERIOD)
        self.outstanding.clear()  # probes sent before the controller was ready are never answered

    def prime(self) -> None:
        """Tell a learning switch where the VIP MAC lives, so it answers every SYN with a flow-mod and a packet-out."""
        _port, mac, ip = self.hosts[0]
        self.packet_in(prime_frame(self.run.args.vip, self.run.args.vport, mac, ip), UPLINK_PORT)
        self.flush()


# --- the run ---------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process from /proc (None when unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` places (None stays None)."""
    return None if value is None else round(value, digits)


async def run_load(args: argparse.Namespace, controller_pid: int | None = None) -> dict[str, Any]:
    """Connect the fake switches, probe, warm up, measure; return the results section of the report."""
    loop = asyncio.get_running_loop()
    run = Run(args)
    switches = [FakeSwitch(run, i) for i in range(args.switches)]
    for sw in switches:
        await asyncio.wait_for(loop.create_connection(lambda sw=sw: sw, args.host, args.port), args.connect_timeout)
    await asyncio.wait_for(asyncio.gather(*(sw.ready for sw in switches)), args.connect_timeout)
    await asyncio.wait_for(asyncio.gather(*(sw.probe() for sw in switches)), args.connect_timeout)
    probes = sum(sw.sent for sw in switches)
    if args.prime:
        for sw in switches:
            sw.prime()
    started = time.perf_counter()
    run.warm_end = started + args.warmup
    run.end = run.warm_end + args.duration
    stop_reason = "duration"

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP_PERIOD)
            now = time.perf_counter()
            for sw in switches:
                sw.expire(now)

    sweeper = asyncio.create_task(sweep())
    for sw in switches:
        sw.active = True
        sw.pump()
        sw.flush()
    cpu_gen = cpu_ctl = cpu_all = None
    try:
        while True:
            now = time.perf_counter()
            if cpu_gen is None and now >= run.warm_end:
                cpu_gen, cpu_ctl, cpu_all = time.process_time(), cpu_seconds(controller_pid), machine_busy_seconds()
            if now >= run.end:
                break
            if not run.may_send() and not any(sw.outstanding for sw in switches):
                stop_reason = "max_packets"
                break
            if any(sw.lost for sw in switches):
                stop_reason = "connection_lost"
                break
            boundary = run.end if cpu_gen is not None else run.warm_end
            await asyncio.sleep(max(0.001, min(SWEEP_PERIOD, boundary - now)))
    finally:
        measured_until = min(time.perf_counter(), run.end)
        if stop_reason != "duration":
            measured_until = max(run.warm_end, min(measured_until, run.last_response))
        gen_cpu_end, ctl_cpu_end, all_cpu_end = time.process_time(), cpu_seconds(controller_pid), machine_busy_seconds()
        run.sending = False
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        for sw in switches:
            if sw.transport is not None:
                sw.transport.close()
    interval = max(0.0, measured_until - run.warm_end)
    whole_seconds = int(interval)

    per_switch = []
    for sw in switches:
        per_switch.append(
            {
                "dpid": sw.dpid,
                "packet_ins_sent": sw.sent,
                "responses": sw.responses,
                "measured_responses": sw.measured,
                "responses_per_s": rounded(sw.measured / interval if interval else 0.0, 1),
                "per_second": sw.per_second[:whole_seconds],
                "latency_ms": latency_summary(sw.latencies),
                "timeouts": sw.timeouts,
                "unmatched_packet_outs": sw.unmatched,
                "flow_mods_by_table": {str(t): n for t, n in sorted(sw.flow_mods_by_table.items())},
                "received": dict(sorted(sw.received.items())),
                "sample_packet_out_actions": sw.sample_actions,
                "lost": sw.lost,
            }
        )
    measured = sum(sw.measured for sw in switches)
    totals_per_second = [
        sum(sw.per_second[s] if s < len(sw.per_second) else 0 for sw in switches) for s in range(whole_seconds)
    ]
    all_latencies = [value for sw in switches for value in sw.latencies]
    gen_cpu = gen_cpu_end - cpu_gen if cpu_gen is not None else None
    ctl_cpu = ctl_cpu_end - cpu_ctl if cpu_ctl is not None and ctl_cpu_end is not None else None
    all_cpu = all_cpu_end - cpu_all if cpu_all is not None and all_cpu_end is not None else None
    other_cpu = all_cpu - (gen_cpu or 0.0) - (ctl_cpu or 0.0) if all_cpu is not None else None

    def util(seconds: float | None) -> float | None:
        return rounded(seconds / interval) if seconds is not None and interval else None

    return {
        "stop_reason": stop_reason,
        "measured_s": round(interval, 3),
        "probe_packet_ins": probes,
        "packet_ins_sent": run.sent_total,
        "measured_responses": measured,
        "responses_per_s": rounded(measured / interval if interval else 0.0, 1),
        "per_second_total": {
            "values": totals_per_second,
            "min": min(totals_per_second, default=None),
            "max": max(totals_per_second, default=None),
            "mean": rounded(sum(totals_per_second) / len(totals_per_second), 1) if totals_per_second else None,
        },
        "flow_mods_per_s": rounded(sum(sw.measured_flow_mods for sw in switches) / interval if interval else 0.0, 1),
        "packet_outs_per_s": rounded(
            sum(sw.measured_packet_outs for sw in switches) / interval if interval else 0.0, 1
        ),
        "latency_ms": latency_summary(all_latencies),
        "timeouts": sum(sw.timeouts for sw in switches),
        "unmatched_packet_outs": sum(sw.unmatched for sw in switches),
        "cpu": {
            "generator_s": rounded(gen_cpu),
            "generator_util": util(gen_cpu),
            "controller_s": rounded(ctl_cpu),
            "controller_util": util(ctl_cpu),
            "machine_util": util(all_cpu),
            "others_util": util(other_cpu),
            "cores": os.cpu_count(),
        },
        "per_switch": per_switch,
    }


def latency_summary(values: list[float]) -> dict[str, Any]:
    """Round-trip packet-in -> packet-out in ms over the measured window."""
    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50)),
        "p90": rounded(percentile(values, 90)),
        "p99": rounded(percentile(values, 99)),
        "mean": rounded(sum(values) / len(values)) if values else None,
        "max": rounded(max(values, default=None)),
    }


# --- launching a controller ------------------------------------------------------------------------------------------


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """Whether some socket listens on TCP ``port`` (read from /proc, so no connection disturbs the controller)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


class Controller:
    """A controller subprocess on free ports: started, awaited until it listens, stopped by its PID."""

    def __init__(self, kind: str, args: argparse.Namespace, workdir: Path) -> None:
        self.kind = kind
        self.args = args
        self.workdir = workdir
        self.port = free_port()
        self.rest_port: int | None = None
        self.log_path = Path(args.controller_log) if args.controller_log else workdir / f"{kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts this controller kind on its port (nlb: writes the matching config first)."""
        if self.kind == "learning":
            return [
                sys.executable,
                "-m",
                "nlb_sdn.framework",
                "--ofp-tcp-listen-port",
                str(self.port),
                "nlb_sdn.apps.learning_switch",
            ]
        self.rest_port = free_port()
        config = nlb_config(self.args, self.rest_port)
        parse_config(config, "ofload")  # a bad --vip/--vport fails here, not in the controller
        path = self.workdir / "nlb.json"
        path.write_text(json.dumps(config, indent=1))
        return [
            sys.executable,
            "-m",
            "nlb_sdn.cli",
            "controller",
            "--config",
            str(path),
            "--ofp-tcp-listen-port",
            str(self.port),
        ]

    def start(self) -> None:
        """Start the controller in its own session; wait until it listens (RuntimeError if it exits or never does)."""
        cmd = self.command()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} controller exited with status {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.kind} controller not listening on {self.port} after {LISTEN_TIMEOUT} s:\n{self.tail()}"
                )
            time.sleep(0.05)
        log(f"ofload: {self.kind} controller pid {self.proc.pid} listening on port {self.port}")

    def stats(self) -> dict[str, Any] | None:
        """The nlb controller's own counters (GET /v1/stats), to check what it made of the packet-ins."""
        if self.rest_port is None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/v1/stats", timeout=5.0) as response:
                stats = json.load(response)
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}
        return {
            key: stats.get(key)
            for key in ("packet_in", "dropped", "refused", "connections", "flow_mod", "packet_out", "errors")
        }

    def stop(self) -> int | None:
        """SIGTERM to the PID, SIGKILL after STOP_TIMEOUT; the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT)

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the controller log (empty if it cannot be read)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def launched(kind: str | None, args: argparse.Namespace) -> Iterator[Controller | None]:
    """A started controller (or None without --launch), always stopped and its temporary files removed."""
    if kind is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix="nlb-ofload-"))
    controller = Controller(kind, args, workdir)
    try:
        controller.start()
        yield controller
    finally:
        status = controller.stop()
        log(f"ofload: {kind} controller stopped (status {status})")
        shutil.rmtree(workdir, ignore_errors=True)


# --- command line ----------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What the figures depend on: date, git commit, CPUs, software versions and machine load."""
    return lab_report.environment(framework=f"{framework.NAME} {framework.VERSION}")


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES, default="throughput")
    p.add_argument("--switches", type=int, default=4, help="fake switches (dpids --dpid-base ..)")
    p.add_argument("--window", type=int, default=32, help="outstanding packet-ins per switch (throughput mode)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds, after --warmup")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--max-packets", type=int, default=1_000_000, help="bound on packet-ins sent, all switches")
    p.add_argument("--timeout", type=float, default=1.0, help="a packet-in unanswered this long (s) frees its slot")
    p.add_argument("--connect-timeout", type=float, default=15.0, help="bound on handshake and first answer (s)")
    p.add_argument("--host", default="127.0.0.1", help="controller address (without --launch)")
    p.add_argument("--port", type=int, default=6653, help="controller OpenFlow port (without --launch)")
    p.add_argument("--launch", choices=LAUNCH_KINDS, help="start this controller on free ports, run, stop it")
    p.add_argument("--controller-log", help="keep the launched controller's log here (default: discarded)")
    p.add_argument("--vip", default="10.0.0.100")
    p.add_argument("--vport", type=int, default=80)
    p.add_argument("--hosts", type=int, default=4, help="attachment ports (in_port 1..N) per switch")
    p.add_argument("--dpid-base", type=int, default=1)
    p.add_argument("--table-id", type=int, default=int(Table.CONNECTIONS), help="packet-in table_id")
    p.add_argument(
        "--cookie",
        type=lambda text: int(text, 0),
        default=make_cookie(CookieKind.BASE, 1),
        help="packet-in cookie (default: nlb_sdn's base cookie, LBU 1)",
    )
    p.add_argument(
        "--reason",
        choices=("no_match", "action"),
        default="no_match",
        help="packet-in reason (OVS reports a hit on an OpenFlow 1.3 table-miss entry as no_match)",
    )
    p.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="do not send the frame from the VIP MAC that lets a learning switch install flows",
    )
    p.add_argument("--out", help="write the JSON report here instead of stdout")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the nlb_sdn config matching these settings (REST on 8080) and exit",
    )
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option values out of range, through ``p.error``."""
    if not 1 <= args.switches <= MAX_SWITCHES:
        p.error(f"--switches must be 1..{MAX_SWITCHES}")
    if not 1 <= args.hosts <= 250:
        p.error("--hosts must be 1..250")
    if args.window < 1 or args.max_packets < 1 or args.duration <= 0 or args.warmup < 0 or args.timeout <= 0:
        p.error("--window and --max-packets must be >= 1, --duration and --timeout > 0, --warmup >= 0")


def summary_line(report: dict[str, Any]) -> str:
    """One line of figures from a report, for the terminal."""
    s, r = report["settings"], report["results"]
    target = s["launch"] or f"{s['host']}:{s['port']}"
    lat = r["latency_ms"]
    cpu = r["cpu"]
    line = (
        f"ofload {s['mode']} {target}: {s['switches']} switches, {r['responses_per_s']:.0f} responses/s "
        f"({r['measured_responses']} in {r['measured_s']:.1f} s), latency p50 {lat['p50']} ms p99 {lat['p99']} ms,"
        f" flow-mods/s {r['flow_mods_per_s']:.0f}, timeouts {r['timeouts']}, stop {r['stop_reason']}"
    )
    if cpu["controller_util"] is not None:
        line += f", cpu controller {cpu['controller_util']:.2f} generator {cpu['generator_util']:.2f}"
    if cpu["others_util"] is not None:
        line += f" others {cpu['others_util']:.2f}"
    return line


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark the options describe; the exit status (0 ok, 1 no responses measured, 2 error)."""
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    if args.print_config:
        config = nlb_config(args, 8080)
        parse_config(config, "ofload")
        print(json.dumps(config, indent=1))
        return 0
    settings = {key: value for key, value in vars(args).items() if key not in ("print_config", "controller_log")}
    settings["window_effective"] = 1 if args.mode == "latency" else args.window
    report: dict[str, Any] = {"benchmark": "ofload", "settings": settings, "environment": environment()}
    try:
        with launched(args.launch, args) as controller:
            if controller is not None:
                args.host, args.port = "127.0.0.1", controller.port
                settings.update(host=args.host, port=args.port)
            results = asyncio.run(run_load(args, controller.proc.pid if controller and controller.proc else None))
            if controller is not None:
                results["controller"] = {
                    "kind": controller.kind,
                    "pid": controller.proc.pid if controller.proc else None,
                    "stats": controller.stats(),
                }
    except (TimeoutError, OSError, RuntimeError) as exc:
        log(f"ofload: error: {type(exc).__name__}: {exc}")
        return 2
    report["results"] = results
    report["environment"]["loadavg_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    log(summary_line(report))
    return 0 if results["measured_responses"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
