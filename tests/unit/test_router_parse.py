"""The request router's parsers: HTTP/1.x heads and TLS ClientHellos, strict and bounded, never raising."""

from __future__ import annotations

import os
import random
import ssl
import struct

import pytest

from nlb_sdn.router.parse import (
    HTTP_ERRORS,
    NEED_MORE,
    TLS_ERRORS,
    ClientHello,
    Headers,
    HttpRequest,
    Limits,
    ParseError,
    normalise_path,
    parse_client_hello,
    parse_cookies,
    parse_http_head,
    parse_request,
)
from tests.lib.router import client_hello

GOOD_HEAD = (
    b"GET /api/v1/items?id=7 HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nUser-Agent: test\r\n"
    b'Cookie: NLBSESS=abc123; theme="dark"\r\nX-Tag: one\r\nx-tag: two\r\nCookie: late=1\r\n\r\n'
)


class TestHttp:
    """HTTP/1.x heads: their fields, normalised paths, errors and size limits."""

    def test_full_head(self) -> None:
        request = parse_http_head(GOOD_HEAD + b"body bytes")
        assert isinstance(request, HttpRequest)
        assert (request.method, request.target, request.path, request.query, request.version) == (
            "GET",
            "/api/v1/items?id=7",
            "/api/v1/items",
            "id=7",
            "HTTP/1.1",
        )
        assert request.host == "shop.example.com"
        assert request.headers.get("HOST") == "Shop.Example.com:8080"
        assert request.headers.get_all("x-tag") == ["one", "two"]
        assert "user-agent" in request.headers and len(request.headers) == 6
        assert request.cookies == {"NLBSESS": "abc123", "theme": "dark", "late": "1"}
        assert request.head_length == len(GOOD_HEAD)

    def test_every_prefix_needs_more(self) -> None:
        for cut in range(len(GOOD_HEAD)):
            assert parse_http_head(GOOD_HEAD[:cut]) is NEED_MORE, cut

    def test_http_10_without_host(self) -> None:
        request = parse_http_head(b"POST /form HTTP/1.0\r\nContent-Length: 3\r\n\r\n")
        assert isinstance(request, HttpRequest) and request.host == "" and request.method == "POST"

    @pytest.mark.parametrize(
        "target,path",
        [
            ("/static/../api/x", "/api/x"),
            ("/a/./b/", "/a/b/"),
            ("/..", "/"),
            ("/a/%2e%2E/b", "/b"),
            ("/", "/"),
            ("/a/b/..", "/a/"),
            ("//x", "//x"),
        ],
    )
    def test_paths_are_normalised(self, target: str, path: str) -> None:
        assert normalise_path(target) == path
        request = parse_http_head(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert isinstance(request, HttpRequest) and request.path == path

    def test_absolute_form_takes_host_from_target(self) -> None:
        request = parse_http_head(b"GET http://API.example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n")
        assert isinstance(request, HttpRequest)
        assert (request.host, request.path, request.query) == ("api.example.com", "/x", "y")

    def test_ipv6_host(self) -> None:
        request = parse_http_head(b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n")
        assert isinstance(request, HttpRequest) and request.host == "[2001:db8::1]"

    @pytest.mark.parametrize(
        "head,reason",
        [
            (b"\x00\x01\x02garbage\r\n\r\n", "not_http"),
            (b"\xff\xfe binary", "not_http"),
            (b"SSH-2.0-OpenSSH_9.2\r\n", "bad_request_line"),
            (b"GET /\r\n\r\n", "bad_request_line"),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_line"),
            (b"G(T / HTTP/1.1\r\n\r\n", "bad_request_line"),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "bad_version"),
            (b"GET / FOO/1.1\r\n\r\n", "bad_request_line"),
            (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", "bad_target"),
            (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", "bad_target"),
            (b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", "bad_target"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", "bad_header"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", "bad_header"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", "bad_header"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "bad_header"),
            (b"GET / HTTP/1.1\r\nHost: a\nX-Injected: 1\r\n\r\n", "header_injection"),
            (b"GET / HTTP/1.1\r\nHost: a\rX-Injected: 1\r\n\r\n", "header_injection"),
            (b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", "header_injection"),
            (b"GET / HTTP/1.1\r\n\r\n", "missing_host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate_host"),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "bad_host"),
            (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", "bad_host"),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "ambiguous_length",
            ),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "bad_content_length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "bad_content_length"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "bad_transfer_encoding"),
        ],
    )
    def test_errors(self, head: bytes, reason: str) -> None:
        result = parse_http_head(head)
        assert isinstance(result, ParseError) and result.reason == reason, result
        assert result.deserves_400 is (reason != "not_http")

    def test_errors_are_found_before_the_head_ends(self) -> None:
        for partial in (b"\x00", b"GET / HTTP/1.1\r\nHost: a\nX", b"GET / HTTP/1.1\r\nBad Name", b"GET / H T"):
            result = parse_http_head(partial)
            assert isinstance(result, ParseError), partial

    def test_head_size_limit(self) -> None:
        limits = Limits(max_head=1024, max_header_line=4096)
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000
        assert parse_http_head(head[:1000], limits) is NEED_MORE
        result = parse_http_head(head, limits)
        assert isinstance(result, ParseError) and result.reason == "head_too_large"
        assert isinstance(parse_http_head(head + b"\r\n\r\n", limits), ParseError)

    def test_header_line_limit(self) -> None:
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 5000 + b"\r\n\r\n"
        result = parse_http_head(head, Limits(max_head=16384))
        assert isinstance(result, ParseError) and result.reason == "header_too_large"
        assert isinstance(parse_http_head(head, Limits(max_head=16384, max_header_line=8192)), HttpRequest)

    def test_header_count_limit(self) -> None:
        limits = Limits(max_headers=4)
        head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(3))
        assert parse_http_head(head, limits) is NEED_MORE
        assert isinstance(parse_http_head(head + b"\r\n", limits), HttpRequest)
        result = parse_http_head(head + b"X-4: v\r\n", limits)
        assert isinstance(result, ParseError) and result.reason == "too_many_headers"

    def test_cookies(self) -> None:
        assert parse_cookies(['a=1; b=2;c="three"', "a=ignored; =x; bad name=1; noeq; d="]) == {
            "a": "1",
            "b": "2",
            "c": "three",
            "d": "",
        }

    def test_headers_mapping(self) -> None:
        headers = Headers([("A", "1"), ("a", "2"), ("B", "3")])
        assert headers.get("a") == "1" and headers.get_all("A") == ["1", "2"] and headers.get("c", "-") == "-"
        assert list(headers) == [("A", "1"), ("a", "2"), ("B", "3")] and 5 not in headers


class TestTls:
    """TLS ClientHellos: SNI and session id, handshakes split over records, errors and size limits."""

    def test_client_hello(self) -> None:
        data = client_hello("WWW.Example.com", session_id=b"\xaa" * 32)
        hello = parse_client_hello(data + b"trailing application data")
        assert isinstance(hello, ClientHello)
        assert (hello.sni, hello.session_id, hello.legacy_version, hello.length) == (
            "www.example.com",
            b"\xaa" * 32,
            0x0303,
            len(data),
        )
        assert parse_request(data) == hello

    def test_real_client_hello(self) -> None:
        context = ssl.create_default_context()
        outgoing = ssl.MemoryBIO()
        client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="Shop.Example.com")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        data = outgoing.read()
        hello = parse_client_hello(data)
        assert isinstance(hello, ClientHello) and hello.sni == "shop.example.com" and hello.length == len(data)
        assert len(hello.session_id) in (0, 32)
        for cut in (1, 5, len(data) // 2, len(data) - 1):
            assert parse_client_hello(data[:cut]) is NEED_MORE

    def test_without_sni_or_session(self) -> None:
        hello = parse_client_hello(client_hello(None))
        assert isinstance(hello, ClientHello) and hello.sni is None and hello.session_id == b""

    def test_every_prefix_needs_more(self) -> None:
        data = client_hello(session_id=b"\x01" * 16)
        for cut in range(1, len(data)):
            assert parse_client_hello(data[:cut]) is NEED_MORE, cut

    def test_handshake_split_over_records(self) -> None:
        for split in (2, 4, 50):
            data = client_hello("a.example", session_id=b"\x05" * 8, record_split=split)
            hello = parse_client_hello(data)
            assert isinstance(hello, ClientHello), split
            assert hello.sni == "a.example" and hello.length == len(data)
            assert parse_client_hello(data[:-1]) is NEED_MORE

    @pytest.mark.parametrize(
        "data,reason",
        [
            (b"\x17\x03\x03\x00\x05hello", "not_tls"),
            (b"\x16\x02\x00\x00\x05", "not_tls"),
            (b"\x16\x03\x01\x00\x00", "bad_record"),
            (b"\x16\x03\x01\x40\x01", "bad_record"),
            (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not_client_hello"),
            (b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", "bad_hello"),
            (b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x02\x00", "bad_hello"),
        ],
    )
    def test_errors(self, data: bytes, reason: str) -> None:
        result = parse_client_hello(data)
        assert isinstance(result, ParseError) and result.reason == reason, result
        assert not result.deserves_400

    def test_bad_extensions(self) -> None:
        duplicate = struct.pack("!HH", 5, 0) * 2
        result = parse_client_hello(client_hello(extra_extensions=duplicate))
        assert isinstance(result, ParseError) and result.reason == "bad_extension"
        for name in ("bad name", "trailing.dot.", "x" * 70 + ".com"):
            result = parse_client_hello(client_hello(name))
            assert isinstance(result, ParseError) and result.reason == "bad_sni", name
        two_names = b"\x00\x01a\x00\x01b"
        sni = struct.pack("!H", len(two_names.replace(b"\x01", b"\x00\x01"))) + two_names.replace(b"\x01", b"\x00\x01")
        result = parse_client_hello(client_hello(None, extra_extensions=struct.pack("!HH", 0, len(sni)) + sni))
        assert isinstance(result, ParseError) and result.reason == "bad_sni"

    def test_size_limit(self) -> None:
        padding = struct.pack("!HH", 21, 3000) + bytes(3000)
        data = client_hello(extra_extensions=padding)
        assert isinstance(parse_client_hello(data), ClientHello)
        result = parse_client_hello(data, Limits(max_hello=2048))
        assert isinstance(result, ParseError) and result.reason == "hello_too_large"
        result = parse_client_hello(data[:100], Limits(max_hello=2048))
        assert isinstance(result, ParseError) and result.reason == "hello_too_large"


FUZZ_CASES = 3000


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few random byte flips, cuts, duplications or insertions."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        position = rng.randrange(len(buffer) + 1)
        if kind == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] = rng.randrange(256)
        elif kind == 1:
            del buffer[position : position + rng.randint(1, 16)]
        elif kind == 2:
            buffer[position:position] = rng.choice([b"\r", b"\n", b"\x00", b" ", b":", b"\r\n", b"\r\n\r\n", b"\xff"])
        elif kind == 3:
            buffer[position:position] = buffer[position : position + rng.randint(1, 64)] * rng.randint(1, 8)
        else:
            buffer = buffer[:position]
    return bytes(buffer)


def test_fuzz_only_documented_results() -> None:
    """Random and mutated inputs: nothing raises, and only parsed requests, NEED_MORE or a known error come out."""
    rng = random.Random(5)
    seeds = [
        GOOD_HEAD,
        client_hello(session_id=b"\x01" * 32),
        client_hello(record_split=7),
        b"POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    ]
    small = Limits(max_head=512, max_header_line=128, max_headers=4, max_hello=600)
    for case in range(FUZZ_CASES):
        if case % 3 == 0:
            data = os.urandom(rng.randrange(0, 300)) if case % 2 else bytes(rng.randrange(256) for _ in range(40))
        else:
            data = mutate(rng, rng.choice(seeds))
        for limits in (Limits(), small):
            for result in (
                parse_request(data, limits),
                parse_http_head(data, limits),
                parse_client_hello(data, limits),
            ):
                assert result is NEED_MORE or isinstance(result, (HttpRequest, ClientHello, ParseError)), data
                if isinstance(result, ParseError):
                    assert result.reason in HTTP_ERRORS | TLS_ERRORS, result
