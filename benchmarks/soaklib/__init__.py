"""The parts of the soak benchmark (``benchmarks/soak.py``): pure figures, the in-host streams, the lab run."""
