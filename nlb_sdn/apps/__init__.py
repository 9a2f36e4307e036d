"""os-ken app shells: the only code that touches datapaths, sockets and timers."""
