"""Dump and restore an established IPv4 TCP connection with Linux ``TCP_REPAIR`` (needs CAP_NET_ADMIN).

:func:`dump` freezes a socket: a socket filter that drops every incoming segment (so the peer's data stays
unacknowledged and is retransmitted later, to whoever owns the connection by then), then repair mode (so the socket
sends nothing and closes without FIN or RST). :func:`restore` rebuilds the connection in a new socket;
:func:`resume` unfreezes either of them; :func:`drop_silently` closes a socket without a packet to the peer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any

from nlb_sdn.health.protocol import is_ipv4, is_port
from nlb_sdn.migration.wire import MIGRATE, WireError, sign, verify
from nlb_sdn.signed import SignedVerifier

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_REPAIR_OPTIONS = 22
TCP_TIMESTAMP = 24
TCP_REPAIR_WINDOW = 29
TCP_REPAIR_ON = 1
TCP_REPAIR_OFF = 0
"""Leaving repair mode with 0 sends a window probe, which makes the peer acknowledge at once."""
TCP_NO_QUEUE = 0
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
TCPOPT_MSS = 2
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_TIMESTAMP = 8
TCPI_OPT_TIMESTAMPS = 1
TCPI_OPT_SACK = 2
TCPI_OPT_WSCALE = 4
TCP_ESTABLISHED = 1
TCP_MAX_WSCALE = 14
IP_TRANSPARENT = 19
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
BPF_RET_K = 0x06
_U32 = 0xFFFFFFFF
_TCP_INFO_HEAD = struct.Struct("=8B")
_REPAIR_OPT = struct.Struct("=II")
_INT = struct.Struct("=i")
_U32_VALUE = struct.Struct("=I")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


class RepairError(OSError):
    """A dump or restore step the kernel refused; the message names the step."""

    @classmethod
    def wrap(cls, exc: OSError, step: str) -> RepairError:
        """``exc`` (keeping its errno) with the step that failed."""
        message = f"{step}: {exc.strerror or exc}"
        return cls(exc.errno, message) if exc.errno else cls(message)


@dataclass(frozen=True)
class RepairWindow:
    """``struct tcp_repair_window`` (TCP_REPAIR_WINDOW): the send and receive window state."""

    snd_wl1: int
    snd_wnd: int
    max_window: int
    rcv_wnd: int
    rcv_wup: int

    STRUCT = struct.Struct("=5I")
    FIELDS = ("snd_wl1", "snd_wnd", "max_window", "rcv_wnd", "rcv_wup")

    def pack(self) -> bytes:
        """The kernel struct."""
        return self.STRUCT.pack(*(getattr(self, name) for name in self.FIELDS))


@dataclass(frozen=True)
class ConnectionState:
    """Everything needed to rebuild one established connection in another socket, on this host or another."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    snd_seq: int
    """The sequence number after the last byte queued for sending (``write_seq``)."""
    rcv_seq: int
    """The next sequence number expected from the peer (``rcv_nxt``)."""
    send_queue: bytes
    """Bytes written but not yet acknowledged by the peer (they end at ``snd_seq``)."""
    recv_queue: bytes
    """Bytes received but not yet read by the application (they end at ``rcv_seq``)."""
    mss: int
    wscale_ok: bool
    snd_wscale: int
    rcv_wscale: int
    sack_ok: bool
    timestamp: int | None
    """The TCP_TIMESTAMP clock (our timestamp value) at the dump, or None when timestamps are off."""
    window: RepairWindow

    def to_dict(self) -> dict[str, Any]:
        """A msgpack-ready map (queues as bytes)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "window"}
        data["window"] = {name: getattr(self.window, name) for name in RepairWindow.FIELDS}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ConnectionState:
        """The state in ``data`` (as :meth:`to_dict` makes it), or WireError(``bad_state``) naming the bad field."""
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise WireError("bad_state", "missing or unknown fields")
        for name, check in _FIELD_CHECKS.items():
            if not check(data[name]):
                raise WireError("bad_state", name)
        window = data["window"]
        if (
            not isinstance(window, dict)
            or set(window) != set(RepairWindow.FIELDS)
            or not all(_u32(value) for value in window.values())
        ):
            raise WireError("bad_state", "window")
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name != "window"}
        return cls(**fields, window=RepairWindow(**window))

    def to_wire(self, key: bytes, src: str, seq: int, now: float, migration_id: str) -> bytes:
        """This state as one ``migrate`` message signed with the migration's channel ``key`` (kid: the migration id);
        WireError(``oversized``) over 64 KiB."""
        return sign(key, MIGRATE, src, seq, now, {"id": migration_id, "state": self.to_dict()}, kid=migration_id)

    @classmethod
    def from_wire(cls, data: bytes, verifier: SignedVerifier, now: float) -> tuple[str, ConnectionState]:
        """``(migration_id, state)`` from a signed ``migrate`` message, or WireError with the reason."""
        message = verify(verifier, data, now)
        if message.type != MIGRATE:
            raise WireError("unexpected", message.type)
        return message.body["id"], cls.from_dict(message.body["state"])


def _u32(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _U32


def _wscale(value: Any) -> bool:
    return type(value) is int and 0 <= value <= TCP_MAX_WSCALE


def _flag(value: Any) -> bool:
    return type(value) is bool


_FIELD_CHECKS = {
    "local_ip": is_ipv4,
    "local_port": is_port,
    "remote_ip": is_ipv4,
    "remote_port": is_port,
    "snd_seq": _u32,
    "rcv_seq": _u32,
    "send_queue": lambda value: isinstance(value, bytes),
    "recv_queue": lambda value: isinstance(value, bytes),
    "mss": lambda value: type(value) is int and 1 <= value <= 65535,
    "wscale_ok": _flag,
    "snd_wscale": _wscale,
    "rcv_wscale": _wscale,
    "sack_ok": _flag,
    "timestamp": lambda value: value is None or _u32(value),
}


def _get_u32(sock: socket.socket, option: int) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, option) & _U32


def _set_u32(sock: socket.socket, option: int, value: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, option, _U32_VALUE.pack(value & _U32))


def _ioctl_int(sock: socket.socket, request: int) -> int:
    return _INT.unpack(fcntl.ioctl(sock.fileno(), request, bytes(_INT.size)))[0]


def _attach_drop_filter(sock: socket.socket) -> None:
    """A classic BPF program ``ret #0`` on ``sock``: every incoming segment is discarded before TCP sees it."""
    instructions = (_SockFilter * 1)(_SockFilter(BPF_RET_K, 0, 0, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(1, instructions)))


def _detach_filter(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def _unfreeze_quietly(sock: socket.socket) -> None:
    """Undo a partial :func:`dump`, as far as the kernel lets us."""
    try:
        resume(sock)
    except OSError:
        _detach_filter_quietly(sock)


def _detach_filter_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        _detach_filter(sock)


def _read_queue(sock: socket.socket, queue: int, size: int) -> tuple[int, bytes]:
    """``(sequence number at the queue's end, its bytes)`` of a socket in repair mode."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
    end_seq = _get_u32(sock, TCP_QUEUE_SEQ)
    data = sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT) if size else b""
    if len(data) != size:
        raise RepairError(f"queue {queue}: peeked {len(data)} of {size} bytes")
    return end_seq, data


def dump(sock: socket.socket) -> ConnectionState:
    """Freeze the established ``sock`` (drop filter, repair mode) and capture its state; it stays frozen.

    Afterwards either :func:`drop_silently` (the connection lives on elsewhere) or :func:`resume` (it stays here).
    On RepairError the socket is left as it was (unfrozen).
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    tcp_state, _, _, _, _, options, wscales, _ = _TCP_INFO_HEAD.unpack_from(info)
    if tcp_state != TCP_ESTABLISHED:
        raise RepairError(f"socket is in TCP state {tcp_state}, not established")
    local_ip, local_port = sock.getsockname()[:2]
    remote_ip, remote_port = sock.getpeername()[:2]
    try:
        _attach_drop_filter(sock)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        snd_seq, send_queue = _read_queue(sock, TCP_SEND_QUEUE, _ioctl_int(sock, termios.TIOCOUTQ))
        rcv_seq, recv_queue = _read_queue(sock, TCP_RECV_QUEUE, _ioctl_int(sock, termios.FIONREAD))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        window = RepairWindow(
            *RepairWindow.STRUCT.unpack(
                sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, RepairWindow.STRUCT.size)
            )
        )
        timestamp = _get_u32(sock, TCP_TIMESTAMP) if options & TCPI_OPT_TIMESTAMPS else None
        mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    except OSError as exc:
        _unfreeze_quietly(sock)
        raise RepairError.wrap(exc, "dump") from None
    wscale_ok = bool(options & TCPI_OPT_WSCALE)
    return ConnectionState(
        local_ip=local_ip,
        local_port=local_port,
        remote_ip=remote_ip,
        remote_port=remote_port,
        snd_seq=snd_seq,
        rcv_seq=rcv_seq,
        send_queue=send_queue,
        recv_queue=recv_queue,
        mss=mss,
        wscale_ok=wscale_ok,
        snd_wscale=wscales & 0x0F if wscale_ok else 0,
        rcv_wscale=wscales >> 4 if wscale_ok else 0,
        sack_ok=bool(options & TCPI_OPT_SACK),
        timestamp=timestamp,
        window=window,
    )


def _bind(sock: socket.socket, address: tuple[str, int]) -> None:
    """Bind to ``address``; a non-local address (a VIP this host does not hold) needs IP_TRANSPARENT."""
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL:
            raise
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.bind(address)


def _repair_options(state: ConnectionState) -> bytes:
    """The TCP_REPAIR_OPTIONS array: MSS, window scales, SACK and timestamps as negotiated."""
    options = [(TCPOPT_MSS, state.mss)]
    if state.wscale_ok:
        options.append((TCPOPT_WINDOW, state.snd_wscale | state.rcv_wscale << 16))
    if state.sack_ok:
        options.append((TCPOPT_SACK_PERM, 0))
    if state.timestamp is not None:
        options.append((TCPOPT_TIMESTAMP, 0))
    return b"".join(_REPAIR_OPT.pack(code, value) for code, value in options)


def _fill_queue(sock: socket.socket, queue: int, data: bytes) -> None:
    """Put ``data`` into a queue of a socket in repair mode (nothing is sent)."""
    if data:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        sock.sendall(data)


def restore(state: ConnectionState, leave_repair: bool = True) -> socket.socket:
    """A new socket holding the connection of ``state``, bound to its local address and connected without a SYN.

    Repair mode binds even to a port that a listener holds (the kernel forces the reuse; SO_REUSEADDR would undo it).

    With ``leave_repair`` (the default) the socket is live and sends a window probe; otherwise it stays in repair
    mode until :func:`resume` (or :func:`drop_silently`). On failure the half-built socket is closed without a packet
    and RepairError names the step.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    step = "repair on"
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        step = "sequence numbers"
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        _set_u32(sock, TCP_QUEUE_SEQ, state.snd_seq - len(state.send_queue))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        _set_u32(sock, TCP_QUEUE_SEQ, state.rcv_seq - len(state.recv_queue))
        step = f"bind {state.local_ip}:{state.local_port}"
        _bind(sock, (state.local_ip, state.local_port))
        step = f"connect {state.remote_ip}:{state.remote_port}"
        sock.connect((state.remote_ip, state.remote_port))
        step = "options"
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, _repair_options(state))
        if state.timestamp is not None:
            _set_u32(sock, TCP_TIMESTAMP, state.timestamp)
        step = "queues"
        _fill_queue(sock, TCP_RECV_QUEUE, state.recv_queue)
        _fill_queue(sock, TCP_SEND_QUEUE, state.send_queue)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        step = "window"
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, state.window.pack())
        if leave_repair:
            step = "repair off"
            resume(sock)
    except OSError as exc:
        sock.close()
        raise RepairError.wrap(exc, f"restore: {step}") from None
    return sock


def resume(sock: socket.socket) -> None:
    """Unfreeze ``sock``: remove the drop filter and leave repair mode; the connection carries on from this socket."""
    _detach_filter(sock)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)


def in_repair(sock: socket.socket) -> bool:
    """Whether ``sock`` is in repair mode."""
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR) == TCP_REPAIR_ON


def drop_silently(sock: socket.socket) -> None:
    """Close ``sock`` so that neither FIN nor RST reaches the peer (repair mode on first, when it is not already)."""
    if sock.fileno() < 0:
        return
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    sock.close()
