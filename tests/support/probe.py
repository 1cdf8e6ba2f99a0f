"""A worker of the tests' own ("probe", on a `probe` table): its handlers and how to watch it.

In-process (tests/shared/test_consumer.py, tests/workers/test_pgbouncer.py) or as a process
(`start_probe`, tests/support/probe_worker.py)."""
from __future__ import annotations

import sys

from tests.support.events import dumps, event

from shared.errors import Forbidden
from tests.support.db import query
from tests.support.processes import Process
from tests.support.rabbit import wait_for


def record(ctx, e):
    ctx.cursor.execute("INSERT INTO probe (event_id, age) VALUES (%s, %s)", (e.id, e.data["age"]))


def picky(ctx, e):
    if e.data["age"] == 66:
        raise Forbidden("age 66 is someone else's")
    record(ctx, e)


def probe_rows(db) -> int:
    return query(db, "SELECT count(*) FROM probe")[0][0]


def wait_consuming(rmq) -> None:
    wait_for(lambda: queue_has_consumer(rmq), message="consumer attached")


def queue_has_consumer(rmq, queue: str = "probe") -> bool:
    try:
        return rmq.channel.queue_declare(queue, passive=True).method.consumer_count > 0
    except Exception:  # not declared yet: the passive declare closed the channel
        rmq.channel = rmq.connection.channel()
        return False


def start_probe(env, db, **extra) -> Process:
    return Process([sys.executable, "-m", "tests.support.probe_worker"], {**env, "DATABASE_URL": db, **extra})


def consuming(proc) -> None:
    wait_for(lambda: any(line.get("msg") == "consuming" for line in proc.logs()), message="worker consuming")


def crash_after_commit(env, db_url: str, rmq) -> dict:
    """Run the probe worker so it dies right after committing one event (outbox row written, its
    outcome not yet published); returns that event."""
    crashing = start_probe(env, db_url, PROBE_EXIT_AFTER_COMMIT="1")
    try:
        consuming(crashing)
        e = event()
        rmq.publish("app.events", "user.settings.submitted", dumps(e))
        wait_for(lambda: not crashing.alive(), message="worker crashed after commit")
    finally:
        crashing.kill()
    return e
