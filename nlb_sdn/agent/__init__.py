"""The host agent ``nlb-sdn-agent``: keeps this host's H&L table and reports it to the controllers (docs/health.md)."""
