"""Reading what the run left: effect rows per event, counters against the rows they count,
dead letters, relayed outcome events, and whether everything has drained."""
from __future__ import annotations

import time
from collections import Counter

import pika
import psycopg2

from shared.envelope import outcome_id
from shared.topology import QueueNames
from tests.chaos.workload import EFFECT_ROWS, OUTCOMES, WORKERS, Planned

# counters kept beside the rows they count: a double (or a lost update) shows as a difference
DRIFT = {
    "video": "SELECT count(*) FROM feed_posts p WHERE p.comment_count <> "
             "(SELECT count(*) FROM comments c WHERE c.post_id = p.post_id AND c.deleted_at IS NULL)",
    "dm": "SELECT count(*) FROM conversations c WHERE c.last_seq <> "
          "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.conversation_id)",
}


def _query(url: str, sql: str, params=()):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def effect_rows(db_urls: dict[str, str], plans: list[Planned]) -> dict[str, int]:
    """Event id → how many effect rows carry its key."""
    counts: dict[str, int] = {}
    for worker in WORKERS:
        table, column = EFFECT_ROWS[worker]
        mine = {p.key: p.id for p in plans if p.worker == worker}
        rows = _query(db_urls[worker], f"SELECT {column}::text, count(*) FROM {table} "
                                       f"WHERE {column} = ANY(%s::uuid[]) GROUP BY 1", (list(mine),))
        for key, n in rows:
            counts[mine[key]] = n
    return counts


def drift(db_urls: dict[str, str]) -> int:
    return sum(_query(db_urls[w], sql)[0][0] for w, sql in DRIFT.items())


def outbox_backlog(db_urls: dict[str, str]) -> int:
    return sum(_query(url, "SELECT count(*) FROM outbox")[0][0] for url in db_urls.values())


def expected_outcomes(plans: list[Planned]) -> dict[str, str]:
    """Event id → the id of the outcome event its worker emits once it is applied."""
    return {p.id: str(outcome_id(p.id, f"{OUTCOMES[p.worker]}/{p.event['user_id']}"))
            for p in plans if p.worker in OUTCOMES}


def take_all(url: str, queue: str, timeout_s: float = 120) -> list[pika.BasicProperties]:
    """Every message in `queue` (taken: acked), as its properties. A pause in deliveries is not
    the end (a cluster's queue leader may be on a node still catching up): done once the queue
    itself says it is empty."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=500)
        taken, deadline = [], time.monotonic() + timeout_s
        for method, props, _body in ch.consume(queue, auto_ack=True, inactivity_timeout=1):
            if method is not None:
                taken.append(props)
            elif ch.queue_declare(queue, passive=True).method.message_count == 0 or time.monotonic() > deadline:
                break
        ch.cancel()
        return taken
    finally:
        conn.close()


def dead_letters(url: str) -> tuple[Counter, Counter]:
    """(dead letters per message id, per (worker, reason)) in the four workers' dead-letter queues."""
    per_id, reasons = Counter(), Counter()
    for worker in WORKERS:
        for props in take_all(url, QueueNames(worker).dead):
            per_id[props.message_id] += 1
            reason = (props.headers or {}).get("x-dead-reason") or (props.headers or {}).get("x-first-death-reason")
            reasons[(worker, reason.decode() if isinstance(reason, bytes) else reason)] += 1
    return per_id, reasons


def pending(depths: dict[str, int], retry_delays_s: list[int]) -> dict[str, int]:
    """The workers' queues (main and retry) that still hold messages, ready or unacknowledged."""
    names = [n for w in WORKERS for n in [QueueNames(w).main] + [QueueNames(w).retry(d) for d in retry_delays_s]]
    return {n: depths.get(n, 0) for n in names if depths.get(n, 0)}
