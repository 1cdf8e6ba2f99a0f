"""The spine end to end: HTTP with a token → ingress → RabbitMQ → settings worker → settings_db."""
from __future__ import annotations

import http.client
import json
import socket

from tests.conftest import query
from tests.support.events import SEED_DATA, SEED_USER, event
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for


def free_port(span: int = 1) -> int:
    """A free port; with span, the first of that many consecutive free ports."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + span <= 65536 and all(_bindable(first + i) for i in range(1, span)):
            return first


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def post(port: int, body, token: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/v1/notify/events", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def test_posted_event_lands_in_settings_db_once_even_when_resent(base_env, settings_db):
    env = {**base_env, "SETTINGS_DATABASE_URL": settings_db, "PORT": str(free_port())}
    run_cli("topology", env=env)
    worker = workers_cli("run", "settings", env=env)
    ingress = workers_cli("serve", env=env)
    try:
        port = int(env["PORT"])
        wait_for(lambda: _ready(port), message=f"ingress ready: {ingress.text()[-2000:]}")
        token = run_cli("token", SEED_USER, env=env).stdout.strip()
        seed = event(user_id=SEED_USER, data=SEED_DATA)
        # When the client posts the event, and re-sends it as an offline queue would
        for _ in range(2):
            status, body = post(port, seed, token)
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


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
