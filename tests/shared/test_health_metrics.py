"""A worker's probes and metrics, read over HTTP from a running worker on the real services."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from shared.config import Config
from workers.runtime.consumer import Consumer
from workers.runtime.handler import WorkerSpec
from tests.support.db import query
from tests.support.events import SEED_DATA, dumps, event
from tests.support.metrics import delta, get_json, scrape
from tests.support.rabbit import url_via, wait_for
from tests.support.tcpproxy import TcpProxy
from tests.support.net import free_port
from tests.support.processes import answering_queries

SETTINGS = "user.settings.submitted"


def status(port: int, path: str) -> int:
    try:
        return get_json(port, path)[0]
    except OSError:
        return 0


def consuming(proc) -> None:
    wait_for(lambda: any(line.get("msg") == "consuming" for line in proc.logs()), message="worker consuming")


@pytest.fixture
def proxies():
    made = []

    def make(port: int) -> TcpProxy:
        made.append(TcpProxy("127.0.0.1", port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# ---- probes ----------------------------------------------------------------------------------
def test_readiness_follows_the_database_and_the_broker_and_liveness_does_not(
        start_worker, make_database, vhost, proxies):
    # Given a settings worker reaching its database and the broker through proxies we can cut
    db, pg, mq = make_database("settings"), proxies(5432), proxies(5672)
    port = free_port()
    worker = start_worker("settings", SETTINGS_DATABASE_URL=db.replace("127.0.0.1:5432", f"127.0.0.1:{pg.port}"),
                          RABBITMQ_URL=url_via(vhost, mq.port), HEALTH_PORT=port, LIVENESS_STALE_S=3)
    wait_for(lambda: status(port, "/readyz") == 200, timeout=30, message=f"ready: {worker.text()[-2000:]}")
    assert any(line.get("msg") == "worker starting" and line.get("health_port") == port for line in worker.logs())
    code, body = get_json(port, "/livez")
    assert (code, body["status"]) == (200, "ok")
    code, body = get_json(port, "/readyz")
    assert (code, body["checks"]) == (200, {"broker": "ok", "database": "ok"})

    # When the database goes away, the worker is unready within seconds, and still alive
    pg.cut()
    wait_for(lambda: status(port, "/readyz") == 503, timeout=5, message="unready without the database")
    code, body = get_json(port, "/readyz")
    assert body["status"] == "unavailable" and body["checks"]["broker"] == "ok"
    assert body["checks"]["database"] != "ok"
    assert "postgresql://" not in str(body)  # a URL would carry the password
    assert status(port, "/livez") == 200
    pg.restore()
    wait_for(lambda: status(port, "/readyz") == 200, timeout=10, message="ready once the database is back")

    # When the broker goes away for longer than LIVENESS_STALE_S: unready, never dead
    mq.cut()
    wait_for(lambda: status(port, "/readyz") == 503, timeout=5, message="unready without the broker")
    code, body = get_json(port, "/readyz")
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] != "ok"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # waiting to reconnect is not hanging: kubelet must not restart it
        assert status(port, "/livez") == 200
        time.sleep(0.5)
    mq.restore()
    wait_for(lambda: status(port, "/readyz") == 200, timeout=40, message="ready once the broker is back")
    assert worker.alive()


def test_liveness_fails_when_the_processing_thread_is_gone(vhost, settings_db):
    spec = WorkerSpec("probe", "settings", {SETTINGS: lambda ctx, e: None})
    port = free_port()
    consumer = Consumer(spec, dataclasses.replace(Config(), rabbitmq_url=vhost, health_port=port), settings_db)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: status(port, "/livez") == 200, message="alive")
        consumer.loop.batches.put(None)  # the processing thread's stop signal: as if it had died
        wait_for(lambda: status(port, "/livez") == 503, timeout=5, message="dead processor noticed")
        code, body = get_json(port, "/livez")
        assert body["checks"] == {"consume_loop": "ok", "processor": "not running"}
        assert get_json(port, "/nowhere")[0] == 404
    finally:
        consumer.stop()
        thread.join(30)
    assert status(port, "/livez") == 0  # the server went with the worker


# ---- metrics -----------------------------------------------------------------------------------
def test_counters_move_by_exactly_what_happened(start_worker, settings_db, rmq):
    # Given a settings worker whose retried messages come back after 3 s
    port = free_port()
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, HEALTH_PORT=port, RETRY_DELAYS_S="3")
    consuming(worker)
    wait_for(lambda: answering_queries(worker), message="answering queries")
    before = scrape(port)
    labels = {"worker": "settings", "event_type": SETTINGS}

    def moved(name: str, **extra) -> float:
        return delta(before, scrape(port), name, **{**labels, **extra})

    # When 5 valid events, one of them again, and 2 that break the schema arrive
    valid = [event() for _ in range(5)]
    for e in valid:
        rmq.publish("app.events", SETTINGS, dumps(e))
    for e in [event(data={**SEED_DATA, "age": 500}) for _ in range(2)]:
        rmq.publish("app.events", SETTINGS, dumps(e))
    wait_for(lambda: moved("spotter_messages_processed_total") == 5, message="5 processed")
    rmq.publish("app.events", SETTINGS, dumps(valid[0]))
    wait_for(lambda: moved("spotter_duplicates_skipped_total") == 1, message="1 duplicate")

    # And 3 meet a table that is briefly missing (a migration's swap): a transient failure, retried
    query(settings_db, "ALTER TABLE user_settings RENAME TO user_settings_away")
    for e in [event() for _ in range(3)]:
        rmq.publish("app.events", SETTINGS, dumps(e))
    wait_for(lambda: moved("spotter_messages_retried_total") == 3, message="3 retried")
    query(settings_db, "ALTER TABLE user_settings_away RENAME TO user_settings")

    # And one query that cannot be parsed is answered with an error
    rmq.publish("app.queries", "feed.visibility.updated", b"{not json")

    # Then every counter moved by exactly that much, and nothing is left in flight
    wait_for(lambda: moved("spotter_messages_processed_total") == 8, timeout=30, message="the retries processed")
    wait_for(lambda: moved("spotter_messages_acked_total") == 14 and scrape(port).value(
        "spotter_messages_in_flight", worker="settings") == 0, message="everything acked")
    time.sleep(1.5)  # and nothing more comes
    after = scrape(port)
    assert {name: delta(before, after, name, **labels) for name in (
        "spotter_messages_consumed_total", "spotter_messages_acked_total", "spotter_messages_processed_total",
        "spotter_duplicates_skipped_total", "spotter_messages_retried_total",
        "spotter_messages_dead_lettered_total")} == {
        "spotter_messages_consumed_total": 5 + 1 + 2 + 3 * 2, "spotter_messages_acked_total": 14,
        "spotter_messages_processed_total": 8, "spotter_duplicates_skipped_total": 1,
        "spotter_messages_retried_total": 3, "spotter_messages_dead_lettered_total": 2}
    assert delta(before, after, "spotter_messages_dead_lettered_total", reason="invalid") == 2
    assert delta(before, after, "spotter_messages_consumed_total", event_type="unknown") == 0
    assert delta(before, after, "spotter_queries_total", worker="settings", query="feed.visibility.updated",
                 status="invalid") == 1
    assert after.value("spotter_messages_in_flight", worker="settings") == 0
    assert after.value("spotter_outbox_backlog", worker="settings") == 0
    # a histogram per batch: at least one batch per wave, never more batches than messages
    batches = delta(before, after, "spotter_processing_seconds_count", worker="settings")
    assert 4 <= batches <= 14
    assert rmq.depth("settings.dead") == 2
    assert query(settings_db, "SELECT count(*) FROM user_settings")[0][0] == 8
