"""SYN-flood protection settings (``controller.flood``): punt meters, per-source quotas, half-open timeouts."""

from __future__ import annotations

from pydantic import Field

from nlb_sdn.config.base import Strict

MAX_METER_RATE = 10_000_000
"""The highest meter rate the schema takes, in packets per second."""


class FloodProtection(Strict):
    """How the forwarders and the classifier bound what a SYN flood (or any punt flood) can cost.

    Every punt to the controller goes through an OpenFlow meter (per switch): each VIP service's SYN entry through its
    own, the table misses through one, ARP and probe replies through another. A meter's burst is a quarter second of
    its rate. New connections beyond ``source_quota`` per client prefix within the half-open window are refused.
    """

    vip_syn_rate: int = Field(default=5000, ge=1, le=MAX_METER_RATE)
    """Pure SYNs of one VIP service each switch may punt, per second (the rest are dropped at the switch)."""
    miss_rate: int = Field(default=2000, ge=1, le=MAX_METER_RATE)
    """Table-miss punts (segments of no known connection, SYNs of VIPs with no SYN entry) per switch, per second."""
    control_rate: int = Field(default=1000, ge=1, le=MAX_METER_RATE)
    """ARP and health-probe-reply punts per switch, per second."""
    half_open_idle: int = Field(default=0, ge=0, le=65535)
    """Idle timeout, seconds, of a new connection's flows until it is re-plumbed (0: the VIP's ``idle_timeout``;
    2-3 s is the recommended setting under SYN-flood exposure, see docs/config.md for the trade-off)."""
    source_prefix: int = Field(default=32, ge=0, le=32)
    """Prefix length that groups client addresses for ``source_quota``."""
    source_quota: int = Field(default=0, ge=0)
    """New connections a client prefix may open per VIP service within ``half_open_idle`` seconds (0: no quota)."""
