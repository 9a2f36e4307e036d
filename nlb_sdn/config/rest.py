"""The ``controller.rest`` section: where the REST API listens, who may call it (hashed bearer tokens), its limits."""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from pydantic import Field, model_validator

from nlb_sdn.config.base import Strict

SHA256_HEX = r"^[0-9a-f]{64}$"


class RestRole(StrEnum):
    """What a bearer token may do: ``reader`` only reads (GET), ``admin`` may also change (POST, PUT, DELETE)."""

    READER = "reader"
    ADMIN = "admin"


class RestToken(Strict):
    """One bearer token: a name for the logs, its role and the hex SHA-256 of the token (never the token itself)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    role: RestRole
    sha256: str = Field(pattern=SHA256_HEX)


class RestTls(Strict):
    """TLS for the REST listener: PEM certificate chain and private key files (both or neither)."""

    cert_file: str = ""
    key_file: str = ""

    @model_validator(mode="after")
    def _check(self) -> RestTls:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self

    @property
    def enabled(self) -> bool:
        """True when the listener speaks TLS."""
        return bool(self.cert_file)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or ``localhost`` (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Rest(Strict):
    """Where the REST API listens, its tokens, TLS and connection limits."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    tokens: list[RestToken] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    tls: RestTls = Field(default_factory=RestTls)
    max_connections: int = Field(default=512, ge=1, le=100_000)
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    request_timeout: float = Field(default=60.0, gt=0, le=3600)
    socket_timeout: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> Rest:
        names = [token.name for token in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: a token name is listed twice")
        if self.enabled and not self.tokens and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is not a loopback address and no tokens are configured: anyone who can reach it "
                "could change the load balancer; add tokens, bind 127.0.0.1, or set allow_unauthenticated: true"
            )
        return self

    @property
    def open(self) -> bool:
        """True when no token is configured: every request is served without authentication."""
        return not self.tokens
