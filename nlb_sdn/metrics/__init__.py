"""Prometheus metrics of the three daemons (issue 13 item 1): shared helpers of the exposition and its HTTP server.

Each process has its own :class:`~prometheus_client.CollectorRegistry` (never the library's global one). Counters
and histograms the shell updates live in it; everything else is read from the daemon's own state by a collector at
scrape time, so every metric exists from start, at zero. The controller serves ``/metrics`` on its REST server
(``nlb_sdn.metrics.controller``); the agent on its own loopback port (``nlb_sdn.metrics.agent``) and the router on its
status port (``nlb_sdn.metrics.router``). docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format that ``generate_latest`` writes."""
HEAD_LIMIT = 8192
"""Longest request head the agent's metrics server reads."""
REQUEST_TIMEOUT = 5.0
"""Seconds a metrics client has to send its request head."""
disable_created_metrics()  # no ``*_created`` series: they double every counter's output and nothing here reads them


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


def http_response(status: str, content_type: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    return head.encode() + b"\r\n" + body


def metrics_reply(request_line: bytes, registry: CollectorRegistry) -> bytes:
    """The reply to one request line: the exposition for ``GET /metrics``, 404 or 405 otherwise."""
    parts = request_line.split()
    if len(parts) != 3:
        return http_response("400 Bad Request", "text/plain", b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method != b"GET":
        return http_response("405 Method Not Allowed", "text/plain", b"only GET\n")
    if target != b"/metrics":
        return http_response("404 Not Found", "text/plain", b"GET /metrics\n")
    return http_response("200 OK", CONTENT_TYPE, exposition(registry))


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``host``:``port`` in the running asyncio loop (the collectors read the daemon's state
    in its own loop, never beside it)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(metrics_reply(head.split(b"\r\n", 1)[0], registry))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=HEAD_LIMIT)


def counter(
    name: str, documentation: str, label: str, values: Mapping[str, float], known: Iterable[str] = ()
) -> CounterMetricFamily:
    """A counter family with one label: every ``known`` value (at zero until counted), then the others counted."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value in dict.fromkeys([*known, *values]):
        family.add_metric([value], values.get(value, 0))
    return family


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge family without labels."""
    return GaugeMetricFamily(name, documentation, value=value)
