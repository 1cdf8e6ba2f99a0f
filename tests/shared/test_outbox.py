"""The outbox survives a crash between commit and publish."""
from __future__ import annotations

import time

from shared.envelope import outcome_id
from tests.support.db import query
from tests.support.probe import crash_after_commit, start_probe
from tests.support.rabbit import wait_for


def test_crash_between_commit_and_outbox_publish_still_publishes_once(base_env, settings_db, rmq):
    query(settings_db, "CREATE TABLE probe (event_id uuid PRIMARY KEY, age int NOT NULL)")
    outcomes = rmq.tap("app.events", "probe.recorded")
    # the process dies right after its commit, before publishing the outcome
    e = crash_after_commit(base_env, settings_db, rmq)
    assert query(settings_db, "SELECT count(*) FROM probe")[0][0] == 1
    assert query(settings_db, "SELECT count(*) FROM outbox")[0][0] == 1
    assert rmq.depth(outcomes) == 0
    # After a restart the relay publishes the stranded outcome; the redelivered event is a duplicate
    restarted = start_probe(base_env, settings_db, OUTBOX_RELAY_MIN_AGE_S="0")
    try:
        wait_for(lambda: query(settings_db, "SELECT count(*) FROM outbox")[0][0] == 0, timeout=30)
        wait_for(lambda: any(l.get("msg") == "duplicate skipped" for l in restarted.logs()))
        time.sleep(1)
    finally:
        restarted.terminate()
    ids = [p.message_id for p, _ in rmq.drain(outcomes)]
    assert ids == [str(outcome_id(e["client_generated_id"], f"probe.recorded/{e['user_id']}"))]
    assert query(settings_db, "SELECT count(*) FROM probe")[0][0] == 1
