"""ICMP for VIPs: ping to a VIP is answered, ICMP errors about nat connections are relayed with the NAT undone.

A connection's entries rewrite its TCP (or UDP) headers, but an ICMP error about one of its packets quotes that
packet's header, which no flow can rewrite. So table 0 punts them (``flows/icmp.py``) and the controller looks the
connection up by the quoted (protocol, 4-tuple), rewrites the outer and the quoted addresses and ports with their
checksums, and releases the packet toward its destination (table 3):

- an error addressed to the VIP quotes a member's reply (VIP:port -> client:port; a router toward the client could
  not deliver it, "fragmentation needed" for path MTU discovery among others): it goes to the member, quoting
  member:port -> client:port;
- an error a member sends quotes a client's packet (client:port -> member:port): it goes to the client from the VIP,
  quoting client:port -> VIP:port. An error from a member about anything else is released unchanged.

Errors are rare, and every punt goes through the switch's ``control`` meter. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Config, Vip
from nlb_sdn.config.diff import member_diff
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import (
    ETH_HEADER,
    IPPROTO_TCP,
    IPV4_FIXED,
    FrameError,
    checksum_fold,
    internet_checksum,
    mac_bytes,
)
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Connection, ConnKey, Mode
from nlb_sdn.flows import builders, icmp as icmp_flows
from nlb_sdn.flows.icmp import ERROR_TYPES, IPPROTO_ICMP, IcmpEntry, IcmpPunt, IcmpType

IPPROTO_UDP = 17
PROTOCOL_NUMBERS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
"""A VIP's ``protocol`` as the IPv4 protocol number its connections carry."""
L4_CHECKSUM_OFFSET = {IPPROTO_TCP: 16, IPPROTO_UDP: 6}
"""Where the checksum sits in the transport header of the protocols whose connections are tracked."""
ICMP_HEADER_SIZE = 8
"""Type, code, checksum and the 4 bytes before the quoted packet (or an echo's id and sequence)."""
REPLY_TTL = 64
PORT = struct.Struct("!H")
ADDRESS_OFFSETS = (12, 16)
"""Offsets of the source and destination addresses in an IPv4 header."""
Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Quoted:
    """The header an ICMP error quotes: protocol and 4-tuple of the packet it is about, and where it starts."""

    proto: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    offset: int
    """Offset of the quoted IPv4 header in the frame."""


@dataclass(frozen=True, slots=True)
class IcmpFrame:
    """A punted Ethernet/IPv4/ICMP frame, whole, with its outer addresses, ICMP type and quoted header."""

    data: bytes
    src_ip: str
    dst_ip: str
    icmp_type: int
    icmp_offset: int
    quoted: Quoted | None
    """The quoted TCP or UDP header of an error (None for other messages or other quoted protocols)."""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What to change in an ICMP error: outer MACs and addresses, the quoted source and destination endpoints."""

    eth_src: str | None = None
    eth_dst: str | None = None
    outer_src: str | None = None
    outer_dst: str | None = None
    quoted_src: Endpoint | None = None
    quoted_dst: Endpoint | None = None


def is_icmp_frame(data: bytes) -> bool:
    """Whether a frame is IPv4 carrying ICMP (untagged), without parsing it."""
    return len(data) > ETH_HEADER.size + 9 and data[12:14] == b"\x08\x00" and data[ETH_HEADER.size + 9] == IPPROTO_ICMP


def _ipv4_header(data: bytes, offset: int, end: int) -> tuple[int, int, str, str, int]:
    """Header length, protocol, source, destination and fragment bits (offset and more-fragments) of the IPv4
    header at ``offset`` (FrameError if bad)."""
    if end < offset + IPV4_FIXED.size:
        raise FrameError("short_icmp")
    ver_ihl, _tos, _len, _ident, frag, _ttl, proto, _csum, src, dst = IPV4_FIXED.unpack_from(data, offset)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < IPV4_FIXED.size or end < offset + ihl:
        raise FrameError("bad_ipv4_header")
    return ihl, proto, socket.inet_ntoa(src), socket.inet_ntoa(dst), frag & 0x3FFF


def parse_icmp(data: bytes) -> IcmpFrame:
    """Parse a whole Ethernet/IPv4/ICMP frame (FrameError naming the drop reason otherwise)."""
    if not is_icmp_frame(data) or len(data) < ETH_HEADER.size + IPV4_FIXED.size:
        raise FrameError("short_icmp")
    (ip_len,) = PORT.unpack_from(data, ETH_HEADER.size + 2)
    end = ETH_HEADER.size + ip_len
    if end > len(data):
        raise FrameError("icmp_truncated")
    ihl, _proto, src_ip, dst_ip, fragment = _ipv4_header(data, ETH_HEADER.size, end)
    if fragment:
        raise FrameError("ip_fragment")
    icmp_offset = ETH_HEADER.size + ihl
    if end < icmp_offset + ICMP_HEADER_SIZE:
        raise FrameError("short_icmp")
    icmp_type = data[icmp_offset]
    quoted = _quoted(data, icmp_offset + ICMP_HEADER_SIZE, end) if icmp_type in ERROR_TYPES else None
    return IcmpFrame(data[:end], src_ip, dst_ip, icmp_type, icmp_offset, quoted)


def _quoted(data: bytes, offset: int, end: int) -> Quoted | None:
    """The quoted TCP or UDP header of an ICMP error (None for another protocol, or a fragment without it)."""
    ihl, proto, src_ip, dst_ip, fragment = _ipv4_header(data, offset, end)
    if proto not in L4_CHECKSUM_OFFSET or fragment & 0x1FFF:
        return None
    if end < offset + ihl + 4:
        raise FrameError("short_icmp_quote")
    src_port, dst_port = struct.unpack_from("!HH", data, offset + ihl)
    return Quoted(proto, src_ip, src_port, dst_ip, dst_port, offset)


def _adjusted(checksum: int, old: bytes, new: bytes) -> int:
    """An Internet checksum updated for 16-bit words ``old`` replaced by ``new`` (RFC 1624, eqn. 3)."""
    total = ~checksum & 0xFFFF
    for (was,), (now,) in zip(struct.iter_unpack("!H", old), struct.iter_unpack("!H", new), strict=True):
        total += (~was & 0xFFFF) + now
    return checksum_fold(total)


def _set_ipv4_checksum(buf: bytearray, offset: int) -> None:
    """Recompute the checksum of the IPv4 header at ``offset``."""
    ihl = (buf[offset] & 0x0F) * 4
    buf[offset + 10 : offset + 12] = b"\x00\x00"
    PORT.pack_into(buf, offset + 10, internet_checksum(bytes(buf[offset : offset + ihl])))


def _set_icmp_checksum(buf: bytearray, icmp_offset: int) -> None:
    """Recompute the checksum of the whole ICMP message from ``icmp_offset`` to the end."""
    buf[icmp_offset + 2 : icmp_offset + 4] = b"\x00\x00"
    PORT.pack_into(buf, icmp_offset + 2, internet_checksum(bytes(buf[icmp_offset:])))


def _rewrite_quoted(buf: bytearray, quoted: Quoted, end: int, which: int, endpoint: Endpoint) -> None:
    """Set the quoted source (``which`` 0) or destination (1) endpoint, fixing its IPv4 and transport checksums."""
    ihl = (buf[quoted.offset] & 0x0F) * 4
    address_at, port_at = quoted.offset + ADDRESS_OFFSETS[which], quoted.offset + ihl + 2 * which
    old = bytes(buf[address_at : address_at + 4]) + bytes(buf[port_at : port_at + 2])
    new = socket.inet_aton(endpoint[0]) + PORT.pack(endpoint[1])
    buf[address_at : address_at + 4], buf[port_at : port_at + 2] = new[:4], new[4:]
    _set_ipv4_checksum(buf, quoted.offset)
    checksum_at = quoted.offset + ihl + L4_CHECKSUM_OFFSET[quoted.proto]
    if checksum_at + 2 <= end:
        (checksum,) = PORT.unpack_from(buf, checksum_at)
        if checksum or quoted.proto != IPPROTO_UDP:  # a UDP checksum of 0 means none
            PORT.pack_into(buf, checksum_at, _adjusted(checksum, old, new) or 0xFFFF)


def rewrite_error(frame: IcmpFrame, change: Rewrite) -> bytes:
    """The frame of an ICMP error with ``change`` applied and every checksum it touches recomputed."""
    buf, ip_at = bytearray(frame.data), ETH_HEADER.size
    if change.eth_dst is not None:
        buf[0:6] = mac_bytes(change.eth_dst)
    if change.eth_src is not None:
        buf[6:12] = mac_bytes(change.eth_src)
    for which, address in enumerate((change.outer_src, change.outer_dst)):
        if address is not None:
            at = ip_at + ADDRESS_OFFSETS[which]
            buf[at : at + 4] = socket.inet_aton(address)
    _set_ipv4_checksum(buf, ip_at)
    if frame.quoted is not None:
        for which, endpoint in enumerate((change.quoted_src, change.quoted_dst)):
            if endpoint is not None:
                _rewrite_quoted(buf, frame.quoted, len(buf), which, endpoint)
    _set_icmp_checksum(buf, frame.icmp_offset)
    return bytes(buf)


def echo_reply(frame: IcmpFrame, vip_mac: str) -> bytes:
    """The echo reply to an echo request for a VIP: addresses swapped, from the VIP's MAC, same id, sequence, data."""
    buf, ip_at = bytearray(frame.data), ETH_HEADER.size
    buf[0:12] = frame.data[6:12] + mac_bytes(vip_mac)
    src, dst = ip_at + ADDRESS_OFFSETS[0], ip_at + ADDRESS_OFFSETS[1]
    buf[src : src + 4], buf[dst : dst + 4] = frame.data[dst : dst + 4], frame.data[src : src + 4]
    buf[ip_at + 8] = REPLY_TTL
    _set_ipv4_checksum(buf, ip_at)
    buf[frame.icmp_offset], buf[frame.icmp_offset + 1] = IcmpType.ECHO_REPLY, 0
    _set_icmp_checksum(buf, frame.icmp_offset)
    return bytes(buf)


def _ipv4(address: str) -> bool:
    """Whether a validated address is IPv4 (the ICMP entries are ICMPv4)."""
    return ":" not in address


def member_edges(config: Config) -> dict[str, int]:
    """The dpid of the edge switch of every fabric host, by address."""
    dpids = {switch.name: switch.dpid for switch in config.fabric.switches}
    return {str(host.ip): dpids[host.switch] for host in config.fabric.hosts if host.switch in dpids}


@functools.lru_cache(maxsize=256)
def _vip_entries(address: str, answer_ping: bool, relay_errors: bool, members: tuple[str, ...]) -> frozenset[IcmpEntry]:
    """The entries one VIP service asks for, ``members`` being its members' addresses punted on this switch;
    remembered, so an unchanged VIP's set is the very same object from one config to the next."""
    entries: set[IcmpEntry] = set()
    if answer_ping:
        entries.add(IcmpEntry(IcmpPunt.ECHO_TO_VIP, address, IcmpType.ECHO_REQUEST))
    if relay_errors:
        for icmp_type in ERROR_TYPES:
            entries.add(IcmpEntry(IcmpPunt.ERROR_TO_VIP, address, icmp_type))
            entries.update(IcmpEntry(IcmpPunt.ERROR_FROM_MEMBER, member, icmp_type) for member in members)
    return frozenset(entries)


def entries_of(vip: Vip, dpid: int | None, edges: dict[str, int]) -> frozenset[IcmpEntry]:
    """The ICMP punt entries one VIP service asks of switch ``dpid`` (none for an IPv6 one)."""
    address = str(vip.address)
    if not _ipv4(address):
        return frozenset()
    relay = vip.icmp.relay_errors and Mode(vip.mode) == Mode.NAT
    addresses = [str(member.address) for member in vip.members] if relay else []  # of the VIP's family
    members = tuple(address for address in addresses if edges.get(address, dpid) == dpid)
    return _vip_entries(address, vip.icmp.answer_ping, relay, members)


def vip_entries(config: Config, dpid: int | None) -> dict[str, frozenset[IcmpEntry]]:
    """Per VIP service name, the ICMP punt entries it asks of switch ``dpid`` (see ``wanted_entries``)."""
    edges = member_edges(config)
    return {vip.name: entries_of(vip, dpid, edges) for vip in config.vips}


def same_entries(old: Vip, new: Vip) -> bool:
    """Whether two models of a VIP service ask for the same ICMP entries in the same fabric (a weight change does)."""
    if old is new:
        return True
    if (old.address, old.mode, old.icmp) != (new.address, new.mode, new.icmp):
        return False
    diff = member_diff(old, new)
    return not diff.added and not diff.removed and all(was.address == now.address for was, now in diff.changed)


def wanted_entries(config: Config, dpid: int | None = None) -> frozenset[IcmpEntry]:
    """The ICMP punt entries a config asks of switch ``dpid`` (``vips[].icmp``): echo to VIPs and errors to nat VIPs
    on every switch; errors from a nat VIP's member only on its edge switch (anywhere when the fabric does not list
    it), so an error that goes on unchanged is punted once, not at every switch on its way."""
    return frozenset().union(*vip_entries(config, dpid).values())


class IcmpResponder(Manager):
    """Owns table 0's ICMP punt entries; answers echo requests to VIPs and relays ICMP errors of nat connections."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx
        self._last: dict[int | None, tuple[Config, dict[str, frozenset[IcmpEntry]]]] = {}
        """Per switch, the last config compared and its entries (the next change's old config is that one)."""

    def _before(self, config: Config, dpid: int) -> dict[str, frozenset[IcmpEntry]]:
        """``vip_entries`` of ``config`` for one switch, reusing the last change's when ``config`` is that one."""
        last = self._last.get(dpid)
        if last is not None and last[0] is config:
            return last[1]
        return vip_entries(config, dpid)

    def _after(
        self, old: Config, new: Config, dpid: int, before: dict[str, frozenset[IcmpEntry]]
    ) -> dict[str, frozenset[IcmpEntry]]:
        """``vip_entries`` of ``new``, taking an unchanged VIP service's entries from ``before`` (no member pass)."""
        if not (old.fabric is new.fabric or old.fabric == new.fabric):
            return vip_entries(new, dpid)
        olds = {vip.name: vip for vip in old.vips}
        edges: dict[str, int] | None = None
        after: dict[str, frozenset[IcmpEntry]] = {}
        for vip in new.vips:
            was = olds.get(vip.name)
            if was is not None and vip.name in before and same_entries(was, vip):
                after[vip.name] = before[vip.name]
                continue
            edges = member_edges(new) if edges is None else edges
            after[vip.name] = entries_of(vip, dpid, edges)
        return after

    def switch_flows(self, dpid: int) -> list[Any]:
        """The punt entries of the current config (remembered: the next change compares against them)."""
        config = self.ctx.config
        per_vip = self._before(config, dpid)
        self._last[dpid] = (config, per_vip)
        entries = frozenset().union(*per_vip.values())
        return [icmp_flows.icmp_flow(self.ctx.lbu_id, entry) for entry in sorted(entries)]

    def changes(self, dpid: int, old: Config, new: Config) -> list[Any]:
        """Adds of the entries ``new`` asks of a switch and ``old`` did not, then deletes of those it no longer asks.

        Only VIP services whose entries changed are compared (a weight change compares none): the sets of unchanged
        ones are the same objects (``_vip_entries`` remembers them), so a change of one member of a VIP of 20,000
        costs no pass over 60,000 entries.
        """
        before = self._before(old, dpid)
        after = self._after(old, new, dpid, before)
        self._last[dpid] = (new, after)
        changed = [name for name in before.keys() | after.keys() if before.get(name) is not after.get(name)]
        if not changed:
            return []
        empty: frozenset[IcmpEntry] = frozenset()
        gone = frozenset().union(*(before.get(name, empty) - after.get(name, empty) for name in changed))
        came = frozenset().union(*(after.get(name, empty) - before.get(name, empty) for name in changed))
        still = list(after.values())
        deletes = sorted(entry for entry in gone if not any(entry in entries for entries in still))
        adds = [icmp_flows.icmp_flow(self.ctx.lbu_id, entry) for entry in sorted(came)]
        return adds + [icmp_flows.icmp_flow_delete(entry) for entry in deletes]

    def packet_in(self, dpid: int, in_port: int, data: bytes, out: Out) -> None:
        """A punted ICMP packet: answer an echo request, relay an error, or count why not."""
        counters = self.ctx.counters
        try:
            frame = parse_icmp(data)
        except FrameError as exc:
            counters.dropped[exc.reason] += 1
            return
        to_vip = self.ctx.vips.vip_mac(frame.dst_ip) is not None
        if frame.icmp_type == IcmpType.ECHO_REQUEST and to_vip:
            self._echo(frame, dpid, in_port, out)
        elif frame.icmp_type in ERROR_TYPES and to_vip:
            self._error_to_vip(frame, dpid, out)
        elif frame.icmp_type in ERROR_TYPES:
            self._error_from_member(frame, dpid, out)
        else:
            counters.dropped["icmp_unexpected"] += 1

    def _echo(self, frame: IcmpFrame, dpid: int, in_port: int, out: Out) -> None:
        """Answer an echo request to a VIP address whose VIP services (any of them) answer ping."""
        vip = next((vip for vip in self._vips_at(frame.dst_ip) if vip.icmp.answer_ping), None)
        if vip is None:
            self.ctx.counters.dropped["icmp_echo_off"] += 1
            return
        self.ctx.counters.packet_in["icmp_echo"] += 1
        out.send(dpid, [builders.packet_out_port(in_port, echo_reply(frame, vip.mac))])

    def _error_to_vip(self, frame: IcmpFrame, dpid: int, out: Out) -> None:
        """An error about a member's reply (VIP -> client): to the member, quoting member -> client."""
        quoted = frame.quoted
        conn = None
        if quoted is not None and quoted.src_ip == frame.dst_ip:
            conn = self.connection(quoted.proto, (quoted.dst_ip, quoted.dst_port, quoted.src_ip, quoted.src_port))
        if conn is None:
            self.ctx.counters.dropped["icmp_no_connection"] += 1
            return
        route = conn.route
        change = Rewrite(
            eth_dst=route.member_mac,
            outer_dst=route.member_address,
            quoted_src=(route.member_address, route.member_port),
        )
        self.ctx.counters.packet_in["icmp_error"] += 1
        out.send(dpid, [icmp_flows.forward_packet_out(rewrite_error(frame, change))])

    def _error_from_member(self, frame: IcmpFrame, dpid: int, out: Out) -> None:
        """An error a member sends about a client's packet (client -> member): to the client from the VIP, quoting
        client -> VIP. Errors about anything else go on unchanged."""
        conn = self._member_connection(frame.quoted) if frame.quoted is not None else None
        if conn is None:
            self.ctx.counters.packet_in["icmp_passed"] += 1
            out.send(dpid, [icmp_flows.forward_packet_out(frame.data)])
            return
        route = conn.route
        change = Rewrite(
            eth_src=route.vip_mac,
            outer_src=route.vip_ip if frame.src_ip == route.member_address else None,
            quoted_dst=(route.vip_ip, route.vip_port),
        )
        self.ctx.counters.packet_in["icmp_error"] += 1
        out.send(dpid, [icmp_flows.forward_packet_out(rewrite_error(frame, change))])

    def _member_connection(self, quoted: Quoted) -> Connection | None:
        """The nat connection whose client -> member packet an error quotes (each VIP service is a candidate)."""
        for state in self.ctx.vips:
            key = (quoted.src_ip, quoted.src_port, str(state.vip.address), state.vip.port)
            conn = self.connection(quoted.proto, key)
            if conn is not None and (conn.route.member_address, conn.route.member_port) == (
                quoted.dst_ip,
                quoted.dst_port,
            ):
                return conn
        return None

    def connection(self, proto: int, key: ConnKey) -> Connection | None:
        """The tracked nat connection of a (protocol, client -> VIP 4-tuple) whose VIP relays errors, if any."""
        conn = self.ctx.table.get(key)
        if conn is None or conn.mode != Mode.NAT:
            return None
        state = self.ctx.vips.by_name(conn.vip)
        if state is None or not state.vip.icmp.relay_errors:
            return None
        return conn if PROTOCOL_NUMBERS.get(str(state.vip.protocol)) == proto else None

    def _vips_at(self, address: str) -> Iterator[Vip]:
        """The VIP services at one address."""
        return (state.vip for state in self.ctx.vips if str(state.vip.address) == address)
