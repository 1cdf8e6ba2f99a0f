"""The ingress's per-user token bucket (pure: no services)."""
from __future__ import annotations

import time

from ingress.ratelimit import UserRateLimiter


def test_an_offline_queue_of_up_to_the_burst_flushes_at_once_then_the_rate_applies():
    limiter = UserRateLimiter(burst=300, per_second=10)
    assert [limiter.take("alice", 100) for _ in range(3)] == [0, 0, 0]  # three full batches
    assert limiter.take("alice", 100) == 10  # the next batch waits for 100 tokens at 10/s
    assert limiter.take("alice", 1) == 1


def test_one_user_at_the_limit_costs_other_users_nothing():
    limiter = UserRateLimiter(burst=5, per_second=1)
    assert limiter.take("mallory", 5) == 0 and limiter.take("mallory", 1) > 0
    assert limiter.take("bob", 5) == 0


def test_a_bucket_refills_with_time():
    limiter = UserRateLimiter(burst=2, per_second=50)
    assert limiter.take("alice", 2) == 0 and limiter.take("alice", 1) == 1
    time.sleep(0.05)
    assert limiter.take("alice", 1) == 0


def test_a_batch_larger_than_the_burst_passes_on_a_full_bucket_rather_than_never():
    limiter = UserRateLimiter(burst=10, per_second=5)
    assert limiter.take("alice", 50) == 0
    assert limiter.take("alice", 50) == 2


def test_idle_users_are_forgotten_when_the_table_is_full(monkeypatch):
    monkeypatch.setattr("ingress.ratelimit.MAX_TRACKED", 3)
    limiter = UserRateLimiter(burst=10, per_second=1000)
    for user in ("a", "b", "c"):
        limiter.take(user, 1)
    time.sleep(0.02)  # all refilled
    limiter.take("d", 1)
    assert set(limiter._buckets) == {"d"}
