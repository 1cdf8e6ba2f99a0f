"""Settings worker on the real broker and database: the seed's checks and the failure stories."""
from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson

from tests.support.db import query
from tests.support.events import SEED_DATA, SEED_USER, dumps, event, rfc3339, seed_event
from tests.support.processes import run_cli
from tests.support.probe import consuming
from tests.support.rabbit import wait_for


def rows(db, sql="SELECT count(*) FROM user_settings"):
    return query(db, sql)[0][0]


def test_seed_event_published_twice_lands_as_one_row(start_worker, settings_db, rmq, base_env):
    # Given a running settings worker
    consuming(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    seed = seed_event()
    # When the seed's event is published straight to the exchange, twice with the same id
    for _ in range(2):
        run_cli("publish", "user.settings.submitted", "--user", SEED_USER, "--id", seed["client_generated_id"],
                "--timestamp", seed["timestamp"], "--data", orjson.dumps(SEED_DATA).decode(), env=base_env)
    # Then one row with the seed's values and one idempotency key
    wait_for(lambda: rmq.depth("settings") == 0 and query(settings_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 1)
    row = query(settings_db, "SELECT user_id::text, weight_value, weight_unit, age, training_days_per_week "
                             "FROM user_settings")
    assert [(r[0], float(r[1]), r[2], r[3], r[4]) for r in row] == [(SEED_USER, 93.5, "kg", 28, 4)]
    assert query(settings_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 1


def test_schema_violation_is_dead_lettered_and_the_next_event_is_processed(start_worker, settings_db, rmq):
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db)
    consuming(worker)
    bad = event(data={**SEED_DATA, "age": 500})
    no_such_day = event(timestamp="2026-02-30T10:00:00Z")  # the schema's shape, not a date
    good = event()
    # Put straight on the worker's queue: the worker must not trust the wire
    rmq.publish("", "settings", dumps(bad), message_id=bad["client_generated_id"], type=bad["event_type"])
    rmq.publish("", "settings", b"{not json", message_id="garbage")
    rmq.publish("", "settings", dumps(no_such_day), message_id="no-such-day", type=no_such_day["event_type"])
    rmq.publish("", "settings", dumps(good), message_id=good["client_generated_id"], type=good["event_type"])
    wait_for(lambda: rows(settings_db) == 1, message="good event processed")
    wait_for(lambda: rmq.depth("settings.dead") == 3)
    dead = {p.message_id: p.headers for p, _ in rmq.drain("settings.dead")}
    assert dead[bad["client_generated_id"]]["x-dead-reason"] == "invalid"
    assert dead[bad["client_generated_id"]]["x-dead-field"] == "data.age"
    assert "data.age" in dead[bad["client_generated_id"]]["x-dead-detail"]
    assert dead["garbage"]["x-dead-reason"] == "invalid"
    assert (dead["no-such-day"]["x-dead-reason"], dead["no-such-day"]["x-dead-field"]) == ("invalid", "timestamp")
    assert query(settings_db, "SELECT user_id::text FROM user_settings")[0][0] == good["user_id"]


def test_same_id_with_another_payload_is_a_conflict_not_a_silent_skip(start_worker, settings_db, rmq):
    consuming(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    first = event()
    forged = {**first, "data": {**SEED_DATA, "age": 99}}
    rmq.publish("app.events", "user.settings.submitted", dumps(first))
    wait_for(lambda: rows(settings_db) == 1)
    rmq.publish("app.events", "user.settings.submitted", dumps(forged))
    wait_for(lambda: rmq.depth("settings.dead") == 1)
    (props, _), = rmq.drain("settings.dead")
    assert props.headers["x-dead-reason"] == "idempotency_conflict"
    assert query(settings_db, "SELECT age FROM user_settings")[0][0] == 28


def test_an_id_another_user_claimed_first_never_blocks_the_owners_event(start_worker, settings_db, rmq):
    """An attacker who learns an event id posts first under it: the owner's event still lands."""
    owner_event = event()
    squatter = {**owner_event, "user_id": str(uuid.uuid4()), "data": {**SEED_DATA, "age": 99}}
    consuming(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    rmq.publish("app.events", "user.settings.submitted", dumps(squatter))
    wait_for(lambda: rows(settings_db) == 1)
    rmq.publish("app.events", "user.settings.submitted", dumps(owner_event))
    rmq.publish("app.events", "user.settings.submitted", dumps(owner_event))  # and its retry
    wait_for(lambda: rows(settings_db) == 2)
    time.sleep(0.5)
    assert rmq.depth("settings.dead") == 0
    assert dict(query(settings_db, "SELECT user_id::text, age FROM user_settings")) == {
        owner_event["user_id"]: 28, squatter["user_id"]: 99}


def test_newest_event_wins_across_two_worker_processes(start_worker, settings_db, rmq):
    # Given two replicas on the same queue
    for _ in range(2):
        consuming(start_worker("settings", SETTINGS_DATABASE_URL=settings_db, PREFETCH=4))
    user = str(uuid.uuid4())
    base = datetime(2025, 11, 5, 10, 0, tzinfo=timezone.utc)
    events = [event(user_id=user, timestamp=rfc3339(base + timedelta(seconds=i)),
                    data={**SEED_DATA, "age": 20 + i}) for i in range(40)]
    patches = [event("app.settings.updated", user_id=user, timestamp=rfc3339(base + timedelta(seconds=i)),
                     data=({"theme": ["light", "dark"][i % 2]} if i % 3 else {"units": ["metric", "imperial"][i % 2]}))
               for i in range(40)]
    # When they arrive shuffled
    mixed = events + patches
    random.Random(7).shuffle(mixed)
    for e in mixed:
        rmq.publish("app.events", e["event_type"], dumps(e))
    wait_for(lambda: query(settings_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 80, timeout=30)
    # Then the newest by envelope timestamp is what the tables hold
    assert query(settings_db, "SELECT age FROM user_settings WHERE user_id = %s", (user,))[0][0] == 20 + 39
    newest_theme = patches[max(i for i in range(40) if i % 3)]["data"]["theme"]
    newest_units = patches[max(i for i in range(40) if not i % 3)]["data"]["units"]
    assert query(settings_db, "SELECT settings FROM app_settings WHERE user_id = %s", (user,))[0][0] == \
        {"theme": newest_theme, "units": newest_units}


def test_database_outage_holds_events_and_processes_each_once_after(start_worker, make_database, rmq):
    from tests.support.tcpproxy import TcpProxy
    db = make_database("settings")
    proxy = TcpProxy("127.0.0.1", 5432)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    consuming(worker)
    # The seed's "stop postgres, publish, start postgres", through a proxy we can cut
    proxy.cut()
    events = [event() for _ in range(30)]
    for e in events:
        rmq.publish("app.events", "user.settings.submitted", dumps(e))
    outage_s = 8
    wait_for(lambda: any(l.get("msg") == "database unavailable, holding batch" for l in worker.logs()))
    import time
    time.sleep(outage_s)
    proxy.restore()
    wait_for(lambda: rows(db) == 30, timeout=40, message=f"all events after the outage: {worker.text()[-3000:]}")
    assert query(db, "SELECT count(*) FROM idempotency_keys")[0][0] == 30
    assert rmq.depth("settings.dead") == 0
    # growing delays: a handful of reconnect attempts during the outage, not a spin
    attempts = [l for l in worker.logs() if l.get("msg") == "database unavailable, holding batch"]
    assert 2 <= len(attempts) <= 8, len(attempts)
    proxy.close()


def test_worker_reconnects_after_broker_restart(start_worker, settings_db, rmq, vhost):
    from tests.support.rabbit import url_via
    from tests.support.tcpproxy import TcpProxy
    proxy = TcpProxy("127.0.0.1", 5672)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, RABBITMQ_URL=url_via(vhost, proxy.port))
    consuming(worker)
    proxy.cut()
    wait_for(lambda: any(l.get("msg") == "broker unavailable, reconnecting" for l in worker.logs()))
    rmq.publish("app.events", "user.settings.submitted", dumps(event()))
    proxy.restore()
    wait_for(lambda: rows(settings_db) == 1, timeout=40, message="processed after reconnect")
    assert worker.alive()
    proxy.close()


def test_sigterm_during_burst_commits_every_event_exactly_once(start_worker, settings_db, rmq, base_env):
    run_cli("topology", env=base_env)
    events = [event() for _ in range(5000)]
    for e in events:
        rmq.publish("app.events", "user.settings.submitted", dumps(e))
    # Given a backlog being worked through, when the pod is told to stop mid-burst
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, PREFETCH=20)
    wait_for(lambda: rows(settings_db) > 0, message="burst started")
    assert worker.terminate() == 0
    done_before = rows(settings_db)
    assert done_before < 5000, "burst finished before SIGTERM; make it bigger"
    # Then after a restart every event is there once, nothing dead
    start_worker("settings", SETTINGS_DATABASE_URL=settings_db)
    wait_for(lambda: rows(settings_db) == 5000, timeout=60)
    assert query(settings_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 5000
    assert rmq.depth("settings") == 0 and rmq.depth("settings.dead") == 0


def test_worker_refuses_a_queue_declared_without_our_guarantees(start_worker, settings_db, rmq):
    # Someone declared the queue by hand: classic, no dead-letter target, no delivery limit
    rmq.channel.queue_declare("settings", durable=True)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db)
    wait_for(lambda: not worker.alive(), message="worker exits")
    assert worker.proc.returncode == 2
    assert any(l.get("msg") == "refusing to start" and "x-delivery-limit" in l.get("error", "")
               for l in worker.logs())


def test_worker_refuses_a_database_without_migrations(start_worker, make_database):
    worker = start_worker("settings", SETTINGS_DATABASE_URL=make_database("settings", migrated=False))
    wait_for(lambda: not worker.alive(), message="worker exits")
    assert worker.proc.returncode == 2
    assert any("lacks migrations" in l.get("msg", "") for l in worker.logs())
