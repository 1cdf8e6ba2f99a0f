"""Turns a batch of deliveries into committed work and one verdict per message (DESIGN §4–5).

Fast path: one transaction for the whole batch (claim every idempotency key in one statement,
buffered writes in one round trip, one commit). If anything in it fails, roll back and replay
the batch one message per transaction, so only the culprit retries or dead-letters.

UnitOfWork is the transaction scope of both this path and the query path (workers/runtime/queries.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import orjson

from workers.runtime import db, receipts
from shared import envelope
from shared.envelope import Envelope
from shared.errors import IdempotencyConflict, InvalidEvent, PermanentError, UnknownEventType
from workers.runtime.handler import Context, Cursor, WorkerSpec

PROCESSED, DUPLICATE, RETRY, DEAD = "processed", "duplicate", "retry", "dead"


class DatabaseUnavailable(Exception):
    """The database cannot be reached: hold the batch, reconnect with backoff, redo it."""


@dataclass
class Delivery:
    tag: int
    body: bytes
    properties: object
    routing_key: str
    generation: int  # which channel delivered it; tags mean nothing on another channel
    event_type: str = "unknown"  # its metrics label: a type of the handler table, or "unknown"
    parsed: object = None  # BatchProcessor.parse()'s answer when the I/O thread already had it

    @property
    def attempt(self) -> int:
        headers = self.properties.headers or {}
        return int(headers.get("x-attempts", 0)) + 1


@dataclass(frozen=True)
class Verdict:
    """What trying a message came to; what then becomes of it is workers/runtime/decision.py's."""

    delivery: Delivery
    outcome: str
    event: Envelope | None = None
    error: BaseException | None = None
    reply: dict | None = None          # what the handler returned, for a request–reply caller


class UnitOfWork:
    """One database connection and the one transaction scope run on it: connect, claim the
    events' idempotency keys, run the handler(s), flush, commit; on failure roll back, and turn
    a database that cannot be reached into DatabaseUnavailable (the connection is dropped and
    made again next time). Nothing outlives a transaction on the connection (PgBouncer in
    transaction mode may hand the next one another server connection)."""

    def __init__(self, spec: WorkerSpec, db_url: str, application_name: str):
        self.spec, self.db_url, self.application_name = spec, db_url, application_name
        self.conn = None

    def connection(self):
        if self.conn is None or self.conn.closed:
            try:
                self.conn = db.connect(self.db_url, application_name=self.application_name)
            except Exception as exc:
                raise DatabaseUnavailable(str(exc).strip()) from exc
        return self.conn

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None

    def run(self, items: list[tuple["Delivery | None", Envelope]], work: Callable):
        """Commit `work(ctx, claimed, verdicts)` with the keys of `items` claimed first; returns
        (claimed, verdicts of the duplicates and conflicts, work's answer, outbox events written)."""
        conn = self.connection()
        ctx = Context(conn, self.spec.name, Cursor(conn, self.spec.batched))
        try:
            ctx.cursor.defer(db.TIMEOUTS.encode())  # rides along with the first round trip
            claimed, verdicts = claim_keys(ctx.cursor, self.spec.name, items) if items else ([], [])
            result = work(ctx, claimed, verdicts)
            ctx.flush()
            conn.commit()
        except BaseException as exc:
            if not conn.closed:
                try:
                    conn.rollback()
                except Exception:  # a connection that cannot roll back is broken: start afresh
                    self.close()
            if db.is_unreachable(exc, conn):
                self.close()
                raise DatabaseUnavailable(str(exc).strip()) from exc
            raise
        return claimed, verdicts, result, ctx.outbox


class BatchProcessor:
    def __init__(self, spec: WorkerSpec, db_url: str, max_clock_skew_s: int = 300):
        self.spec = spec
        self.db_url = db_url
        self.max_clock_skew_s = max_clock_skew_s
        self.unit = UnitOfWork(spec, db_url, f"worker-{spec.name}")

    def connection(self):
        return self.unit.connection()

    def close(self) -> None:
        self.unit.close()

    def parse(self, d: Delivery) -> Envelope | PermanentError:
        """The delivery's validated envelope, or why it can never be processed. Thread-safe: the
        consumer calls it on its I/O thread as messages arrive (see Consumer._on_message)."""
        try:
            event = envelope.parse(d.body, max_clock_skew_s=self.max_clock_skew_s)
        except PermanentError as exc:
            return exc
        except Exception as exc:
            # a check of ours that raised instead of refusing: without this the message would fail
            # its whole batch on every redelivery and hold up every message behind it
            return InvalidEvent(f"unreadable event ({type(exc).__name__}: {str(exc)[:200]})")
        if event.event_type not in self.spec.handlers:
            return UnknownEventType(f"worker {self.spec.name} has no handler for {event.event_type}",
                                    field="event_type")
        return event

    def process(self, deliveries: list[Delivery]) -> tuple[list[Verdict], list[Envelope]]:
        """Commit the batch's work; return verdicts in delivery order and outbox events written."""
        verdicts: dict[int, Verdict] = {}
        runnable: list[tuple[Delivery, Envelope]] = []
        for d in deliveries:
            parsed = d.parsed if d.parsed is not None else self.parse(d)
            if isinstance(parsed, PermanentError):
                verdicts[d.tag] = Verdict(d, DEAD, None, parsed)
            else:
                runnable.append((d, parsed))
        outbox: list[Envelope] = []
        if len(runnable) > 1:
            try:
                batch_verdicts, outbox = self._transaction(runnable)
                verdicts.update({v.delivery.tag: v for v in batch_verdicts})
                runnable = []
            except DatabaseUnavailable:
                raise
            except Exception:  # someone in the batch failed: find out who, one by one
                pass
        for d, event in runnable:
            try:
                (verdict,), written = self._transaction([(d, event)])
                outbox.extend(written)
            except DatabaseUnavailable:
                raise
            except PermanentError as exc:
                verdict = Verdict(d, DEAD, event, exc)
            except Exception as exc:
                verdict = Verdict(d, DEAD if db.is_permanent(exc) else RETRY, event, exc)
            verdicts[d.tag] = verdict
        return [verdicts[d.tag] for d in deliveries], outbox

    def record_rejections(self, rejections: list[receipts.Rejection]) -> list[Envelope]:
        """Commit the rejections of a batch's dead letters and their `event.rejected` outbox rows
        in one small transaction of their own (workers/runtime/receipts.py); returns the events to publish.
        DatabaseUnavailable when the database cannot be reached: the caller holds the batch."""
        _, _, written, _ = self.unit.run([], lambda ctx, *_: receipts.record(ctx.cursor, self.spec.name, rejections))
        return written

    def _transaction(self, items: list[tuple[Delivery, Envelope]]):
        def handle(ctx, claimed, _verdicts):
            return [self.spec.handlers[event.event_type](ctx, event) for _, event in claimed]
        claimed, verdicts, replies, outbox = self.unit.run(items, handle)
        return verdicts + [Verdict(d, PROCESSED, e, reply=r) for (d, e), r in zip(claimed, replies)], outbox


_CLAIM = ("INSERT INTO idempotency_keys (consumer, client_generated_id, user_id, event_type, payload_hash) "
          "SELECT %s, (r->>0)::uuid, (r->>1)::uuid, r->>2, decode(r->>3, 'hex') "
          "FROM jsonb_array_elements(%s::jsonb) AS r "
          "ON CONFLICT DO NOTHING RETURNING user_id::text, client_generated_id::text")


def claim_keys(cur: Cursor, consumer: str, items: list[tuple[Delivery | None, Envelope]]):
    """Insert every idempotency key in one statement; the ones already there are duplicates
    (same payload) or conflicts (another payload). Keys are per sender: another user's event
    with the same id is a different event, never a conflict."""
    first: dict[tuple[str, str], Envelope] = {}
    unique, verdicts = [], []
    for d, e in items:
        seen = first.get((e.user_id, e.id))
        if seen is None:
            first[(e.user_id, e.id)] = e
            unique.append((d, e))
        elif seen.payload_hash == e.payload_hash:
            verdicts.append(Verdict(d, DUPLICATE, e))
        else:
            verdicts.append(Verdict(d, DEAD, e, IdempotencyConflict(
                f"client_generated_id {e.id} reused with another payload")))
    # the keys travel as one JSON array: orjson serializes a batch in microseconds
    cur.execute(_CLAIM, (consumer, orjson.dumps(
        [(e.id, e.user_id, e.event_type, e.payload_hash.hex()) for _, e in unique]).decode()))
    fresh = {(r[0], r[1]) for r in cur.fetchall()}
    taken = [e for _, e in unique if (e.user_id, e.id) not in fresh]
    existing = {}
    if taken:
        cur.execute("SELECT user_id::text, client_generated_id::text, payload_hash FROM idempotency_keys "
                    "WHERE consumer = %s AND (user_id, client_generated_id) IN "
                    "(SELECT * FROM unnest(%s::uuid[], %s::uuid[]))",
                    (consumer, [e.user_id for e in taken], [e.id for e in taken]))
        existing = {(r[0], r[1]): bytes(r[2]) for r in cur.fetchall()}
    claimed = []
    for d, e in unique:
        key = (e.user_id, e.id)
        if key in fresh:
            claimed.append((d, e))
        elif existing.get(key) == e.payload_hash:
            verdicts.append(Verdict(d, DUPLICATE, e))
        else:
            verdicts.append(Verdict(d, DEAD, e, IdempotencyConflict(
                f"client_generated_id {e.id} was already used with another payload")))
    return claimed, verdicts
