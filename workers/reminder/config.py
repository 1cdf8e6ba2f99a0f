"""The reminder worker's settings, read once and checked at start."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ReminderConfig:
    grace_s: float = 3600      # REMINDER_GRACE_S: an occurrence older than this when claimed is missed, not fired
    tick_s: float = 0.5        # REMINDER_TICK_S: how often a replica looks for due rows
    claim_batch: int = 500     # REMINDER_CLAIM_BATCH: rows claimed (and fired) per transaction

    @classmethod
    def from_env(cls, env=os.environ) -> "ReminderConfig":
        def number(name: str, default: float, kind=float, low: float = 0.0):
            raw = env.get(name) or str(default)
            try:
                value = kind(raw)
            except ValueError:
                raise RuntimeError(f"{name} must be a number, not {raw[:40]!r}") from None
            if not value > low:
                raise RuntimeError(f"{name} must be above {low:g}")
            return value
        return cls(grace_s=number("REMINDER_GRACE_S", cls.grace_s),
                   tick_s=number("REMINDER_TICK_S", cls.tick_s),
                   claim_batch=number("REMINDER_CLAIM_BATCH", cls.claim_batch, int))


@functools.cache
def settings() -> ReminderConfig:
    return ReminderConfig.from_env()
