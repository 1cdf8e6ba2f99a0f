"""Workers behind PgBouncer in transaction pooling mode (tests/support/pgbouncer.py): nothing
may outlive a transaction (no PREPARE, no session SET, no `options` at connect). The batch
path, the one-by-one replay, the query path and the outbox all go through it."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import orjson
import pytest

from shared.config import Config
from workers.runtime.consumer import Consumer
from shared.envelope import outcome_id
from workers.runtime.handler import WorkerSpec
from tests.support import pgbouncer
from tests.support.db import query
from tests.support.events import SEED_DATA, dumps, event
from tests.support.probe import consuming, crash_after_commit, picky, probe_rows, queue_has_consumer, start_probe, wait_consuming
from tests.support.rabbit import wait_for


def rows(db, sql="SELECT count(*) FROM user_settings") -> int:
    return query(db, sql)[0][0]


@pytest.fixture(scope="session")
def bouncer():
    b = pgbouncer.start()
    yield b
    b.stop()


@pytest.fixture
def probe_db(settings_db):
    query(settings_db, "CREATE TABLE probe (event_id uuid PRIMARY KEY, age int NOT NULL CHECK (age < 100))")
    return settings_db


def test_settings_worker_batches_through_pgbouncer(start_worker, settings_db, rmq, base_env, bouncer):
    # a backlog first, so the worker takes it in batches (and its timeouts ride per transaction)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=bouncer.url(settings_db))
    consuming(worker)
    worker.terminate()
    events = [event(data={**SEED_DATA, "age": 20 + i % 80}) for i in range(300)]
    patches = [event("app.settings.updated", data={"units": "metric"}, user_id=e["user_id"]) for e in events[:50]]
    for e in events + patches + events[:20]:  # the last 20 again: duplicates
        rmq.publish("app.events", e["event_type"], dumps(e))
    consuming(start_worker("settings", SETTINGS_DATABASE_URL=bouncer.url(settings_db)))
    wait_for(lambda: rmq.depth("settings") == 0 and rows(settings_db) == 300
             and rows(settings_db, "SELECT count(*) FROM app_settings") == 50, timeout=30)
    assert rows(settings_db, "SELECT count(*) FROM idempotency_keys") == 350
    assert rmq.depth("settings.dead") == 0
    assert "unsupported startup parameter" not in bouncer.log()


def test_one_bad_message_replays_alone_through_pgbouncer(vhost, rmq, probe_db, bouncer):
    """The batch fails (a CHECK violation and a Forbidden), rolls back, replays one by one."""
    cfg = dataclasses.replace(Config(), rabbitmq_url=vhost, retry_delays_s=(1, 2), max_attempts=3)
    started = []

    def run():
        consumer = Consumer(WorkerSpec("probe", "settings", {"user.settings.submitted": picky}), cfg,
                            bouncer.url(probe_db))
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        return consumer

    try:
        first = run()
        wait_consuming(rmq)
        first.stop()  # collect a backlog first, so they arrive as one batch
        wait_for(lambda: not queue_has_consumer(rmq), message="consumer detached")
        events = [event(data={"weight": {"value": 80, "unit": "kg"}, "age": a, "training_days_per_week": 3})
                  for a in [20, 21, 66, 22, 23, 120]]
        for e in events:
            rmq.publish("app.events", "user.settings.submitted", dumps(e))
        run()
        wait_for(lambda: rmq.depth("probe.dead") == 2, timeout=20)
        assert probe_rows(probe_db) == 4
        reasons = {p.message_id: p.headers["x-dead-reason"] for p, _ in rmq.drain("probe.dead")}
        assert reasons == {events[2]["client_generated_id"]: "forbidden",
                           events[5]["client_generated_id"]: "rejected_by_database"}
        # the dead letters' receipts were committed through PgBouncer too
        assert query(probe_db, "SELECT count(*) FROM rejections")[0][0] == 2
    finally:
        for consumer, thread in started:
            consumer.stop()
            thread.join(30)


def test_outbox_survives_a_crash_through_pgbouncer(base_env, probe_db, rmq, bouncer):
    outcomes = rmq.tap("app.events", "probe.recorded")
    e = crash_after_commit(base_env, bouncer.url(probe_db), rmq)
    assert query(probe_db, "SELECT count(*) FROM outbox")[0][0] == 1
    restarted = start_probe(base_env, bouncer.url(probe_db), OUTBOX_RELAY_MIN_AGE_S="0")
    try:
        wait_for(lambda: query(probe_db, "SELECT count(*) FROM outbox")[0][0] == 0, timeout=30)
        wait_for(lambda: any(l.get("msg") == "duplicate skipped" for l in restarted.logs()))
        time.sleep(0.5)
    finally:
        restarted.terminate()
    ids = [p.message_id for p, _ in rmq.drain(outcomes)]
    assert ids == [str(outcome_id(e["client_generated_id"], f"probe.recorded/{e['user_id']}"))]


def ask(rmq, e: dict) -> dict:
    """An event sent on the query path, as the ingress sends it: answered through reply_to."""
    reply_to = rmq.channel.queue_declare("", exclusive=True).method.queue
    rmq.publish("app.queries", e["event_type"], dumps(e), reply_to=reply_to, correlation_id=str(uuid.uuid4()),
                type=e["event_type"])
    wait_for(lambda: rmq.depth(reply_to) >= 1, message=f"{e['event_type']} answered")
    ((_, body),) = rmq.drain(reply_to)
    return orjson.loads(body)


def test_query_path_claims_and_answers_through_pgbouncer(start_worker, settings_db, rmq, bouncer):
    changed = rmq.tap("app.events", "feed.visibility.changed")
    consuming(start_worker("settings", SETTINGS_DATABASE_URL=bouncer.url(settings_db)))
    e = event("feed.visibility.updated", data={"mode": "public"})
    assert ask(rmq, e) == {"status": "ok", "result": {"mode": "public", "passcode_version": 1}}
    # sent again (the answer was lost): the runtime's claim finds it, the handler answers what stands
    assert ask(rmq, e) == {"status": "ok", "result": {"mode": "public", "passcode_version": 1, "duplicate": True}}
    # the same id with another payload: refused, nothing changes
    assert ask(rmq, {**e, "data": {"mode": "passcode", "passcode": "hunter22"}})["error"] == "idempotency_conflict"
    wait_for(lambda: rmq.depth(changed) == 1)
    assert query(settings_db, "SELECT passcode_version FROM feed_visibility")[0][0] == 1


def test_timeouts_hold_per_transaction_and_leave_nothing_behind(settings_db, bouncer):
    from workers.runtime.processor import UnitOfWork

    def show(ctx, *_):
        ctx.cursor.execute("SHOW statement_timeout")
        statement = ctx.cursor.fetchone()[0]
        ctx.cursor.execute("SHOW lock_timeout")
        return statement, ctx.cursor.fetchone()[0]

    unit = UnitOfWork(WorkerSpec("probe", "settings", {}), bouncer.url(settings_db), "test-timeouts")
    try:
        assert unit.run([], show)[2] == ("30s", "10s")
        assert unit.run([], show)[2] == ("30s", "10s")  # every transaction, whichever server connection
    finally:
        unit.close()
    # SET LOCAL ends with its transaction: the pooled server connections carry nothing over
    assert query(bouncer.url(settings_db), "SHOW statement_timeout") == [("0",)]
