"""Properties of the request router's head parsers (``nlb_sdn.router.parse``) on arbitrary and generated input.

Any bytes give a request, NEED_MORE or the parser's own ParseError with a known reason, never an exception; an HTTP
head or a TLS ClientHello built from generated fields parses to those fields, and every proper prefix of it needs more.
"""

from __future__ import annotations

from hypothesis import given, strategies as st

from nlb_sdn.router.parse import (
    HTTP_ERRORS,
    NEED_MORE,
    TLS_ERRORS,
    ClientHello,
    HttpRequest,
    Limits,
    NeedMore,
    ParseError,
    parse_client_hello,
    parse_http_head,
    parse_request,
)
from tests.lib.properties import PROPERTY
from tests.lib.router import client_hello

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~!$&'()*+,;=:@"
"""Path characters without ``.``, ``%`` and ``/``, so a generated path is already normal."""
VALUE_CHARS = "".join(map(chr, range(0x21, 0x7F)))
LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "cookie"}

HTTP_SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b'POST /x?y=1 HTTP/1.0\r\nContent-Length: 3\r\nCookie: a=b; c="d"\r\n\r\n',
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET http://Example.com/a/../b/%2e/c HTTP/1.1\r\nHost: x\r\n\r\n",
]
TLS_SEEDS = [
    client_hello(),
    client_hello(None, session_id=b"\x01" * 32),
    client_hello("a.example", record_split=9),
    client_hello("x.example", extra_extensions=b"\x00\x10\x00\x00"),
]


edits = st.lists(
    st.tuples(st.floats(0, 1), st.sampled_from(["set", "insert", "delete"]), st.binary(min_size=1, max_size=3)),
    min_size=1,
    max_size=4,
)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Seed heads with a few bytes overwritten, inserted or removed, maybe cut short."""
    return st.builds(_edit, st.sampled_from(seeds), edits, st.floats(0, 1))


def _edit(seed: bytes, changes: list[tuple[float, str, bytes]], keep: float) -> bytes:
    """``seed`` with each change made at its fraction of the length, then only ``keep`` of it kept."""
    data = bytearray(seed)
    for where, action, chunk in changes:
        position = int(where * len(data))
        if action == "insert" or position >= len(data):
            data[position:position] = chunk
        elif action == "set":
            data[position] = chunk[0]
        else:
            del data[position]
    return bytes(data[: round(keep * len(data))])


small_limits = st.builds(
    Limits, st.integers(16, 8192), st.integers(8, 4096), st.integers(1, 64), st.integers(16, 16384)
) | st.just(Limits())
inputs = st.binary(max_size=300) | mutated(HTTP_SEEDS) | mutated(TLS_SEEDS)


@PROPERTY
@given(data=inputs, limits=small_limits)
def test_parsers_give_a_result_or_their_own_error(data: bytes, limits: Limits) -> None:
    for parse, errors in (
        (parse_request, HTTP_ERRORS | TLS_ERRORS),
        (parse_http_head, HTTP_ERRORS),
        (parse_client_hello, TLS_ERRORS),
    ):
        result = parse(data, limits)
        assert isinstance(result, HttpRequest | ClientHello | NeedMore | ParseError)
        if isinstance(result, ParseError):
            assert result.reason in errors


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
dns_names = st.lists(st.text(LABEL_CHARS, min_size=1, max_size=12), min_size=1, max_size=4).map(".".join)
header_values = st.text(VALUE_CHARS + " ", max_size=40).map(lambda value: value.strip(" "))
headers = st.lists(
    st.tuples(tokens.filter(lambda name: name.lower() not in FRAMING_HEADERS), header_values), max_size=4
)


@PROPERTY
@given(
    method=tokens,
    segments=st.lists(st.text(PATH_CHARS, max_size=10), max_size=5),
    query=st.none() | st.text(PATH_CHARS + "/?", max_size=20),
    version=st.sampled_from(["HTTP/1.0", "HTTP/1.1"]),
    host=dns_names,
    port=st.none() | st.integers(1, 65535),
    fields=headers,
    body=st.binary(max_size=16),
)
def test_generated_http_heads_parse_to_what_was_generated(
    method: str,
    segments: list[str],
    query: str | None,
    version: str,
    host: str,
    port: int | None,
    fields: list[tuple[str, str]],
    body: bytes,
) -> None:
    path = "/" + "/".join(segments)
    target = path if query is None else f"{path}?{query}"
    host_header = host.upper() if port is None else f"{host}:{port}"
    all_fields = [("Host", host_header), *fields]
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in all_fields) + "\r\n"
    request = parse_http_head(head.encode() + body)
    assert isinstance(request, HttpRequest), request
    assert (request.method, request.target, request.path, request.query, request.version) == (
        method,
        target,
        path,
        query or "",
        version,
    )
    assert request.host == host and list(request.headers) == all_fields
    assert request.cookies == {} and request.head_length == len(head)
    for cut in (len(head) // 3, len(head) - 2, len(head) - 1):
        assert parse_http_head(head[:cut].encode()) is NEED_MORE


@PROPERTY
@given(
    sni=st.none() | dns_names.filter(lambda name: len(name) <= 253),
    upper=st.booleans(),
    session_id=st.binary(max_size=32),
    split=st.none() | st.integers(1, 44),
)
def test_generated_client_hellos_parse_to_what_was_generated(
    sni: str | None, upper: bool, session_id: bytes, split: int | None
) -> None:
    data = client_hello(sni.upper() if sni and upper else sni, session_id=session_id, record_split=split)
    hello = parse_client_hello(data)
    assert hello == ClientHello(0x0303, sni, session_id, len(data))
    assert parse_request(data) == hello
    assert parse_client_hello(data[: len(data) - 1]) is NEED_MORE
