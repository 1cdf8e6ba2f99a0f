"""The per-process budget for visibility-change hashes (pure: no services)."""
from __future__ import annotations

import time

from workers.settings.access_limits import HashBudget, Limits


def test_the_budget_lets_a_burst_through_then_one_hash_per_interval():
    budget = HashBudget(per_second=2.0, burst=3)
    assert [budget.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = budget.take()
    assert 0 < wait <= 0.5  # the settings thread stays free for passcode checks meanwhile
    time.sleep(wait + 0.01)
    assert budget.take() == 0.0


def test_defaults_keep_visibility_hashing_to_a_small_share_of_the_query_thread():
    limits = Limits()
    # ~80 ms a hash: at most ~16 % of the one query thread goes to visibility changes
    assert limits.hashes_per_s * 0.08 <= 0.2
    assert limits.failures_per_feed == 20 and limits.attempts_per_viewer_feed == 5
