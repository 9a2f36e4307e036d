"""Lab tools: the backend HTTP server, the load client and the Mininet harness (root needed only for the harness)."""
