"""The test suite: unit tests, tests against a fake OpenFlow switch, Mininet lab tests, and their shared helpers."""
