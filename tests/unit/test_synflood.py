"""SYN-flood protection in the core: per-source quotas, half-open timeouts, punt meters and their declaration."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.config import ConfigError, parse_config
from nlb_sdn.core.quota import SourceQuota
from nlb_sdn.flows import builders
from nlb_sdn.flows.pipeline import (
    CONTROL_METER_ID,
    MISS_METER_ID,
    Priority,
    Table,
    ViolationKind,
    check_message,
    meter_kind,
    vip_meter_id,
)
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.frames import syn_frame
from tests.lib.configs import web_config, web_member
from tests.lib.shell_double import ShellDouble

VIP = "10.0.0.100"


def flood_config(**flood: Any) -> Any:
    """VIP web over h1..h3 with a ``controller.flood`` section."""
    return web_config([web_member(i) for i in (1, 2, 3)], {"flood": flood})


def syn(lb: ShellDouble, client: str, port: int, now: float) -> list[Any]:
    """Punt one pure SYN from ``client:port`` to the VIP; the messages the core answers with."""
    frame = syn_frame(client, port, VIP, 80)
    return lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=now)


# -- per-source quota ----------------------------------------------------------------------------------------------


def test_syns_beyond_a_prefix_quota_are_refused_counted_and_never_tracked() -> None:
    lb = ShellDouble(flood_config(source_quota=3, source_prefix=24, half_open_idle=3))
    answers = [syn(lb, f"10.0.5.{n}", 40000 + n, now=1.0) for n in range(1, 6)]
    assert [bool(msgs) for msgs in answers] == [True, True, True, False, False]
    stats = lb.stats()
    assert stats["refused"] == {"source_quota": 2}
    assert stats["connections"]["total"] == 3
    assert syn(lb, "10.0.6.1", 40000, now=1.0), "another prefix has its own quota"
    assert syn(lb, "10.0.5.9", 40009, now=4.1), "the window (half_open_idle) has passed"


def test_without_a_quota_every_syn_is_tracked() -> None:
    lb = ShellDouble(flood_config())
    assert all(syn(lb, "10.0.5.1", 40000 + n, now=1.0) for n in range(50))
    assert lb.stats()["refused"] == {} and lb.stats()["connections"]["total"] == 50


def test_the_quota_forgets_prefixes_quiet_for_a_window() -> None:
    quota = SourceQuota(prefix_len=32, limit=1, window=2.0)
    assert all(quota.admit(f"10.1.0.{n}", now=float(n) / 100) for n in range(100))
    assert not quota.admit("10.1.0.5", now=1.0)
    assert quota.admit("10.2.0.1", now=10.0) and len(quota) == 1


# -- half-open entries ---------------------------------------------------------------------------------------------


def test_a_new_connection_gets_the_short_timeout_and_keeps_its_full_route() -> None:
    lb = ShellDouble(flood_config(half_open_idle=3))
    forward, reverse = syn(lb, "10.0.0.1", 40000, now=1.0)[:2]
    assert (forward.idle_timeout, reverse.idle_timeout) == (3, 3)
    conn = lb.connections_by_key[("10.0.0.1", 40000, VIP, 80)]
    assert conn.route.idle_timeout == 15
    retransmitted = syn(lb, "10.0.0.1", 40000, now=1.5)
    assert retransmitted[0].idle_timeout == 3, "a retransmitted SYN is still half-open"


def test_half_open_off_keeps_the_vip_idle_timeout() -> None:
    lb = ShellDouble(flood_config())
    assert syn(lb, "10.0.0.1", 40000, now=1.0)[0].idle_timeout == 15


# -- meters --------------------------------------------------------------------------------------------------------


def test_a_switch_gets_its_meters_before_any_flow_that_uses_them() -> None:
    lb = ShellDouble(flood_config(vip_syn_rate=800, miss_rate=300, control_rate=100))
    msgs = lb.switch_flows(1)
    meter_mods = [m for m in msgs if isinstance(m, parser.OFPMeterMod)]
    first_flow = next(i for i, m in enumerate(msgs) if isinstance(m, parser.OFPFlowMod))
    assert all(msgs.index(m) < first_flow for m in meter_mods)
    vip_id = lb.vip_id("web")
    assert [(m.command, m.meter_id) for m in meter_mods] == [
        (ofp.OFPMC_DELETE, ofp.OFPM_ALL),
        (ofp.OFPMC_ADD, MISS_METER_ID),
        (ofp.OFPMC_ADD, CONTROL_METER_ID),
        (ofp.OFPMC_ADD, vip_meter_id(vip_id)),
    ]
    rates = {m.meter_id: (m.bands[0].rate, m.bands[0].burst_size) for m in meter_mods[1:]}
    assert rates == {MISS_METER_ID: (300, 75), CONTROL_METER_ID: (100, 25), vip_meter_id(vip_id): (800, 200)}


def test_every_punt_goes_through_a_meter() -> None:
    lb = ShellDouble(flood_config())
    vip_id = lb.vip_id("web")
    punts = {
        (m.table_id, m.priority): [i.meter_id for i in m.instructions if isinstance(i, parser.OFPInstructionMeter)]
        for m in lb.switch_flows(1)
        if isinstance(m, parser.OFPFlowMod) and _punts(m)
    }
    assert punts[(Table.CONNECTIONS, Priority.VIP_SYN)] == [vip_meter_id(vip_id)]
    assert punts[(Table.CONNECTIONS, Priority.NEW_CONNECTION)] == [MISS_METER_ID]
    assert punts[(Table.CLASSIFY, Priority.ARP)] == [CONTROL_METER_ID]
    assert punts[(Table.CLASSIFY, Priority.PROBE_REPLY)] == [CONTROL_METER_ID]
    assert all(len(meters) == 1 for meters in punts.values()), punts


def test_a_vip_added_and_removed_brings_and_takes_its_meter() -> None:
    lb = ShellDouble(flood_config())
    data = lb.config.model_dump()
    data["vips"].append(dict(data["vips"][0], name="web2", port=8080))
    added = lb.apply_config(parse_config(data), dpids=[1])[1]
    vip_id = lb.vip_id("web2")
    meter_at = next(i for i, m in enumerate(added) if isinstance(m, parser.OFPMeterMod))
    syn_at = next(i for i, m in enumerate(added) if getattr(m, "priority", None) == Priority.VIP_SYN)
    assert added[meter_at].meter_id == vip_meter_id(vip_id) and meter_at < syn_at
    data["vips"] = data["vips"][:1]
    removed = lb.apply_config(parse_config(data), dpids=[1])[1]
    assert [(m.command, m.meter_id) for m in removed if isinstance(m, parser.OFPMeterMod)] == [
        (ofp.OFPMC_DELETE, vip_meter_id(vip_id))
    ]


def test_the_checker_refuses_a_meter_where_none_is_declared_or_outside_the_scheme() -> None:
    metered = builders.flow_add(
        Table.FORWARD, Priority.FORWARD, parser.OFPMatch(), builders.punt(64, MISS_METER_ID), cookie=1 << 56
    )
    assert [v.kind for v in check_message(metered)] == [ViolationKind.METER]
    assert [v.kind for v in check_message(builders.meter_mod(7, 100))] == [ViolationKind.METER]
    assert check_message(builders.vip_meter(3, 100)) == []
    assert meter_kind(7) is None


def test_flood_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"flood\.colour"):
        parse_config({"controller": {"flood": {"colour": 1}}})
    with pytest.raises(ConfigError, match="vip_syn_rate"):
        parse_config({"controller": {"flood": {"vip_syn_rate": 0}}})


def _punts(fm: Any) -> bool:
    """Whether a flow-mod outputs to the controller."""
    return any(
        isinstance(action, parser.OFPActionOutput) and action.port == ofp.OFPP_CONTROLLER
        for inst in fm.instructions
        if isinstance(inst, parser.OFPInstructionActions)
        for action in inst.actions
    )
