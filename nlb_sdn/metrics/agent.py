"""The host agent's metrics, read from the agent at scrape time (in its asyncio loop, where the server runs)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from nlb_sdn.health.protocol import MESSAGE_TYPES
from nlb_sdn.health.table import Row
from nlb_sdn.metrics import counter, gauge

ROW_STATES = ("active", "draining", "drained", "inactive")
"""An app's current load-balancing states in the H&L table."""


class AgentView(Protocol):
    """What the collector reads from a running agent."""

    def rows(self) -> list[Row]:
        """The H&L table's rows."""
        ...

    def received(self) -> Mapping[str, int]:
        """Datagrams accepted, by message type."""
        ...

    def dropped(self) -> Mapping[str, int]:
        """Datagrams dropped, by reason."""
        ...

    def sent(self) -> Mapping[str, int]:
        """Datagrams sent, by message type."""
        ...

    def sessions(self) -> int:
        """Live application sessions."""
        ...

    def migrations_taken(self) -> Mapping[str, int]:
        """Migrated connections taken, by outcome."""
        ...


class AgentCollector(Collector):
    """The agent's apps (health, state, load), datagrams, sessions and migrations; present from start."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        """The agent's metric families."""
        agent = self.agent
        healthy = GaugeMetricFamily("nlb_sdn_agent_app_up", "1 when the app's health is ok.", labels=["app_id"])
        state = StateSetMetricFamily("nlb_sdn_agent_app_state", "The app's current state.", labels=["app_id"])
        load = GaugeMetricFamily("nlb_sdn_agent_app_load", "The app's last load sample.", labels=["app_id"])
        for row in agent.rows():
            healthy.add_metric([row.app_id], 1 if row.health == "ok" else 0)
            state.add_metric([row.app_id], {name: row.current == name for name in ROW_STATES})
            load.add_metric([row.app_id], row.load)
        yield healthy
        yield state
        yield load
        types = sorted(MESSAGE_TYPES)
        yield counter(
            "nlb_sdn_agent_datagrams_received", "H&L datagrams accepted, by type.", "type", agent.received(), types
        )
        yield counter("nlb_sdn_agent_datagrams_dropped", "H&L datagrams dropped, by reason.", "reason", agent.dropped())
        yield counter("nlb_sdn_agent_datagrams_sent", "H&L datagrams sent, by type.", "type", agent.sent(), types)
        yield gauge("nlb_sdn_agent_sessions", "Live application sessions.", agent.sessions())
        yield counter(
            "nlb_sdn_agent_migrations", "Migrated connections taken, by outcome.", "outcome", agent.migrations_taken()
        )


def agent_registry(agent: AgentView) -> CollectorRegistry:
    """A registry of the agent's metrics."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry
