"""The pure core: selection, connection table, fabric paths and the load balancer state machine."""
