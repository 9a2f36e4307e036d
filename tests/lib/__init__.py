"""The test library: helpers shared by the unit, fake-OpenFlow and Mininet suites (and the benchmarks), by topic."""
