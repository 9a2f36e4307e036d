"""Unit tests: the core, config, REST, agents and tools, each without a switch or a network."""
