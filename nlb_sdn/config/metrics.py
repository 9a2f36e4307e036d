"""Where a daemon without a REST server (the host agent) serves its Prometheus metrics: a loopback port."""

from __future__ import annotations

from pydantic import Field, field_validator

from nlb_sdn.config.base import Strict
from nlb_sdn.config.rest import is_loopback

DEFAULT_AGENT_METRICS_PORT = 9102


class MetricsListener(Strict):
    """``metrics``: serve ``GET /metrics`` on ``host``:``port`` (a loopback address; port 0 takes a free one)."""

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_AGENT_METRICS_PORT, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback(cls, host: str) -> str:
        if not is_loopback(host):
            raise ValueError(f"{host} is not a loopback address: metrics are served to this machine only")
        return host
