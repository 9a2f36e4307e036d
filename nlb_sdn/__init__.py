"""nlb_sdn: an SDN network load balancer with traffic routing, built as os-ken/Ryu controller apps."""

__version__ = "0.1.0"
