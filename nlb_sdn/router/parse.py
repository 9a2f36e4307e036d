"""Strict, bounded parsers of a connection's first bytes: an HTTP/1.x request head and a TLS ClientHello.

Both work on a peeked buffer (the bytes stay in the kernel queue) and never raise: each returns the parsed request,
:data:`NEED_MORE` while the buffer is a valid prefix that has not ended yet, or a :class:`ParseError` naming the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from nlb_sdn.config.routing import DNS_LABEL

HTTP_ERRORS = frozenset(
    {
        "not_http",
        "bad_request_line",
        "bad_target",
        "bad_version",
        "bad_header",
        "header_injection",
        "head_too_large",
        "header_too_large",
        "too_many_headers",
        "missing_host",
        "duplicate_host",
        "bad_host",
        "bad_content_length",
        "ambiguous_length",
        "bad_transfer_encoding",
    }
)
"""Reasons of :class:`ParseError` for HTTP heads; all but ``not_http`` deserve a ``400 Bad Request``."""

TLS_ERRORS = frozenset(
    {"not_tls", "bad_record", "not_client_hello", "hello_too_large", "bad_hello", "bad_extension", "bad_sni"}
)
"""Reasons of :class:`ParseError` for TLS ClientHellos."""

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
NOT_VISIBLE = re.compile(rb"[^\x20-\x7e]")
INJECTION = re.compile(rb"[\r\n\x00]")
CONTROL = re.compile(rb"[\x01-\x08\x0a-\x1f\x7f]")
MAX_METHOD = 32
TLS_HANDSHAKE = 22
TLS_CLIENT_HELLO = 1
TLS_MAX_RECORD = 16384
TLS_EXT_SERVER_NAME = 0
HOST_PATTERN = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{1,5})?")
DNS_NAME_PATTERN = re.compile(rf"(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})*")
VERSION_PATTERN = re.compile(rb"HTTP/[0-9]\.[0-9]")
PERCENT_PATTERN = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what the parsers read: head size, one header line, header count, ClientHello size (all bytes)."""

    max_head: int = 8192
    max_header_line: int = 4096
    max_headers: int = 64
    max_hello: int = 16384


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The buffer is a valid prefix of a head that has not ended: peek again once more bytes have arrived."""


NEED_MORE = NeedMore()


@dataclass(frozen=True, slots=True)
class ParseError:
    """The buffer cannot start a request: the reason (one of HTTP_ERRORS or TLS_ERRORS) and a short detail."""

    reason: str
    detail: str = ""

    @property
    def deserves_400(self) -> bool:
        """Whether the client spoke HTTP badly (answer 400) rather than something else (just close)."""
        return self.reason in HTTP_ERRORS and self.reason != "not_http"


class Headers:
    """Request headers in arrival order with case-insensitive lookup; a repeated header keeps every value."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = tuple(items)
        self._index: dict[str, list[str]] = {}
        for name, value in self._items:
            self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``, or ``default``."""
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in arrival order."""
        return list(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed HTTP/1.x request head; ``path`` has dot segments resolved, ``host`` is lower-case without the port."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: Headers
    host: str
    cookies: dict[str, str] = field(default_factory=dict)
    head_length: int = 0


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The routing fields of a TLS ClientHello: the server name (lower-case) and the legacy session id."""

    legacy_version: int
    sni: str | None
    session_id: bytes
    length: int


class _Malformed(Exception):
    """Internal: the parse stops with this reason and detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_request(buffer: bytes, limits: Limits = DEFAULT_LIMITS) -> HttpRequest | ClientHello | NeedMore | ParseError:
    """Parse a connection's first bytes: a TLS ClientHello when they start with a handshake record, else HTTP."""
    if not buffer:
        return NEED_MORE
    if buffer[0] == TLS_HANDSHAKE:
        return parse_client_hello(buffer, limits)
    return parse_http_head(buffer, limits)


def parse_http_head(buffer: bytes, limits: Limits = DEFAULT_LIMITS) -> HttpRequest | NeedMore | ParseError:
    """Parse an HTTP/1.0 or 1.1 request head (up to and including the empty line) at the start of ``buffer``."""
    try:
        return _http_head(bytes(buffer[: limits.max_head]), limits)
    except _Malformed as exc:
        return ParseError(exc.reason, exc.detail)


def _http_head(window: bytes, limits: Limits) -> HttpRequest | NeedMore:
    """The parse of :func:`parse_http_head` on at most ``max_head`` bytes; raises _Malformed."""
    end = window.find(b"\r\n\r\n")
    if end < 0:
        _check_partial_head(window, limits)
        return NEED_MORE
    request_line, *header_lines = window[:end].split(b"\r\n")
    _check_request_line(request_line, True)
    if len(header_lines) > limits.max_headers:
        raise _Malformed("too_many_headers", f"more than {limits.max_headers} headers")
    parsed = [_header_line(line, True, limits) for line in header_lines]
    method, target, version = request_line.decode("ascii").split(" ")
    headers = Headers([header for header in parsed if header is not None])
    host, path, query = _target_parts(method, target, version, headers)
    _check_body_framing(headers)
    return HttpRequest(
        method, target, path, query, version, headers, host, parse_cookies(headers.get_all("cookie")), end + 4
    )


def _check_partial_head(window: bytes, limits: Limits) -> None:
    """Raise once a head that has not ended can no longer become valid (cheap checks, run on every peek)."""
    request_line, crlf, rest = window.partition(b"\r\n")
    _check_request_line(request_line, bool(crlf))
    if crlf:
        lines = rest.split(b"\r\n")
        if len(lines) - 1 + bool(lines[-1].strip(b"\r")) > limits.max_headers:
            raise _Malformed("too_many_headers", f"more than {limits.max_headers} headers")
        if max(map(len, lines)) > limits.max_header_line:
            raise _Malformed("header_too_large", f"a header line is over {limits.max_header_line} bytes")
        if _has_bare_cr_lf_nul(rest[:-1] if rest.endswith(b"\r") else rest):
            raise _Malformed("header_injection", "bare CR, bare LF or NUL in a header")
        _header_line(lines[-1], False, limits)
    if len(window) >= limits.max_head:
        raise _Malformed("head_too_large", f"no end of head within {limits.max_head} bytes")


def _has_bare_cr_lf_nul(data: bytes) -> bool:
    """Whether ``data`` has a NUL, or a CR or LF that is not part of a CRLF."""
    crlf = data.count(b"\r\n")
    return b"\x00" in data or data.count(b"\r") != crlf or data.count(b"\n") != crlf


def _check_request_line(line: bytes, complete: bool) -> None:
    """Raise unless ``line`` is (a prefix of, when not ``complete``) ``method SP target SP HTTP/1.x``."""
    if not complete and line.endswith(b"\r"):
        line = line[:-1]
    if NOT_VISIBLE.search(line):
        raise _Malformed("not_http", "control or non-ASCII byte in the request line")
    method, _, rest = line.partition(b" ")
    if not TOKEN.fullmatch(method) or len(method) > MAX_METHOD:
        raise _Malformed("bad_request_line", "method is not a token")
    if not complete:
        if rest.count(b" ") > 1:
            raise _Malformed("bad_request_line", "more than three parts")
        return
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise _Malformed("bad_request_line", "expected method, target and version separated by single spaces")
    version = parts[2]
    if not VERSION_PATTERN.fullmatch(version):
        raise _Malformed("bad_request_line", "no HTTP version")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise _Malformed("bad_version", f"unsupported version {version.decode()}")


def _header_line(line: bytes, complete: bool, limits: Limits) -> tuple[str, str] | None:
    """The (name, value) of a complete header line; a partial one is checked as far as it goes and gives None."""
    if len(line) > limits.max_header_line:
        raise _Malformed("header_too_large", f"a header line is over {limits.max_header_line} bytes")
    if not complete and line.endswith(b"\r"):
        line = line[:-1]
    if INJECTION.search(line):
        raise _Malformed("header_injection", "bare CR, bare LF or NUL in a header")
    if line[:1] in (b" ", b"\t"):
        raise _Malformed("bad_header", "obsolete line folding")
    name, colon, value = line.partition(b":")
    if not TOKEN.fullmatch(name):
        raise _Malformed("bad_header", "header name is not a token")
    if CONTROL.search(value):
        raise _Malformed("bad_header", "control character in a header value")
    if not complete:
        return None
    if not colon or not name:
        raise _Malformed("bad_header", "header line without a name and a colon")
    return name.decode("ascii"), value.strip(b" \t").decode("latin-1")


def _target_parts(method: str, target: str, version: str, headers: Headers) -> tuple[str, str, str]:
    """The request's (host, normalised path, query), checking the target form and the Host header."""
    hosts = headers.get_all("host")
    if len(hosts) > 1:
        raise _Malformed("duplicate_host", "more than one Host header")
    if not hosts and version == "HTTP/1.1":
        raise _Malformed("missing_host", "HTTP/1.1 request without Host")
    host = hosts[0] if hosts else ""
    if "#" in target or PERCENT_PATTERN.search(target):
        raise _Malformed("bad_target", "fragment or bad percent-encoding in the target")
    if target.startswith("/"):
        raw_path, _, query = target.partition("?")
    elif target == "*" and method == "OPTIONS":
        raw_path, query = "*", ""
    elif method == "CONNECT":
        host, raw_path, query = target, "", ""
    else:
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise _Malformed("bad_target", "target is neither a path nor an http(s) URL")
        authority, slash, path_query = rest.partition("/")
        host = authority
        raw_path, _, query = (slash + path_query or "/").partition("?")
    if not HOST_PATTERN.fullmatch(host) or "@" in host:
        raise _Malformed("bad_host", "malformed host")
    path = raw_path if raw_path in ("*", "") else normalise_path(raw_path)
    return _host_name(host), path, query


def _host_name(host: str) -> str:
    """The host without its port, lower-case."""
    if host.startswith("["):
        return host[: host.index("]") + 1].lower()
    return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def _check_body_framing(headers: Headers) -> None:
    """Raise on a Content-Length or Transfer-Encoding that could make the request's end ambiguous."""
    lengths = headers.get_all("content-length")
    encodings = headers.get_all("transfer-encoding")
    if lengths and encodings:
        raise _Malformed("ambiguous_length", "both Content-Length and Transfer-Encoding")
    if lengths and (len(set(lengths)) > 1 or not all(v.isdigit() and v.isascii() and len(v) <= 18 for v in lengths)):
        raise _Malformed("bad_content_length", "Content-Length is not one decimal number")
    if encodings:
        codings = [c.strip().lower() for value in encodings for c in value.split(",")]
        if codings[-1] != "chunked":
            raise _Malformed("bad_transfer_encoding", "the last transfer coding is not chunked")


def normalise_path(path: str) -> str:
    """``path`` with ``%2e`` decoded to ``.`` and dot segments removed (RFC 3986 §5.2.4), never above ``/``."""
    path = re.sub("%2[eE]", ".", path)
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def parse_cookies(values: list[str]) -> dict[str, str]:
    """The cookies of every Cookie header value (``name=value; ...``); malformed pairs are skipped, first name wins."""
    cookies: dict[str, str] = {}
    for value in values:
        for pair in value.split(";"):
            name, eq, cookie = pair.strip(" \t").partition("=")
            name = name.strip(" \t")
            if not eq or not name or not name.isascii() or not TOKEN.fullmatch(name.encode()):
                continue
            cookie = cookie.strip(" \t")
            if len(cookie) >= 2 and cookie[0] == cookie[-1] == '"':
                cookie = cookie[1:-1]
            cookies.setdefault(name, cookie)
    return cookies


def parse_client_hello(buffer: bytes, limits: Limits = DEFAULT_LIMITS) -> ClientHello | NeedMore | ParseError:
    """Parse the TLS ClientHello at the start of ``buffer`` (it may span several handshake records)."""
    try:
        return _client_hello(bytes(buffer[: limits.max_hello + 1]), limits)
    except _Malformed as exc:
        return ParseError(exc.reason, exc.detail)


def _client_hello(data: bytes, limits: Limits) -> ClientHello | NeedMore:
    """The parse of :func:`parse_client_hello`; raises _Malformed."""
    handshake = bytearray()
    pos = 0
    while True:
        header = data[pos : pos + 5]
        if header[:1] and header[0] != TLS_HANDSHAKE:
            raise _Malformed("not_tls" if pos == 0 else "bad_record", "not a handshake record")
        if len(header) >= 3 and (header[1] != 3 or header[2] > 4):
            raise _Malformed("not_tls" if pos == 0 else "bad_record", "record version is not 3.x")
        if len(header) < 5:
            return _need_more(pos + 5, limits)
        length = int.from_bytes(header[3:5], "big")
        if not 0 < length <= TLS_MAX_RECORD:
            raise _Malformed("bad_record", f"record length {length}")
        fragment = data[pos + 5 : pos + 5 + length]
        _check_handshake_start(bytes(handshake) + fragment, limits)
        if len(fragment) < length:
            return _need_more(pos + 5 + length, limits)
        handshake += fragment
        pos += 5 + length
        if len(handshake) >= 4:
            total = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) > total:
                raise _Malformed("bad_record", "data after the ClientHello in its record")
            if len(handshake) == total:
                return _hello_body(bytes(handshake[4:]), pos)


def _need_more(required: int, limits: Limits) -> NeedMore:
    """NEED_MORE, unless ``required`` bytes are over the ClientHello limit."""
    if required > limits.max_hello:
        raise _Malformed("hello_too_large", f"ClientHello over {limits.max_hello} bytes")
    return NEED_MORE


def _check_handshake_start(handshake: bytes, limits: Limits) -> None:
    """Raise unless the handshake bytes so far start a ClientHello of an acceptable length."""
    if handshake[:1] and handshake[0] != TLS_CLIENT_HELLO:
        raise _Malformed("not_client_hello", f"handshake type {handshake[0]}")
    if len(handshake) >= 4 and int.from_bytes(handshake[1:4], "big") + 4 > limits.max_hello:
        raise _Malformed("hello_too_large", f"ClientHello over {limits.max_hello} bytes")


class _Reader:
    """A bounds-checked cursor over bytes; running off the end raises _Malformed with the given reason."""

    def __init__(self, data: bytes, reason: str) -> None:
        self.data = data
        self.pos = 0
        self.reason = reason

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes."""
        if self.pos + size > len(self.data):
            raise _Malformed(self.reason, "truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint(self, size: int) -> int:
        """The next ``size``-byte big-endian unsigned integer."""
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        """The next length-prefixed vector."""
        return self.take(self.uint(length_size))

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos


def _hello_body(body: bytes, length: int) -> ClientHello:
    """The ClientHello from its handshake body; raises _Malformed."""
    reader = _Reader(body, "bad_hello")
    version = reader.uint(2)
    if version >> 8 != 3:
        raise _Malformed("bad_hello", f"client version {version:#06x}")
    reader.take(32)
    session_id = reader.vector(1)
    if len(session_id) > 32:
        raise _Malformed("bad_hello", "session id over 32 bytes")
    suites = reader.vector(2)
    if not suites or len(suites) % 2:
        raise _Malformed("bad_hello", "bad cipher suite list")
    if not reader.vector(1):
        raise _Malformed("bad_hello", "no compression methods")
    sni: str | None = None
    if reader.remaining:
        extensions = _Reader(reader.vector(2), "bad_extension")
        if reader.remaining:
            raise _Malformed("bad_hello", "bytes after the extensions")
        seen: set[int] = set()
        while extensions.remaining:
            kind = extensions.uint(2)
            data = extensions.vector(2)
            if kind in seen:
                raise _Malformed("bad_extension", f"extension {kind} twice")
            seen.add(kind)
            if kind == TLS_EXT_SERVER_NAME:
                sni = _server_name(data)
    return ClientHello(version, sni, session_id, length)


def _server_name(data: bytes) -> str:
    """The host name of a server_name extension (RFC 6066 §3); raises _Malformed."""
    reader = _Reader(data, "bad_sni")
    names = _Reader(reader.vector(2), "bad_sni")
    if reader.remaining or not names.remaining:
        raise _Malformed("bad_sni", "bad server name list")
    host: str | None = None
    while names.remaining:
        name_type = names.uint(1)
        name = names.vector(2)
        if name_type != 0:
            continue
        if host is not None:
            raise _Malformed("bad_sni", "two host names")
        text = name.decode("ascii", "replace").lower()
        if not DNS_NAME_PATTERN.fullmatch(text):
            raise _Malformed("bad_sni", "host name is not a DNS name")
        host = text
    if host is None:
        raise _Malformed("bad_sni", "no host name")
    return host
