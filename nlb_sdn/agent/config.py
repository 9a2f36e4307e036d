"""Agent configuration schema (YAML, pydantic, unknown keys rejected): host id, key, controllers, apps and checks."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from nlb_sdn.config import NAME_PATTERN, ConfigError, IPv4, read_config_document, validate_model
from nlb_sdn.config.base import Strict
from nlb_sdn.config.metrics import MetricsListener
from nlb_sdn.health.protocol import UDP_MAX_SIZE
from nlb_sdn.health.table import MAX_PROTO_INFO, Row, app_id_of
from nlb_sdn.migration.wire import MIGRATION_PORT
from nlb_sdn.signed import encode

CONTROLLER_PORT = 9100
AGENT_PORT = 9101
MAX_SOCKET_PATH = 100
MAX_UDP_CHECK_TEXT = 512
"""The longest request or expected reply prefix of a udp health check (one small datagram)."""


def parse_address(text: str, default_port: int | None = None, allow_zero: bool = False) -> tuple[str, int]:
    """Split a literal ``"ipv4[:port]"`` into (address, port); no name resolution; raise ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected IPV4:PORT, got {text!r}")
        host, port_text = text, str(default_port)
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {host!r}") from None
    if not port_text.isdigit() or not (0 if allow_zero else 1) <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} in {text!r}")
    return address, int(port_text)


def _controller(value: str) -> str:
    """Normalise a controller address to ``"ip:port"`` (default port 9100)."""
    address, port = parse_address(value, CONTROLLER_PORT)
    return f"{address}:{port}"


def _listen(value: str) -> str:
    """Normalise the listen address to ``"ip:port"`` (port 0 picks a free one)."""
    address, port = parse_address(value, AGENT_PORT, allow_zero=True)
    return f"{address}:{port}"


Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]


class _Probe(Strict):
    """Timing shared by the health checks: period, per-probe timeout, and the rise/fall thresholds."""

    interval: Seconds = 1.0
    timeout: Seconds = 1.0
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_fits(self) -> _Probe:
        if self.timeout > self.interval:
            raise ValueError(f"timeout {self.timeout} is longer than interval {self.interval}")
        return self


class TcpCheck(_Probe):
    """Healthy when a TCP connection to the endpoint (pip:pport) opens within the timeout."""

    type: Literal["tcp"] = "tcp"


class HttpCheck(_Probe):
    """Healthy when ``GET path`` on the endpoint answers ``expect_status`` (and a body containing ``body_contains``)."""

    type: Literal["http"]
    path: str = Field(default="/", pattern=r"^/[!-~]*$")
    expect_status: int = Field(default=200, ge=100, le=599)
    body_contains: str = ""


class UdpCheck(_Probe):
    """Healthy when a UDP datagram ``send`` to the endpoint is answered within the timeout (by a reply that starts
    with ``expect``, when given): a request/response check for UDP services (DNS-like)."""

    type: Literal["udp"]
    send: str = Field(default="ping", min_length=1, max_length=MAX_UDP_CHECK_TEXT)
    expect: str = Field(default="", max_length=MAX_UDP_CHECK_TEXT)


class CommandCheck(_Probe):
    """Healthy when the command exits 0 within the timeout."""

    type: Literal["command"]
    argv: list[str] = Field(min_length=1)


HealthCheck = Annotated[TcpCheck | HttpCheck | UdpCheck | CommandCheck, Field(discriminator="type")]


class ConnectionsLoad(Strict):
    """Load = ESTABLISHED TCP connections whose local port is the endpoint's pport (kernel tables)."""

    type: Literal["connections"] = "connections"
    interval: Seconds = 1.0


class CommandLoad(Strict):
    """Load = the number a command prints (first token of its output)."""

    type: Literal["command"]
    argv: list[str] = Field(min_length=1)
    interval: Seconds = 1.0
    timeout: Seconds = 1.0


class FileLoad(Strict):
    """Load = the number in a file (first token)."""

    type: Literal["file"]
    path: str = Field(min_length=1)
    interval: Seconds = 1.0


class StaticLoad(Strict):
    """Load = a fixed number, changed only by ``nlb-sdn-agent set-load``."""

    type: Literal["static"]
    value: float = Field(default=0.0, ge=0, allow_inf_nan=False)


LoadSource = Annotated[ConnectionsLoad | CommandLoad | FileLoad | StaticLoad, Field(discriminator="type")]


class App(Strict):
    """One application endpoint of this host: its identifier, capacity, initial target, health check and load."""

    vip: IPv4
    vport: int = Field(ge=1, le=65535)
    proto: Literal["tcp", "udp"] = "tcp"
    proto_info: str = Field(default="", max_length=MAX_PROTO_INFO, pattern=r"^[ -~]*$")
    pip: IPv4
    pport: int = Field(ge=1, le=65535)
    capacity: float = Field(gt=0, allow_inf_nan=False)
    target: Literal["active", "draining", "inactive"] = "active"
    health: HealthCheck = Field(default_factory=TcpCheck)
    load: LoadSource = Field(default_factory=ConnectionsLoad)

    @model_validator(mode="after")
    def _check_fits_proto(self) -> App:
        """A UDP endpoint needs a check that speaks UDP (or a command): a TCP or HTTP check would never pass."""
        if self.proto == "udp" and isinstance(self.health, TcpCheck | HttpCheck):
            raise ValueError(f"proto udp needs health type udp or command, not {self.health.type}")
        if self.proto == "tcp" and isinstance(self.health, UdpCheck):
            raise ValueError("health type udp needs proto udp")
        return self

    @property
    def app_id(self) -> str:
        """The application id of this endpoint's row."""
        return app_id_of(self.vip, self.vport, self.proto, self.pip, self.pport, self.proto_info)

    def initial_row(self) -> Row:
        """The row before any check or load sample: health unknown, current inactive."""
        load = self.load.value if isinstance(self.load, StaticLoad) else 0.0
        return Row(
            vip=self.vip,
            vport=self.vport,
            pip=self.pip,
            pport=self.pport,
            proto=self.proto,
            proto_info=self.proto_info,
            health="unknown",
            load=load,
            capacity=self.capacity,
            target=self.target,
            current="inactive",
        )


class Migration(Strict):
    """The host half of connection migration: where routers send connection state, and the app's hand-off socket."""

    listen: Annotated[str, AfterValidator(_listen)] = f"0.0.0.0:{MIGRATION_PORT}"
    handoff_socket: str = Field(min_length=1, max_length=MAX_SOCKET_PATH)

    @property
    def listen_address(self) -> tuple[str, int]:
        """Where the migration port binds, as (address, port)."""
        return parse_address(self.listen, allow_zero=True)


class AgentConfig(Strict):
    """The whole configuration of one host agent."""

    host_id: str = Field(pattern=NAME_PATTERN)
    key_file: str = Field(min_length=1)
    controllers: list[Annotated[str, AfterValidator(_controller)]] = Field(min_length=1)
    listen: Annotated[str, AfterValidator(_listen)] = f"0.0.0.0:{AGENT_PORT}"
    hb_period: float = Field(default=1.0, ge=0.05, le=60, allow_inf_nan=False)
    control_socket: str = Field(default="", max_length=MAX_SOCKET_PATH)
    apps: list[App] = Field(default_factory=list)
    migration: Migration | None = None
    metrics: MetricsListener | None = None
    """Where ``GET /metrics`` is served (none by default)."""

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if not self.control_socket:
            object.__setattr__(self, "control_socket", f"/run/nlb-sdn-agent.{self.host_id}.sock")
        seen: set[str] = set()
        for app in self.apps:
            if app.app_id in seen:
                raise ValueError(f"duplicate app {app.app_id!r}")
            seen.add(app.app_id)
        size = worst_snapshot_size(self.host_id, [app.initial_row() for app in self.apps])
        if size > UDP_MAX_SIZE:
            raise ValueError(
                f"{len(self.apps)} apps make a snapshot of up to {size} bytes, over the "
                f"{UDP_MAX_SIZE}-byte datagram limit: use fewer apps or shorter proto_info"
            )
        return self

    @property
    def controller_addresses(self) -> list[tuple[str, int]]:
        """The controllers as (address, port)."""
        return [parse_address(text) for text in self.controllers]

    @property
    def listen_address(self) -> tuple[str, int]:
        """Where the agent's UDP socket binds, as (address, port)."""
        return parse_address(self.listen, allow_zero=True)

    def app(self, app_id: str) -> App | None:
        """The app whose row has ``app_id``, if any."""
        return next((app for app in self.apps if app.app_id == app_id), None)


def worst_snapshot_size(host_id: str, rows: list[Row]) -> int:
    """The largest encoded ``snapshot`` these rows can make (longest states, 9-byte seq, any floats)."""
    worst = [replace(row, health="unknown", target="inactive", current="inactive") for row in rows]
    body = {"host_id": host_id, "rows": [row.to_dict() for row in worst], "checksum": 0xFFFFFFFF}
    return len(encode(b"k" * 32, "snapshot", host_id, 2**64 - 1, 0.0, body))


def parse_agent_config(data: Any, source: str = "<agent config>") -> AgentConfig:
    """Validate plain data into an AgentConfig, or raise ConfigError naming source, key and reason."""
    if data is None:
        raise ConfigError(source, "(top level)", "expected a mapping")
    return validate_model(AgentConfig, data, source)


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Load and validate an agent config file (YAML; TOML and JSON by their endings), or raise ConfigError."""
    document = read_config_document(path)
    return validate_model(AgentConfig, document.data, document.source, document)
