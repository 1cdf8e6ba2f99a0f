"""Receipts (DESIGN §9): what became of each event a user sent, answered by every worker's runtime.

- applied: the worker committed it (or skipped it as a duplicate of one it committed): its
  idempotency key, which the happy path writes anyway (idempotency_keys).
- rejected: the runtime dead-lettered it for a reason the sender can act on: a `rejections` row
  (migrations/_runtime/0003_rejections.sql) written on the dead-letter path only, in a small
  transaction of its own after the batch's, before the original is acked, with an
  `event.rejected` outcome event for the sender's inbox in the same transaction (outbox).
- pending: neither (not yet consumed, retrying, or another user's id): the id is absent.

Each worker answers `<worker>.receipts` (shared/schemas/queries/receipts.json) on its query
path, whatever its domain module declares: see with_receipts().
"""
from __future__ import annotations

import dataclasses
import hashlib
import uuid

import orjson

from shared import contracts, strictjson
from shared.envelope import Envelope, canonical_id, new_event, rfc3339
from workers.runtime.handler import Context, Request, WorkerSpec

QUERY_KIND = "receipts"
REJECTED_EVENT = "event.rejected"
MAX_EVENT_TYPE, MAX_FIELD = 64, 200
SENT_BY_USERS = frozenset({"frontend", "ingress"})  # x-producer of the events a user sends


def query_name(worker: str) -> str:
    """`<worker>.receipts`: app.queries routes by name, so each worker answers its own."""
    return f"{worker}.{QUERY_KIND}"


def with_receipts(spec: WorkerSpec) -> WorkerSpec:
    """The spec as the runtime runs it: its domain's queries plus `<worker>.receipts`."""
    name = query_name(spec.name)
    if name in spec.queries:
        return spec
    return dataclasses.replace(spec, queries={**spec.queries, name: answer})


# ---- the dead-letter path --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Rejection:
    user_id: str
    client_generated_id: str
    event_type: str
    reason: str
    field: str | None
    detail: str


def rejection(event: Envelope | None, body: bytes, fallback_type: str | None, reason: str,
              field: str | None, detail: str) -> Rejection | None:
    """The rejection to record for a dead-lettered message, or None when its sender is unknown.

    The sender is the parsed envelope's; for an envelope that did not validate (a schema
    violation, an unknown major version) the user_id and client_generated_id it carries, when
    both are UUIDs: the ingress authenticated them, or a worker wrote them. A body that is not
    a JSON object with those two gets no receipt."""
    if event is not None:
        user_id, event_id, event_type = event.user_id, event.id, event.event_type
    else:
        try:
            raw = strictjson.loads(body)
            user_id, event_id = canonical_id(raw["user_id"]), canonical_id(raw["client_generated_id"])
        except Exception:  # not JSON, not an object, a field missing or not a UUID: nobody to tell
            return None
        event_type = raw.get("event_type") if isinstance(raw.get("event_type"), str) else None
    event_type = (event_type or fallback_type or "unknown").replace("\x00", "")[:MAX_EVENT_TYPE] or "unknown"
    field = field.replace("\x00", "")[:MAX_FIELD] if isinstance(field, str) and field else None
    return Rejection(user_id, event_id, event_type, reason, field, detail)


# rows as one JSON array of [consumer, user_id, client_generated_id, event_type, reason, field, detail]
_UPSERT = ("INSERT INTO rejections (consumer, user_id, client_generated_id, event_type, reason, field, detail) "
           "SELECT r->>0, (r->>1)::uuid, (r->>2)::uuid, r->>3, r->>4, r->>5, r->>6 "
           "FROM jsonb_array_elements(%s::jsonb) AS r ON CONFLICT (consumer, user_id, client_generated_id) DO UPDATE SET "
           "event_type = EXCLUDED.event_type, reason = EXCLUDED.reason, field = EXCLUDED.field, "
           "detail = EXCLUDED.detail, rejected_at = now()")
_OUTBOX = ("INSERT INTO outbox (id, event_type, body) SELECT (r->>0)::uuid, r->>1, convert_to(r->>2, 'UTF8') "
           "FROM jsonb_array_elements(%s::jsonb) AS r ON CONFLICT (id) DO NOTHING")


def tells_sender(event_type: str) -> bool:
    """Whether a rejection goes to the sender's inbox as `event.rejected`: only for events a
    user sent (or the ingress made for them, media.uploaded). Another worker's outcome event that
    a worker refused is ours to fix, not the user's (its receipt is still recorded), and an
    `event.rejected` about an `event.rejected` could go round forever."""
    schema = contracts.data_schemas().get(event_type)
    return schema is not None and schema.get("x-producer") in SENT_BY_USERS


def rejected_event(worker: str, r: Rejection) -> Envelope:
    """The sender's `event.rejected`. Its id derives from the rejected event and everything the
    outcome says, so a rejection redone after a crash is the same event (deduplicated downstream)
    while a different later one (replayed, refused for another reason) is a new event, never an
    idempotency conflict."""
    data = {"client_generated_id": r.client_generated_id, "event_type": r.event_type, "reason": r.reason,
            "field": r.field, "detail": r.detail, "worker": worker}
    digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
    event_id = uuid.uuid5(uuid.UUID(r.client_generated_id), f"{REJECTED_EVENT}/{r.user_id}/{digest}")
    event = new_event(REJECTED_EVENT, r.user_id, data, worker, event_id)
    contracts.validate(event.to_dict())  # our own bug, caught before it reaches anyone
    return event


def record(cur, worker: str, rejections: list[Rejection]) -> list[Envelope]:
    """Upsert the rows and write their `event.rejected` outbox rows on `cur`, in the caller's
    transaction (the caller commits). Returns the outcome events, to publish after commit."""
    latest = {(r.user_id, r.client_generated_id): r for r in rejections}  # one row per key per statement
    events = [rejected_event(worker, r) for r in latest.values() if tells_sender(r.event_type)]
    cur.execute(_UPSERT, (orjson.dumps([(worker, r.user_id, r.client_generated_id, r.event_type, r.reason,
                                          r.field, r.detail) for r in latest.values()]).decode(),))
    if events:
        cur.execute(_OUTBOX, (orjson.dumps([(e.id, e.event_type, e.to_json().decode()) for e in events]).decode(),))
    return events


# ---- the query -------------------------------------------------------------------------------

_APPLIED = ("SELECT client_generated_id::text, event_type, processed_at FROM idempotency_keys "
            "WHERE consumer = %s AND user_id = %s::uuid AND client_generated_id = ANY(%s::uuid[])")
_REJECTED = ("SELECT client_generated_id::text, event_type, reason, field, detail, rejected_at FROM rejections "
             "WHERE consumer = %s AND user_id = %s::uuid AND client_generated_id = ANY(%s::uuid[])")


def answer(ctx: Context, request: Request) -> dict:
    """`<worker>.receipts` {"ids": [...]} → {"receipts": [...]}, in the order asked, for the ids
    this worker holds something about for this caller only.

    Applied always wins: over an earlier rejection (a replay, once what was missing is there,
    succeeded), and over a later one, which can only be the same id sent again with another
    payload (idempotency_conflict): the event under that id did take effect; the refused re-send
    reached the sender's inbox as event.rejected."""
    ids = list(dict.fromkeys(canonical_id(i) for i in request.params["ids"]))
    with ctx.cursor as cur:
        cur.execute(_APPLIED, (ctx.worker, request.user_id, ids))
        applied = {i: (t, at) for i, t, at in cur.fetchall()}
        cur.execute(_REJECTED, (ctx.worker, request.user_id, ids))
        rejected = {row[0]: row[1:] for row in cur.fetchall()}
    receipts = []
    for i in ids:
        a, r = applied.get(i), rejected.get(i)
        if a is not None:
            receipts.append({"client_generated_id": i, "event_type": a[0], "status": "applied", "at": rfc3339(a[1])})
        elif r is not None:
            event_type, reason, field, detail, at = r
            receipts.append({"client_generated_id": i, "event_type": event_type, "status": "rejected",
                             "reason": reason, "field": field, "detail": detail, "at": rfc3339(at)})
    return {"receipts": receipts}
