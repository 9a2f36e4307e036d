"""Health and load (H&L): the per-host table, the message protocol, the controller's cache, allotments and probes.

The messages are signed with the deployment key by :mod:`nlb_sdn.signed` (docs/health.md).
"""
