"""Lab tools: the backend HTTP server, the load client and the Mininet harness (root and Mininet, the ``lab`` extra,
needed only to run a lab: every module imports without them)."""
