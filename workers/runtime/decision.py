"""What becomes of a message once it was tried: a pure function of its outcome (DESIGN §5).

    processed, duplicate          → ack
    retry, attempts left          → retry in n s (RETRY_DELAYS_S, by attempt; the last one repeats)
    retry, attempts used up       → dead, reason: the error's exhausted_reason or retries_exhausted
    dead (permanent)              → dead, reason: the error's reason or rejected_by_database
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from shared.errors import public_detail

ACK, RETRY, DEAD = "ack", "retry", "dead"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str | None = None        # why it was dead-lettered
    detail: str | None = None        # what its sender may read about why (errors.public_detail)
    retry_in_s: int | None = None    # which delay queue it goes to


def decide(outcome: str, error: BaseException | None, attempt: int, max_attempts: int,
           retry_delays_s: Sequence[int]) -> Decision:
    """`outcome` is the processor's: processed, duplicate, retry or dead; `attempt` counts from 1."""
    if outcome in ("processed", "duplicate"):
        return Decision(ACK)
    if outcome == "retry" and attempt < max_attempts:
        return Decision(RETRY, retry_in_s=retry_delays_s[min(attempt, len(retry_delays_s)) - 1])
    if outcome == "retry":
        reason = getattr(error, "exhausted_reason", None) or "retries_exhausted"
    elif outcome == "dead":
        reason = getattr(error, "reason", None) or "rejected_by_database"
    else:
        raise ValueError(f"unknown outcome {outcome!r}")
    return Decision(DEAD, reason=reason, detail=public_detail(error, reason))
