"""A tiny OpenFlow 1.3 app that proves nlb_sdn.framework works under a manager (ryu-manager or osken-manager).

On switch features it installs the table-miss flow (priority 0, all packets to the controller) with
SMOKE_COOKIE, so a test can find it in ``ovs-ofctl -O OpenFlow13 dump-flows``. It imports the Ryu API only
through nlb_sdn.framework. Run it with either manager, by file path or by module path::

    osken-manager --ofp-tcp-listen-port 6699 tests/ryu_smoke_app.py
    NLB_SDN_FRAMEWORK=ryu .venv-ryu/bin/python -m nlb_sdn.framework --ofp-tcp-listen-port 6699 tests/ryu_smoke_app.py
"""

from __future__ import annotations

from typing import ClassVar

from nlb_sdn.framework import CONFIG_DISPATCHER, NAME, RyuApp, ofp_event, ofproto_v1_3, set_ev_cls

SMOKE_COOKIE = 0x5A5A0013


class SmokeApp(RyuApp):
    """Installs a table-miss flow on every OpenFlow 1.3 switch that connects."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev) -> None:
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(
            parser.OFPFlowMod(datapath=dp, cookie=SMOKE_COOKIE, priority=0, match=parser.OFPMatch(), instructions=inst)
        )
        self.logger.info("smoke: %s installed table-miss flow on datapath %016x", NAME, dp.id)
