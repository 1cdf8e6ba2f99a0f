"""Per-user limits at the ingress: one account must not flood what everyone shares.

A token bucket per token subject, counted in events (a batch of 100 costs 100, a read or a
completion 1). The bucket holds RATE_LIMIT_BURST events and refills RATE_LIMIT_EVENTS_PER_S a
second: an offline client flushing a queue of up to the burst posts it all at once, and keeps
the refill rate after that. Each ingress process counts alone (no shared store, no extra round
trip per request): with N processes behind a balancer a user gets up to N times the rate, which
bounds a flood without metering anyone exactly.

gevent runs one greenlet at a time and nothing here yields, so the dict needs no lock.
"""
from __future__ import annotations

import math
import time

MAX_TRACKED = 100_000  # subjects remembered per process; idle full buckets are forgotten first


class UserRateLimiter:
    def __init__(self, burst: float, per_second: float):
        self.burst, self.rate = float(burst), float(per_second)
        self._buckets: dict[str, list[float]] = {}  # subject → [tokens, at]

    def take(self, subject: str, cost: int = 1) -> int:
        """0 if `subject` may spend `cost` events now (and spends them), else seconds to wait."""
        cost = min(cost, self.burst)  # a batch above the burst (a misconfiguration) passes when full
        now = time.monotonic()
        bucket = self._buckets.get(subject)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_idle(now)
            bucket = self._buckets[subject] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= cost:
            bucket[0] = tokens - cost
            return 0
        bucket[0] = tokens
        return max(1, math.ceil((cost - tokens) / self.rate))

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        full = [s for s, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for subject in full:
            del self._buckets[subject]
        if len(self._buckets) >= MAX_TRACKED:  # all busy: start over rather than grow without bound
            self._buckets.clear()
