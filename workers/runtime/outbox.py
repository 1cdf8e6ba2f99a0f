"""Outcome events: published after commit, and relayed if a crash left them unpublished."""
from __future__ import annotations

import time

import orjson
import pika

from shared import broker
from workers.runtime import db
from shared.envelope import DEFAULT_SCHEMA_VERSION, Envelope
from workers.runtime.publisher import BatchPublisher, Message


# An outbox row per event, from one JSON array of [id, event_type, body]: written in the
# transaction whose work the events announce (handler.Context.flush, the reminder scheduler).
INSERT_ROWS = ("INSERT INTO outbox (id, event_type, body) "
               "SELECT (r->>0)::uuid, r->>1, convert_to(r->>2, 'UTF8') FROM jsonb_array_elements(%s::jsonb) AS r "
               "ON CONFLICT (id) DO NOTHING")


def rows(events: list[Envelope]) -> str:
    """INSERT_ROWS's parameter."""
    return orjson.dumps([(e.id, e.event_type, e.to_json().decode()) for e in events]).decode()


def message(exchange: str, event_id: str, event_type: str, body: bytes, source: str) -> Message:
    props = pika.BasicProperties(
        message_id=event_id, type=event_type, content_type="application/json",
        delivery_mode=broker.PERSISTENT, timestamp=int(time.time()),
        headers={"schema_version": DEFAULT_SCHEMA_VERSION, "source_service": source})
    return Message(exchange, event_type, body, props)


def publish_written(conn, publisher: BatchPublisher, exchange: str, events: list[Envelope],
                    source: str) -> None:
    """Publish what this batch wrote, then forget the rows; on failure the relay retries them."""
    if not events:
        return
    publisher.publish([message(exchange, e.id, e.event_type, e.to_json(), source) for e in events])
    with conn.cursor() as cur:
        cur.execute(f"{db.TIMEOUTS}; DELETE FROM outbox WHERE id = ANY(%s::uuid[])", ([e.id for e in events],))
    conn.commit()


def relay(conn, publisher: BatchPublisher, exchange: str, source: str,
          min_age_s: float, limit: int = 500) -> int:
    """Publish rows older than `min_age_s` (left by a crash); row locks keep replicas apart."""
    try:
        with conn.cursor() as cur:
            cur.execute(f"{db.TIMEOUTS}; SELECT id::text, event_type, body FROM outbox "
                        "WHERE created_at < now() - %s * interval '1 second' "
                        "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED", (min_age_s, limit))
            rows = cur.fetchall()
            if rows:
                publisher.publish([message(exchange, i, t, bytes(b), source) for i, t, b in rows])
                cur.execute("DELETE FROM outbox WHERE id = ANY(%s::uuid[])", ([r[0] for r in rows],))
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return len(rows)


def backlog(conn) -> int:
    with conn.cursor() as cur:
        cur.execute(f"{db.TIMEOUTS}; SELECT count(*) FROM outbox")
        count = cur.fetchone()[0]
    conn.commit()
    return count
