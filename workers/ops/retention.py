"""How long what the system writes is kept (`workers prune`), and the rule that keeps it safe.

Pure: the settings, the cut-offs, and the check that refuses a retention that would let a
redelivered message be applied twice. The deleting is in workers/ops/prune.py.

Why IDEMPOTENCY_RETENTION_S has a floor: a message is recognised as a duplicate only while its
key is kept. A copy of an applied message can come back (a) through the retry queues, at most
the sum of RETRY_DELAYS_S over MAX_ATTEMPTS - 1 retries after its first try, and (b) through
`workers dlq replay`, which starts the retries again. The dead-letter queues are bounded by
size and count (DEAD_LETTER_MAX_BYTES / _MESSAGES), never by age, so nothing in the broker bounds
(b) in time: DEAD_LETTER_REPLAY_WINDOW_S is the operator's rule (replay a dead letter within
that long of its death), and the key must outlive both: retention > replay window + retry span.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Sequence

DAY = 86400


class RetentionRefused(ValueError):
    """A retention setting that is malformed or unsafe: `workers prune` exits 2 with this line."""


# env name per field; every retention `workers prune` applies besides the inbox's (INBOX_RETENTION_S,
# workers/notify InboxLimits) and the rate-limit windows (workers/settings/access_limits.Limits)
ENV = {
    "idempotency_s": "IDEMPOTENCY_RETENTION_S",
    "rejection_s": "REJECTION_RETENTION_S",
    "source_s": "SOURCE_RETENTION_S",
    "abandoned_upload_s": "ABANDONED_UPLOAD_RETENTION_S",
    "dead_letter_replay_s": "DEAD_LETTER_REPLAY_WINDOW_S",
    "batch": "PRUNE_BATCH",
    "lock_timeout_ms": "PRUNE_LOCK_TIMEOUT_MS",
}


@dataclass(frozen=True)
class RetentionConfig:
    # receipts `applied` and duplicate detection: well past the longest redelivery (module doc)
    idempotency_s: int = 14 * DAY
    # receipts `rejected`: as long as `applied` ones, so a receipt never outlives its sibling kind
    rejection_s: int = 14 * DAY
    # a settled (ready or failed) video's upload: a week to re-transcode after a rendition bug is
    # reported, while the bucket holds at most a week of sources besides the renditions
    source_s: int = 7 * DAY
    # a `pending_upload` never completed: its form is dead after UPLOAD_URL_EXPIRY_S, but a
    # completion queued by an offline client may still come; a day lets it find its video
    abandoned_upload_s: int = DAY
    # how long after its death a dead letter may still be replayed (the operator's rule)
    dead_letter_replay_s: int = 7 * DAY
    batch: int = 1000                 # rows per DELETE, one short transaction each
    lock_timeout_ms: int = 2000       # a batch that would wait longer for a lock fails, never blocks

    @classmethod
    def from_env(cls, environ=None) -> "RetentionConfig":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            name, raw = ENV[f.name], environ.get(ENV[f.name]) or str(f.default)
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise RetentionRefused(f"{name} must be a whole number, not {raw[:40]!r}") from None
            if values[f.name] < 1:
                raise RetentionRefused(f"{name} must be at least 1")
        return cls(**values)


def retry_span_s(max_attempts: int, retry_delays_s: Sequence[int]) -> int:
    """Longest time a message spends in the retry queues: the delays of attempts 1 .. max_attempts-1
    (workers/runtime/decision.py: the last delay repeats)."""
    return sum(retry_delays_s[min(attempt, len(retry_delays_s)) - 1] for attempt in range(1, max_attempts))


def redelivery_window_s(retention: RetentionConfig, max_attempts: int, retry_delays_s: Sequence[int]) -> int:
    """Longest time after its first delivery that a copy of a message can still arrive."""
    return retention.dead_letter_replay_s + retry_span_s(max_attempts, retry_delays_s)


def check(retention: RetentionConfig, max_attempts: int, retry_delays_s: Sequence[int], upload_expiry_s: int) -> None:
    """Refuse settings under which prune would delete something still in use."""
    window = redelivery_window_s(retention, max_attempts, retry_delays_s)
    if retention.idempotency_s <= window:
        raise RetentionRefused(
            f"IDEMPOTENCY_RETENTION_S={retention.idempotency_s} must exceed the longest redelivery, {window} s "
            f"(DEAD_LETTER_REPLAY_WINDOW_S={retention.dead_letter_replay_s} + retries "
            f"{retry_span_s(max_attempts, retry_delays_s)} s): a duplicate would be applied again")
    if retention.abandoned_upload_s <= upload_expiry_s:
        raise RetentionRefused(
            f"ABANDONED_UPLOAD_RETENTION_S={retention.abandoned_upload_s} must exceed UPLOAD_URL_EXPIRY_S="
            f"{upload_expiry_s}: an upload whose form still works is not abandoned")


def cutoff(now: datetime, retention_s: int) -> datetime:
    """What is older than this (strictly) is past its retention at `now`."""
    if now.tzinfo is None:
        raise ValueError("now must carry its time zone")  # a naive clock compares wrong with timestamptz
    return now - timedelta(seconds=retention_s)
