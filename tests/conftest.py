"""Shared pytest fixtures."""

import pytest

from tests.fakeof.switch import FakeDatapath


@pytest.fixture
def fake_dp() -> FakeDatapath:
    """A fresh fake OpenFlow 1.3 datapath with dpid 1, for tests of the switch model with flows of no pipeline."""
    return FakeDatapath(1, check_pipeline=False)
