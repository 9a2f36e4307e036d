"""The agent's and the router's Prometheus metrics (issue 13 item 1): present at zero, moving, served over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.agent.config import parse_agent_config
from nlb_sdn.agent.core import Outgoing
from nlb_sdn.agent.daemon import Agent
from nlb_sdn.config import ConfigError
from nlb_sdn.metrics import exposition, metrics_reply, serve_metrics
from tests.lib.metrics import samples, value
from tests.unit.test_router_daemon import TIMEOUT, Lab, LoopThread, get

APP_ID = "10.0.0.100:80/tcp/127.0.0.1:8080"


def agent_config(tmp_path: Path, metrics: dict[str, Any] | None) -> Any:
    """An agent config with one app, and a ``metrics`` section when given."""
    data: dict[str, Any] = {
        "host_id": "h1",
        "key_file": str(tmp_path / "key"),
        "controllers": ["127.0.0.1:9100"],
        "apps": [
            {
                "vip": "10.0.0.100",
                "vport": 80,
                "pip": "127.0.0.1",
                "pport": 8080,
                "capacity": 10,
                "health": {"type": "tcp", "rise": 1, "fall": 1},
            }
        ],
    }
    if metrics is not None:
        data["metrics"] = metrics
    return parse_agent_config(data)


class Transport:
    """Stands in for the agent's UDP transport: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent.append((data, address))


def test_agent_metrics_exist_at_zero_and_move(tmp_path: Path) -> None:
    agent = Agent(agent_config(tmp_path, None), b"k" * 32)
    found = samples(exposition(agent.registry))
    assert value(found, "nlb_sdn_agent_app_up", app_id=APP_ID) == 0
    assert value(found, "nlb_sdn_agent_datagrams_sent_total", type="heartbeat") == 0
    assert value(found, "nlb_sdn_agent_datagrams_received_total", type="postulate") == 0
    assert value(found, "nlb_sdn_agent_sessions") == 0
    agent.transport = Transport()  # type: ignore[assignment]
    agent.send(agent.core.on_check(APP_ID, True))
    agent.send([Outgoing("heartbeat", {}, (("127.0.0.1", 9100), ("127.0.0.1", 9200)))])
    found = samples(exposition(agent.registry))
    assert value(found, "nlb_sdn_agent_app_up", app_id=APP_ID) == 1
    assert value(found, "nlb_sdn_agent_datagrams_sent_total", type="heartbeat") == 2
    assert value(found, "nlb_sdn_agent_datagrams_sent_total", type="row_change") == 1


def test_the_agent_s_metrics_listener_is_loopback_only(tmp_path: Path) -> None:
    assert agent_config(tmp_path, None).metrics is None
    assert agent_config(tmp_path, {}).metrics.port == 9102
    with pytest.raises(ConfigError, match=r"metrics\.host"):
        agent_config(tmp_path, {"host": "0.0.0.0"})


def test_serve_metrics_answers_get_metrics_only(tmp_path: Path) -> None:
    agent = Agent(agent_config(tmp_path, {"port": 0}), b"k" * 32)

    async def scrape() -> list[bytes]:
        server = await serve_metrics(agent.registry, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replies = []
        for request in (b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /other HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            replies.append(await reader.read())
            writer.close()
        server.close()
        return replies

    metrics, other = asyncio.run(asyncio.wait_for(scrape(), TIMEOUT))
    assert metrics.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4")
    assert b"nlb_sdn_agent_sessions 0.0" in metrics
    assert other.startswith(b"HTTP/1.1 404")
    assert metrics_reply(b"POST /metrics HTTP/1.1", agent.registry).startswith(b"HTTP/1.1 405")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The router lab of test_router_daemon on a fresh event loop thread."""
    loop = LoopThread()
    lab = Lab(loop)
    try:
        yield lab
    finally:
        lab.close()
        loop.close()


def test_router_metrics_on_the_status_port(lab: Lab) -> None:
    router = lab.router()
    status = router.status_address
    assert status is not None
    url = f"http://{status[0]}:{status[1]}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        found = samples(response.read())
    assert value(found, "nlb_sdn_router_connections_accepted_total") == 0
    assert value(found, "nlb_sdn_router_connections_ended_total", outcome="proxied") == 0
    assert value(found, "nlb_sdn_router_member_decisions_total", service="web", member="b1") == 0
    assert value(found, "nlb_sdn_router_migrations_total", outcome="attempted") == 0
    get(lab.web.port, "/static/x")
    lab.stats(router, accepted=1)
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        found = samples(response.read())
    assert value(found, "nlb_sdn_router_connections_accepted_total") == 1
    assert value(found, "nlb_sdn_router_connections_ended_total", outcome="proxied") == 1
    assert value(found, "nlb_sdn_router_member_decisions_total", service="web", member="b1") == 1
