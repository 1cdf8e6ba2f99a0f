"""Worker throughput: the settings worker against raw pika and the naive loop, in one run.

    python -m tests.bench.bench_worker [--events 20000]

Prints events/s for each and the ratios DESIGN §8 sets: ≥ 7× naive, ≥ 0.3× raw consumption;
then the same worker through PgBouncer in transaction pooling mode (tests/support/pgbouncer.py).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pika
import psycopg2

from workers.ops import migrate
from tests.support import pgbouncer, rabbit

PG = "postgresql://postgres@127.0.0.1:5432/"


def make_events(n: int) -> list[bytes]:
    users = [str(uuid.uuid4()) for _ in range(max(1, n // 10))]
    base = datetime(2025, 11, 5, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        ts = (base + timedelta(seconds=random.randint(0, 10**6))).isoformat().replace("+00:00", "Z")
        out.append(orjson.dumps({
            "schema_version": "1.0.0", "event_type": "user.settings.submitted",
            "client_generated_id": str(uuid.uuid4()), "user_id": random.choice(users), "timestamp": ts,
            "source_service": "frontend",
            "data": {"weight": {"value": round(random.uniform(50, 120), 1), "unit": "kg"},
                     "age": random.randint(18, 70), "training_days_per_week": random.randint(1, 6)}}))
    return out


def fill(url: str, queue: str, bodies: list[bytes], arguments: dict | None = None) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    if arguments is not None:
        ch.queue_declare(queue, durable=True, arguments=arguments)
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    for i in range(0, len(bodies), 500):
        for b in bodies[i:i + 500]:
            ch.basic_publish("", queue, b, props)
    while ch.queue_declare(queue, passive=True).method.message_count < len(bodies):
        time.sleep(0.05)
    conn.close()


def bench_raw(url: str, bodies: list[bytes]) -> float:
    """Raw pika consumption: prefetch 200, one multiple-ack per 100 messages, no work."""
    fill(url, "bench.raw", bodies, {"x-queue-type": "quorum"})
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=200)
    state = {"n": 0}
    n_total = len(bodies)

    def on_message(channel, method, _props, _body):
        state["n"] += 1
        if state["n"] % 100 == 0 or state["n"] == n_total:
            channel.basic_ack(method.delivery_tag, multiple=True)

    ch.basic_consume("bench.raw", on_message)
    start = time.perf_counter()
    while state["n"] < n_total:
        conn.process_data_events(time_limit=0.1)
    elapsed = time.perf_counter() - start
    conn.close()
    return n_total / elapsed


NAIVE_SQL = """
INSERT INTO idempotency_keys (consumer, client_generated_id, user_id, event_type, payload_hash)
VALUES ('naive', %(id)s, %(user)s, %(type)s, %(hash)s);
INSERT INTO user_settings (user_id, weight_value, weight_unit, age, training_days_per_week, data, event_id,
                           event_timestamp, version)
VALUES (%(user)s, %(w)s, %(u)s, %(age)s, %(days)s, %(data)s, %(id)s, %(ts)s, %(version)s)
ON CONFLICT (user_id) DO UPDATE SET weight_value = EXCLUDED.weight_value, age = EXCLUDED.age,
    version = EXCLUDED.version WHERE user_settings.version < EXCLUDED.version
"""


def bench_naive(url: str, db: str, bodies: list[bytes]) -> float:
    """The naive way: psycopg2 and pika alone, one transaction and one ack per message."""
    fill(url, "bench.naive", bodies, {"x-queue-type": "quorum"})
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    pg = psycopg2.connect(db)
    state = {"n": 0}

    def on_message(channel, method, _props, body):
        e = orjson.loads(body)
        d = e["data"]
        with pg.cursor() as cur:
            cur.execute(NAIVE_SQL, {"id": e["client_generated_id"], "user": e["user_id"], "type": e["event_type"],
                                    "hash": b"x", "w": d["weight"]["value"], "u": d["weight"]["unit"],
                                    "age": d["age"], "days": d["training_days_per_week"], "data": body.decode(),
                                    "ts": e["timestamp"], "version": e["timestamp"] + "/" + e["client_generated_id"]})
        pg.commit()
        channel.basic_ack(method.delivery_tag)
        state["n"] += 1

    ch.basic_consume("bench.naive", on_message)
    start = time.perf_counter()
    while state["n"] < len(bodies):
        conn.process_data_events(time_limit=0.1)
    elapsed = time.perf_counter() - start
    conn.close()
    pg.close()
    return len(bodies) / elapsed


def bench_worker(url: str, db: str, bodies: list[bytes], prefetch: int) -> float:
    """`workers run settings`, full semantics, one process, against a pre-filled queue."""
    from shared.feedtokens import generate_keypair
    private, public = generate_keypair()  # the settings worker refuses to start without its signing key
    env = {**os.environ, "RABBITMQ_URL": url, "SETTINGS_DATABASE_URL": db, "PREFETCH": str(prefetch),
           "LOG_LEVEL": "INFO", "HEALTH_PORT": "0", "FEED_TOKEN_PRIVATE_KEY": private, "FEED_TOKEN_PUBLIC_KEY": public}
    subprocess.run([sys.executable, "-m", "workers", "topology"], env=env, check=True, capture_output=True)
    fill(url, "settings", bodies)
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "workers", "run", "settings"], env=env, stdout=log)
    pg = psycopg2.connect(db)
    pg.autocommit = True
    start = None
    try:
        with pg.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) FROM idempotency_keys WHERE consumer = 'settings'")
                n = cur.fetchone()[0]
                if start is None and n > 0:
                    start, first = time.perf_counter(), n  # from the first commit: excludes start-up
                if n >= len(bodies):
                    break
                time.sleep(0.1)  # count(*) costs the database too: poll gently (±0.1 s on a 3+ s run)
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
        pg.close()
    return (len(bodies) - first) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=int(os.environ.get("PREFETCH", 400)))
    args = parser.parse_args()
    vhost, url = rabbit.create_vhost()
    name = f"settings_bench_{uuid.uuid4().hex[:8]}"
    db = PG + name
    migrate.ensure_database(db)
    migrate.apply("settings", db)
    try:
        bodies = make_events(args.events)
        raw = bench_raw(url, bodies)
        naive = bench_naive(url, db, bodies)
        with psycopg2.connect(db) as pg, pg.cursor() as cur:
            cur.execute("TRUNCATE user_settings, idempotency_keys")
        worker = bench_worker(url, db, bodies, args.prefetch)
        with psycopg2.connect(db) as pg, pg.cursor() as cur:
            cur.execute("TRUNCATE user_settings, idempotency_keys")
        bouncer = pgbouncer.start()
        try:
            pooled = bench_worker(url, bouncer.url(db), bodies, args.prefetch)
        finally:
            bouncer.stop()
    finally:
        rabbit.delete_vhost(vhost)
        admin = psycopg2.connect(PG + "postgres")
        admin.autocommit = True
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(f"machine: {os.cpu_count()} cores; {args.events} events pre-queued; worker prefetch {args.prefetch}")
    print(f"raw pika consumption (prefetch 200, multiple acks): {raw:10.0f} msg/s")
    print(f"naive (1 transaction + 1 ack per message):          {naive:10.0f} events/s")
    print(f"settings worker (full semantics, 1 process):        {worker:10.0f} events/s")
    print(f"settings worker through PgBouncer (transaction mode): {pooled:8.0f} events/s")
    print(f"worker / naive = {worker / naive:.2f}x (design >= 7, held since 2026-12: >= 10)   worker / raw = {worker / raw:.2f}x (target >= 0.3)")
    print(f"through PgBouncer: worker / naive = {pooled / naive:.2f}x   worker / raw = {pooled / raw:.2f}x")


if __name__ == "__main__":
    main()
