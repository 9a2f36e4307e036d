"""Connection migration (SPEC §2.6, FIG. 33): dump a live TCP connection with ``TCP_REPAIR``, restore it elsewhere."""
