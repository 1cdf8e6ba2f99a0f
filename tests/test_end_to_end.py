"""The spine end to end: HTTP with a token → ingress → RabbitMQ → settings worker → settings_db."""
from __future__ import annotations

from tests.support.db import query
from tests.support.events import SEED_DATA, SEED_USER, event
from tests.support.http import post_events, ready
from tests.support.net import free_port
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for


def test_posted_event_lands_in_settings_db_once_even_when_resent(base_env, settings_db):
    env = {**base_env, "SETTINGS_DATABASE_URL": settings_db, "PORT": str(free_port())}
    run_cli("topology", env=env)
    worker = workers_cli("run", "settings", env=env)
    ingress = workers_cli("serve", env=env)
    try:
        port = int(env["PORT"])
        wait_for(lambda: ready(port), message=f"ingress ready: {ingress.text()[-2000:]}")
        token = run_cli("token", SEED_USER, env=env).stdout.strip()
        seed = event(user_id=SEED_USER, data=SEED_DATA)
        # When the client posts the event, and re-sends it as an offline queue would
        for _ in range(2):
            status, body = post_events(port, seed, token)
            assert (status, body) == (202, {"accepted": [seed["client_generated_id"]]})
        # Then exactly one row, with the event's values
        wait_for(lambda: query(settings_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 1
                 and any(l.get("msg") == "duplicate skipped" for l in worker.logs()))
        assert query(settings_db, "SELECT user_id::text, age, training_days_per_week FROM user_settings") == \
            [(SEED_USER, 28, 4)]
        # And the token travels in no log line
        assert token not in ingress.text() + worker.text()
    finally:
        ingress.terminate()
        worker.terminate()


