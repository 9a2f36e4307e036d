"""Health checks (rise/fall state machine and asyncio probes: TCP, HTTP, UDP request/response, command) and load
sources."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from nlb_sdn.agent.config import (
    CommandCheck,
    CommandLoad,
    ConnectionsLoad,
    FileLoad,
    HealthCheck,
    HttpCheck,
    UdpCheck,
)

HTTP_READ_LIMIT = 64 * 1024
UDP_REPLY_LIMIT = 65535
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_ESTABLISHED = "01"


class CheckState:
    """Rise/fall hysteresis: ``rise`` successes in a row make ``ok``, ``fall`` failures in a row make ``failed``."""

    def __init__(self, rise: int, fall: int) -> None:
        """A check that starts ``unknown``."""
        self.rise = rise
        self.fall = fall
        self.health = "unknown"
        self._successes = 0
        self._failures = 0

    def observe(self, success: bool) -> str:
        """Record one probe result; the health after it (``ok``, ``failed`` or ``unknown``)."""
        if success:
            self._successes, self._failures = self._successes + 1, 0
            if self._successes >= self.rise:
                self.health = "ok"
        else:
            self._successes, self._failures = 0, self._failures + 1
            if self._failures >= self.fall:
                self.health = "failed"
        return self.health


async def probe_tcp(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to (host, port) opens within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class _Reply(asyncio.DatagramProtocol):
    """Waits for the first datagram (or error) on a connected UDP socket."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """The first reply settles the probe."""
        if not self.reply.done():
            self.reply.set_result(data[:UDP_REPLY_LIMIT])

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (port unreachable: nothing listens) fails the probe at once."""
        if not self.reply.done():
            self.reply.set_exception(exc)


async def probe_udp(host: str, port: int, send: bytes, expect: bytes, timeout: float) -> bool:
    """Whether a datagram ``send`` to (host, port) gets a reply starting with ``expect`` within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_datagram_endpoint(_Reply, remote_addr=(host, port))
            try:
                transport.sendto(send)
                reply = await protocol.reply
            finally:
                transport.close()
    except (OSError, TimeoutError):
        return False
    return reply.startswith(expect)


def http_status_ok(response: bytes, expect_status: int, body_contains: str) -> bool:
    """Whether a raw HTTP response has status ``expect_status`` and a body containing ``body_contains``."""
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or parts[1] != str(expect_status).encode():
        return False
    return body_contains.encode() in body


async def probe_http(host: str, port: int, path: str, expect_status: int, body_contains: str, timeout: float) -> bool:
    """Whether ``GET path`` over HTTP/1.0 answers the expected status and body within ``timeout`` seconds."""
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: nlb-sdn-agent\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                response = await _read_rest(reader)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return http_status_ok(response, expect_status, body_contains)


async def _read_rest(reader: asyncio.StreamReader) -> bytes:
    """Read until EOF or :data:`HTTP_READ_LIMIT` bytes."""
    data = b""
    while len(data) < HTTP_READ_LIMIT and (chunk := await reader.read(HTTP_READ_LIMIT - len(data))):
        data += chunk
    return data


async def run_command(argv: list[str], timeout: float) -> tuple[int, bytes] | None:
    """Run ``argv`` (no shell); its exit status and output, or None if it cannot start or outlives ``timeout``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(timeout):
            output, _ = await proc.communicate()
    except TimeoutError:
        return None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None  # communicate() returned: the process has exited
    return proc.returncode, output


async def probe_command(argv: list[str], timeout: float) -> bool:
    """Whether the command exits 0 within ``timeout`` seconds."""
    result = await run_command(argv, timeout)
    return result is not None and result[0] == 0


async def run_check(check: HealthCheck, host: str, port: int) -> bool:
    """Run one probe of ``check`` against the endpoint (host, port)."""
    if isinstance(check, HttpCheck):
        return await probe_http(host, port, check.path, check.expect_status, check.body_contains, check.timeout)
    if isinstance(check, CommandCheck):
        return await probe_command(check.argv, check.timeout)
    if isinstance(check, UdpCheck):
        return await probe_udp(host, port, check.send.encode(), check.expect.encode(), check.timeout)
    return await probe_tcp(host, port, check.timeout)


def count_established(table: str, port: int) -> int:
    """ESTABLISHED sockets whose local port is ``port`` in the text of /proc/net/tcp or /proc/net/tcp6."""
    count = 0
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_ESTABLISHED:
            continue
        _, _, local_port = fields[1].rpartition(":")
        try:
            count += int(local_port, 16) == port
        except ValueError:
            continue
    return count


def established_connections(port: int, tables: tuple[str, ...] = PROC_NET_TCP) -> int:
    """Live ESTABLISHED TCP connections (IPv4 and IPv6) to local port ``port``, from the kernel tables."""
    total = 0
    for path in tables:
        try:
            total += count_established(Path(path).read_text(), port)
        except OSError:
            continue
    return total


def parse_number(text: str) -> float | None:
    """The first token of ``text`` as a finite number >= 0, or None."""
    tokens = text.split()
    try:
        value = float(tokens[0]) if tokens else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


async def sample_load(source: ConnectionsLoad | CommandLoad | FileLoad, port: int) -> float | None:
    """One load reading for an endpoint on local ``port``, or None when the source gives no usable number."""
    if isinstance(source, ConnectionsLoad):
        return float(await asyncio.to_thread(established_connections, port))
    if isinstance(source, CommandLoad):
        result = await run_command(source.argv, source.timeout)
        if result is None or result[0] != 0:
            return None
        return parse_number(result[1].decode("utf-8", "replace"))
    try:
        text = await asyncio.to_thread(Path(source.path).read_text, "utf-8", "replace")
    except OSError:
        return None
    return parse_number(text)
