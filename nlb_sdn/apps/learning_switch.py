"""Framework baseline: a plain reactive L2 learning switch (what os-ken 3.x no longer ships as simple_switch_13).

It learns source MACs from packet-ins, installs a flow per (in_port, eth_dst) once the destination is known, and
floods otherwise. Use it only on loop-free topologies (the `single` lab). Benchmarks compare the load balancer with it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nlb_sdn.core.frames import ETH_HEADER, mac_text
from nlb_sdn.framework import CONFIG_DISPATCHER, MAIN_DISPATCHER, RyuApp, ofp_event, ofproto_v1_3, set_ev_cls

IDLE_TIMEOUT = 30


class LearningSwitch(RyuApp):
    """Reactive MAC-learning switch for OpenFlow 1.3."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}
        self.packet_ins = 0

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        """Install the table-miss entry that punts to the controller."""
        datapath = ev.msg.datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        datapath.send_msg(
            parser.OFPFlowMod(
                datapath,
                priority=0,
                match=parser.OFPMatch(),
                instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
            )
        )

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        """Learn the source, forward to the known port or flood."""
        self.packet_ins += 1
        msg = ev.msg
        datapath = msg.datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        if len(msg.data) < ETH_HEADER.size:
            return
        dst_raw, src_raw, _eth_type = ETH_HEADER.unpack_from(msg.data)
        dst, src = mac_text(dst_raw), mac_text(src_raw)
        in_port = msg.match["in_port"]
        table = self.mac_to_port.setdefault(datapath.id, {})
        table[src] = in_port
        out_port = table.get(dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            datapath.send_msg(
                parser.OFPFlowMod(
                    datapath,
                    priority=1,
                    idle_timeout=IDLE_TIMEOUT,
                    match=parser.OFPMatch(in_port=in_port, eth_dst=dst),
                    instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)],
                )
            )
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        datapath.send_msg(
            parser.OFPPacketOut(datapath, buffer_id=msg.buffer_id, in_port=in_port, actions=actions, data=data)
        )
