"""The ``controller.openflow`` section: where switches connect, with what certificates, and which dpids may."""

from __future__ import annotations

import ipaddress
import os

from pydantic import Field, field_validator

from nlb_sdn.config.base import Strict

DEFAULT_OPENFLOW_PORT = 6653
"""The IANA OpenFlow port; with ``tls`` the same port speaks TLS only."""


class OpenFlowTls(Strict):
    """The controller's certificate and key, and the CA that signed the switches' certificates (required)."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    ca: str = Field(min_length=1)

    def resolved(self, base_dir: str) -> OpenFlowTls:
        """The same files with relative paths taken from ``base_dir`` (the config file's directory)."""
        return OpenFlowTls(**{name: os.path.join(base_dir, path) for name, path in self.model_dump().items()})


class OpenFlow(Strict):
    """The OpenFlow channel: listen address and port, optional TLS, and the dpids allowed to connect."""

    listen_host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_OPENFLOW_PORT, ge=1, le=65535)
    tls: OpenFlowTls | None = None
    allowed_dpids: list[int] | None = None
    """None: the fabric's switches (any switch while the fabric lists none); a list: exactly these dpids."""
    half_open_timeout: float = Field(default=0.0, ge=0, le=3600)
    """Seconds a controller-dispatched connection may stay without a packet after its SYN before it is dropped; 0 (the
    default) turns the check off: it costs the switch one flow-stats request per connection that lives that long."""

    @field_validator("listen_host")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError as exc:
            raise ValueError(f"not an IP address: {value!r}") from exc

    @field_validator("allowed_dpids")
    @classmethod
    def _dpids(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            for dpid in value:
                if not 1 <= dpid < 2**64:
                    raise ValueError(f"dpid {dpid} is not in 1..2**64-1")
            if len(set(value)) != len(value):
                raise ValueError("a dpid is listed twice")
        return value


def allowed_dpids(openflow: OpenFlow, fabric_dpids: list[int]) -> frozenset[int] | None:
    """The dpids that may connect: ``allowed_dpids`` if set, else the fabric's switches; None (any) when neither."""
    if openflow.allowed_dpids is not None:
        return frozenset(openflow.allowed_dpids)
    return frozenset(fabric_dpids) if fabric_dpids else None
