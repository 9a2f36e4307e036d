"""The ``controller.ha`` section: several controllers connect to every switch, one of them master (docs/ha.md).

The controllers elect their master through tooz (OpenStack's coordination library) over Redis; the winner takes a
new generation id from a counter in the same Redis and sends it with its OpenFlow ``ROLE_REQUEST`` MASTER, so a
switch refuses a stale master (``OFPRRFC_STALE``).
"""

from __future__ import annotations

from pydantic import Field

from nlb_sdn.config.base import Strict


class HaSettings(Strict):
    """Mastership among the controllers of one deployment: off by default (the controller is ``equal``).

    ``coordination_url``: the tooz backend, ``redis://HOST:PORT[/DB]`` (the generation counter lives in the same
    server). ``group``: the name of the election lock and the prefix of the generation counter; every controller of
    one set of switches uses the same. ``lock_timeout``: whole seconds the lock outlives a dead master (a standby
    takes over after about that long). ``member_id``: this controller's name in the election; empty means
    ``lbu<lbu_id>@<hostname>:<pid>``.
    """

    enabled: bool = False
    coordination_url: str = Field(default="redis://127.0.0.1:6379", pattern=r"^(redis|rediss)://[^?#]+$")
    group: str = Field(default="nlb-sdn", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    lock_timeout: int = Field(default=2, ge=1, le=60)
    member_id: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_.:@-]{1,128}$")
