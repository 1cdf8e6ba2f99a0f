"""Notify worker: each user's inbox of the outcome events addressed to them (DESIGN §9).

It consumes every outcome event whose schema names the frontend as a consumer
(`contracts.inbox_event_types()`); RECIPIENTS says, per event type, whose inbox it lands in.
An item is the outcome as it was emitted: `{id: its client_generated_id, event_type, data, at:
its timestamp}`, so the app shows it without another round trip.

- A replay or redelivery adds nothing: the runtime's idempotency key, and the item's key
  (user, item id) behind it.
- A user's items are numbered 1, 2, 3… in commit order under their `inboxes` row lock
  (migrations/notify), so a page cursor never skips an item that commits late.
- Bounded: at most INBOX_MAX_ITEMS_PER_USER items per user (older ones go in the transaction
  that adds new ones), none older than INBOX_RETENTION_S (`prune_inbox`, which the worker also
  runs every INBOX_PRUNE_INTERVAL_S, at most INBOX_PRUNE_BATCH rows at a time).
- After each commit the runtime publishes one `inbox.updated {user_ids}` per batch: the
  ingress wakes the long polls of these users.
Item data are never logged.
"""
from __future__ import annotations

import base64
import binascii
import functools
import itertools
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import orjson

from shared.envelope import Envelope, canonical_id, rfc3339
from shared.errors import InvalidEvent
from workers.runtime.handler import Context, Request, WorkerSpec

DEFAULT_PAGE = 50  # inbox.get without a limit (its schema allows 1..100)


# ---- who gets what ----------------------------------------------------------------------------

def _user(event: Envelope) -> list[str]:
    """The user the outcome is about: the envelope's user_id (the sender of the event it answers,
    or whom the emitting worker addressed it to)."""
    return [event.user_id]


def _others(field: str) -> Callable[[Envelope], list[str]]:
    """The users a data field lists, except the envelope's user (who did it)."""
    return lambda event: [u for u in event.data[field] if canonical_id(u) != event.user_id]


def _post_owner(event: Envelope) -> list[str]:
    """Whose post was commented on, unless they wrote the comment themselves."""
    owner = canonical_id(event.data["post_owner_id"])
    return [] if owner == event.user_id else [owner]


RECIPIENTS: dict[str, Callable[[Envelope], Iterable[str]]] = {
    "ai.response.ready": _user,                # the prompt's owner
    "ai.response.failed": _user,
    "comment.persisted": _post_owner,
    "dm.conversation.persisted": _others("participant_ids"),  # all but the starter
    "dm.message.persisted": _others("recipient_ids"),         # all but the sender
    "equipment.prefs.persisted": _user,
    "event.rejected": _user,                   # the sender of the rejected event
    "feed.access.locked": _user,               # the feed's owner (settings addresses it to them)
    "feed.post.created": _user,                # the video's owner
    "machine.note.persisted": _user,           # the note's author
    "media.failed": _user,                     # the video's owner
    "program.persisted": _user,
    "reminder.due": _user,                     # the reminder's owner (the scheduler addresses it to them)
    "workout_session.summarized": _user,
}


# ---- limits -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InboxLimits:
    max_items_per_user: int = 1000
    retention_s: int = 30 * 86400
    prune_interval_s: int = 300
    prune_batch: int = 10_000

    @classmethod
    def from_env(cls) -> "InboxLimits":
        values = {}
        for name, attr in (("INBOX_MAX_ITEMS_PER_USER", "max_items_per_user"), ("INBOX_RETENTION_S", "retention_s"),
                           ("INBOX_PRUNE_INTERVAL_S", "prune_interval_s"), ("INBOX_PRUNE_BATCH", "prune_batch")):
            raw = os.environ.get(name) or str(getattr(cls, attr))
            try:
                values[attr] = int(raw)
            except ValueError:
                raise RuntimeError(f"{name} must be a whole number, not {raw[:40]!r}") from None
            if values[attr] < 1:
                raise RuntimeError(f"{name} must be at least 1")
        return cls(**values)


@functools.cache
def limits() -> InboxLimits:
    return InboxLimits.from_env()


def check_config() -> None:
    """At start: refuse to run on limits that make no sense rather than on the first event."""
    limits()


# ---- storing ----------------------------------------------------------------------------------

# One statement per round trip (BATCHED): items already held (a replay) or twice in the batch are dropped, each
# recipient's inbox row is locked in user order (two batches never wait on each other in a
# circle) and bumped by how many items they get, and the items take the numbers just reserved
# in delivery order.
_STORE = """
fresh AS (
    SELECT DISTINCT ON (v.user_id, v.item_id) v.* FROM v
    WHERE NOT EXISTS (SELECT 1 FROM inbox_items i WHERE i.user_id = v.user_id AND i.item_id = v.item_id)
    ORDER BY v.user_id, v.item_id, v.ord
),
numbered AS (
    INSERT INTO inboxes AS b (user_id, last_seq)
    SELECT user_id, count(*) FROM fresh GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET last_seq = b.last_seq + EXCLUDED.last_seq
    RETURNING user_id, last_seq
)
INSERT INTO inbox_items (user_id, seq, item_id, event_type, data, at)
SELECT f.user_id, n.last_seq - count(*) OVER w + row_number() OVER (w ORDER BY f.ord),
       f.item_id, f.event_type, f.data, f.at
FROM fresh f JOIN numbered n USING (user_id)
WINDOW w AS (PARTITION BY f.user_id)
ON CONFLICT DO NOTHING
"""
STORE_ITEMS = """
WITH v (user_id, item_id, event_type, data, at, ord) AS (
    VALUES (%s::uuid, %s::uuid, %s, %s::jsonb, %s::timestamptz, %s::bigint)),""" + _STORE
STORE_ITEMS_ROWS = """
WITH v (user_id, item_id, event_type, data, at, ord) AS (
    SELECT (r->>0)::uuid, (r->>1)::uuid, r->>2, (r->>3)::jsonb, (r->>4)::timestamptz, (r->>5)::bigint
    FROM jsonb_array_elements(%s::jsonb) AS r),""" + _STORE

# The bound, after STORE_ITEMS (a statement of its own, so it sees every item committed before
# we took the inbox rows' locks): a user keeps the `keep` newest numbers. Walks the (user_id,
# seq) index from its low end: it touches only the rows it deletes.
_TRIM = """
WHERE b.user_id = v.user_id AND i.user_id = b.user_id AND i.seq <= b.last_seq - v.keep
"""
TRIM_ITEMS = """
DELETE FROM inbox_items i USING inboxes b, (VALUES (%s::uuid, %s::bigint)) AS v (user_id, keep)""" + _TRIM
TRIM_ITEMS_ROWS = """
DELETE FROM inbox_items i USING inboxes b,
    (SELECT (r->>0)::uuid, (r->>1)::bigint FROM jsonb_array_elements(%s::jsonb) AS r) AS v (user_id, keep)""" + _TRIM

# A round trip's items go as one STORE_ITEMS then one TRIM_ITEMS (WorkerSpec.batched): storing a
# later event's items before an earlier one's trim leaves the same newest items.
BATCHED = {STORE_ITEMS: STORE_ITEMS_ROWS, TRIM_ITEMS: TRIM_ITEMS_ROWS}

# Retention, a bounded batch: rows another replica is deleting are skipped, never waited for.
PRUNE_BATCH = """
DELETE FROM inbox_items WHERE (user_id, item_id) IN (
    SELECT user_id, item_id FROM inbox_items WHERE at < %s ORDER BY at LIMIT %s FOR UPDATE SKIP LOCKED)
"""

_order = itertools.count()            # delivery order within a batch, for the items' numbers
_next_prune = [0.0]                   # time.monotonic() of this process's next retention batch


def deliver(ctx: Context, event: Envelope) -> None:
    recipients = sorted({canonical_id(u) for u in RECIPIENTS[event.event_type](event)})
    if recipients:
        data, at, keep = orjson.dumps(event.data).decode(), rfc3339(event.timestamp), limits().max_items_per_user
        for user in recipients:
            ctx.cursor.execute(STORE_ITEMS, (user, event.id, event.event_type, data, at, next(_order)))
        for user in recipients:
            ctx.cursor.execute(TRIM_ITEMS, (user, keep))
        ctx.emit_gathered("inbox.updated", "user_ids", recipients, cause=event)
    _prune_when_due(ctx)


def _prune_when_due(ctx: Context) -> None:
    now = time.monotonic()
    if now < _next_prune[0]:
        return
    lim = limits()
    _next_prune[0] = now + lim.prune_interval_s
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=lim.retention_s)
    ctx.cursor.execute(PRUNE_BATCH, (cutoff, lim.prune_batch))


def prune_inbox(conn, now: datetime, retention_s: int | None = None, batch: int | None = None) -> int:
    """Delete items older than the retention (INBOX_RETENTION_S) at `now`, at most `batch` of
    them (every one when None), in the caller's transaction (the caller commits); returns how
    many. Call it again while it returns `batch`."""
    cutoff = now - timedelta(seconds=limits().retention_s if retention_s is None else retention_s)
    with conn.cursor() as cur:
        if batch is None:
            cur.execute("DELETE FROM inbox_items WHERE at < %s", (cutoff,))
        else:
            cur.execute(PRUNE_BATCH, (cutoff, batch))
        return cur.rowcount


# ---- reading ----------------------------------------------------------------------------------

PAGE = """
SELECT seq, item_id::text, event_type, data, at FROM inbox_items
WHERE user_id = %s AND seq > %s
ORDER BY seq
LIMIT %s
"""


def read_inbox(ctx: Context, request: Request) -> dict:
    """The caller's items after `after`, oldest first; next_cursor is where the next poll starts."""
    after = request.params.get("after")
    seq = _decode_cursor(after) if after else 0
    cur = ctx.cursor
    cur.execute(PAGE, (request.user_id, seq, request.params.get("limit", DEFAULT_PAGE)))
    rows = cur.fetchall()
    return {"items": [{"id": item_id, "event_type": event_type, "data": data, "at": rfc3339(at)}
                      for _, item_id, event_type, data, at in rows],
            "next_cursor": _encode_cursor(rows[-1][0]) if rows else (after or None)}


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"inbox|{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        tag, seq = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        if tag == "inbox" and seq.isascii() and seq.isdigit() and len(seq) <= 18:
            return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidEvent("after is not a cursor this API gave out", field="after")


HANDLERS = {event_type: deliver for event_type in RECIPIENTS}

# Answered at once to a waiting caller, off notify.queries.
QUERIES = {
    "inbox.get": read_inbox,
}

WORKER = WorkerSpec(name="notify", database="notify", handlers=HANDLERS, queries=QUERIES, startup=check_config,
                    description="per-user inboxes of outcome events, inbox.updated wake-ups", batched=BATCHED)
