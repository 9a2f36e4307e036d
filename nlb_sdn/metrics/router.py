"""The request router's metrics, read from its counters at scrape time (served on its status port, in its loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from nlb_sdn.metrics import counter, gauge

CONNECTION_OUTCOMES = ("migrated", "proxied", "failed", "bad_request", "closed")
"""How each accepted connection ended (exactly one of these)."""
MIGRATION_COUNTERS = ("attempted", "migrated", "declined", "proxied", "failed", "reset", "client_gone")
"""The migrator's counters every scrape shows, at zero until counted."""


class RouterCollector(Collector):
    """Connections, decisions, relays and migrations of a router; present from start."""

    def __init__(self, read: Callable[[], dict[str, Any]], members: list[tuple[str, str]]) -> None:
        self.read = read
        self.members = members

    def collect(self) -> Iterator[Metric]:
        """The router's metric families."""
        stats = self.read()
        yield CounterMetricFamily(
            "nlb_sdn_router_connections_accepted", "Connections accepted.", value=stats["accepted"]
        )
        yield gauge("nlb_sdn_router_connections_open", "Connections open now.", stats["open"])
        yield gauge("nlb_sdn_router_connections_relaying", "Connections the router proxies now.", stats["relaying"])
        yield counter(
            "nlb_sdn_router_connections_ended",
            "Accepted connections by how they ended.",
            "outcome",
            {name: stats[name] for name in CONNECTION_OUTCOMES},
        )
        yield counter("nlb_sdn_router_decisions", "Request decisions, by what decided.", "reason", stats["decided"])
        yield counter("nlb_sdn_router_failures", "Failed connections, by reason.", "reason", stats["reasons"])
        yield counter("nlb_sdn_router_relays_ended", "Proxy relays, by how they ended.", "end", stats["relays_ended"])
        chosen = CounterMetricFamily(
            "nlb_sdn_router_member_decisions", "Requests sent to each member.", labels=["service", "member"]
        )
        for service, member in self.members:
            chosen.add_metric([service, member], stats["services"].get(service, {}).get("members", {}).get(member, 0))
        yield chosen
        migration = stats.get("migration", {}).get("counters", {})
        yield counter(
            "nlb_sdn_router_migrations", "Migration attempts and outcomes.", "outcome", migration, MIGRATION_COUNTERS
        )


def router_registry(read: Callable[[], dict[str, Any]], members: list[tuple[str, str]]) -> CollectorRegistry:
    """A registry of a router's metrics: ``read`` gives its stats, ``members`` its (service, member) pairs."""
    registry = CollectorRegistry()
    registry.register(RouterCollector(read, members))
    return registry
