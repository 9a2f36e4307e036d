"""nlb_sdn.gcpolicy: survivors of a full collection are frozen, so the next one does not visit them again."""

from __future__ import annotations

import gc

from nlb_sdn import gcpolicy


def test_survivors_of_a_full_collection_are_frozen_and_the_default_policy_comes_back():
    try:
        gcpolicy.freeze_survivors()
        gcpolicy.freeze_survivors()  # idempotent: one hook
        assert gc.callbacks.count(gcpolicy._freeze_after_full) == 1 and gcpolicy.installed()
        gc.unfreeze()
        kept = [[index] for index in range(1000)]  # containers the collector tracks
        gc.collect()
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert all(not any(item is obj for obj in gc.get_objects(2)) for item in kept[:3])  # not in generation 2
    finally:
        gcpolicy.default_policy()
    assert not gcpolicy.installed() and gc.get_freeze_count() == 0
