"""Growing, jittered delays for reconnects: never a hot loop against a dependency that is down."""
from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 30.0, factor: float = 2.0):
        self.first, self.cap, self.factor = first, cap, factor
        self.attempts = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * self.factor ** self.attempts)
        self.attempts += 1
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempts = 0
