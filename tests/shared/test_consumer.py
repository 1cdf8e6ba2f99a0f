"""The shared runtime with a small worker of the test's own: retries, exhaustion, isolation."""
from __future__ import annotations

import dataclasses
import threading

import pytest

from shared.config import Config
from workers.runtime.consumer import Consumer
from shared.errors import TransientError
from workers.runtime.handler import WorkerSpec
from tests.support.db import query
from tests.support.events import dumps, event
from tests.support.probe import picky, probe_rows, queue_has_consumer, record, wait_consuming
from tests.support.rabbit import wait_for

calls: dict[str, int] = {}


def flaky(ctx, e):
    """Fails transiently twice per event, then works."""
    calls[e.id] = calls.get(e.id, 0) + 1
    if calls[e.id] <= 2:
        raise TransientError("downstream timed out")
    record(ctx, e)


def always_failing(ctx, e):
    calls[e.id] = calls.get(e.id, 0) + 1
    raise TransientError("still down")


@pytest.fixture
def run_consumer(vhost, settings_db):
    query(settings_db, "CREATE TABLE probe (event_id uuid PRIMARY KEY, age int NOT NULL CHECK (age < 100))")
    started = []

    def run(handler, **config):
        spec = WorkerSpec("probe", "settings", {"user.settings.submitted": handler})
        cfg = dataclasses.replace(Config(), rabbitmq_url=vhost, retry_delays_s=(1, 2), max_attempts=3,
                                  **config)
        consumer = Consumer(spec, cfg, settings_db)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        return consumer

    yield run
    for consumer, thread in started:
        consumer.stop()
        thread.join(30)


def test_transient_failure_is_retried_with_delay_until_it_works(run_consumer, rmq, settings_db):
    run_consumer(flaky)
    wait_consuming(rmq)
    e = event()
    rmq.publish("app.events", "user.settings.submitted", dumps(e))
    wait_for(lambda: probe_rows(settings_db) == 1, timeout=20)
    assert calls[e["client_generated_id"]] == 3  # two failures, one success: no hot loop
    assert rmq.depth("probe.dead") == 0


def test_exhausted_retries_are_dead_lettered_with_attempts(run_consumer, rmq, settings_db):
    run_consumer(always_failing)
    wait_consuming(rmq)
    e = event()
    rmq.publish("app.events", "user.settings.submitted", dumps(e))
    wait_for(lambda: rmq.depth("probe.dead") == 1, timeout=20)
    (props, body), = rmq.drain("probe.dead")
    assert props.headers["x-dead-reason"] == "retries_exhausted"
    assert props.headers["x-attempts"] == 3
    assert "still down" in props.headers["x-last-error"]
    assert calls[e["client_generated_id"]] == 3
    assert dumps(e) == body  # the original event, ready for replay


def test_one_bad_message_fails_alone_in_its_batch(run_consumer, rmq, settings_db):
    events = [event(data={"weight": {"value": 80, "unit": "kg"}, "age": a, "training_days_per_week": 3})
              for a in [20, 21, 66, 22, 23]]
    events.append(event(data={"weight": {"value": 80, "unit": "kg"}, "age": 120, "training_days_per_week": 3}))
    consumer = run_consumer(picky)
    wait_consuming(rmq)
    consumer.stop()  # collect a backlog first, so they arrive as one batch
    wait_for(lambda: not queue_has_consumer(rmq), message="consumer detached")
    for e in events:
        rmq.publish("app.events", "user.settings.submitted", dumps(e))
    run_consumer(picky)
    wait_for(lambda: rmq.depth("probe.dead") == 2, timeout=20)
    assert probe_rows(settings_db) == 4
    reasons = {p.message_id: p.headers["x-dead-reason"] for p, _ in rmq.drain("probe.dead")}
    assert reasons == {events[2]["client_generated_id"]: "forbidden",
                       events[5]["client_generated_id"]: "rejected_by_database"}
