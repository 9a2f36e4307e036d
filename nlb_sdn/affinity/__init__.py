"""Session affinity: the session tracker's table and the per-session decisions of the classifier."""
