"""The declared forwarder pipeline and the pure builders of its flows."""
