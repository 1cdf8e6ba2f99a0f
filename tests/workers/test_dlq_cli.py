"""`workers dlq …` on a real dead-letter queue."""
from __future__ import annotations

import json

from tests.support.events import SEED_DATA, dumps, event
from tests.support.processes import run_cli


def test_dlq_list_show_replay_purge(rmq, base_env):
    run_cli("topology", env=base_env)
    bad = [event(data={**SEED_DATA, "age": 500}) for _ in range(2)]
    for e in bad:  # as the worker dead-letters them
        rmq.publish("app.dead", "settings", dumps(e), message_id=e["client_generated_id"], type=e["event_type"],
                    headers={"x-dead-reason": "invalid", "x-dead-detail": "data.age must be <= 120",
                             "x-attempts": 1})
    listing = run_cli("dlq", "list", "settings", env=base_env).stdout
    assert "settings.dead: 2 message(s)" in listing
    assert "invalid" in listing and "user.settings.submitted" in listing
    shown = json.loads(run_cli("dlq", "show", "settings", bad[0]["client_generated_id"], env=base_env).stdout)
    assert shown["reason"] == "invalid" and json.loads(shown["body"]) == bad[0]
    # peeking leaves them in place
    assert rmq.depth("settings.dead") == 2
    out = run_cli("dlq", "replay", "settings", "--id", bad[0]["client_generated_id"], env=base_env).stdout
    assert "replayed 1" in out
    assert rmq.depth("settings") == 1 and rmq.depth("settings.dead") == 1
    (props, body), = rmq.drain("settings")
    assert body == dumps(bad[0]) and "x-dead-reason" not in props.headers
    assert "purged 1" in run_cli("dlq", "purge", "settings", "--all", "--yes", env=base_env).stdout
    assert rmq.depth("settings.dead") == 0


def test_status_shows_each_worker_queue_dead_letters_and_outbox(rmq, base_env, settings_db):
    run_cli("topology", env=base_env)
    rmq.publish("app.dead", "settings", dumps(event()), headers={"x-dead-reason": "invalid"})
    rmq.publish("app.events", "user.settings.submitted", dumps(event()))
    out = run_cli("status", env={**base_env, "SETTINGS_DATABASE_URL": settings_db}).stdout
    line = next(l for l in out.splitlines() if l.startswith("settings"))
    assert "ready=1" in line and "consumers=0" in line and "dead=1" in line and "outbox_backlog=0" in line
