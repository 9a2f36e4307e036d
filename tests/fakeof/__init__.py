"""A fake OpenFlow 1.3 switch for level-2 tests: applies os-ken messages and traces packets through its tables."""
