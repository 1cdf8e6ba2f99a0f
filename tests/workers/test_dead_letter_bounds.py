"""Every `<worker>.dead` queue is bounded (DEAD_LETTER_MAX_BYTES / DEAD_LETTER_MAX_MESSAGES, drop-head):
a flood of poison messages pushes out the oldest dead letters instead of filling the broker's disk.
`workers status` says how full each one is; an existing unbounded one keeps working and gets a fix."""
from __future__ import annotations

import json
import re
import subprocess

import pika

from workers.ops import management
from tests.support.events import dumps, event
from tests.support.processes import run_cli
from tests.support.rabbit import wait_for
from workers import WORKERS

SMALL = {"DEAD_LETTER_MAX_MESSAGES": "10", "DEAD_LETTER_MAX_BYTES": "100000"}


def dead_letters(rmq, worker: str, count: int, size: int = 100, first: int = 0) -> None:
    """As the runtime dead-letters them: to app.dead with the worker's routing key, confirmed."""
    channel = rmq.connection.channel()
    channel.confirm_delivery()
    for i in range(first, first + count):
        channel.basic_publish("app.dead", worker, b"x" * size, pika.BasicProperties(
            message_id=f"dead-{i}", delivery_mode=2, headers={"x-dead-reason": "invalid"}), mandatory=True)
    channel.close()


def kept_ids(rmq, queue: str) -> list[str]:
    return [p.message_id for p, _ in rmq.drain(queue)]


def status_json(env: dict) -> tuple[dict, dict]:
    result = run_cli("status", "--json", env=env)
    data = json.loads(result.stdout)
    return data, next(r for r in data["workers"] if r["worker"] == "settings")


def test_topology_bounds_every_dead_queue_and_keeps_the_newest(rmq, base_env):
    run_cli("topology", env={**base_env, **SMALL})
    api = management.Management.from_env(base_env["RABBITMQ_URL"])
    for worker in WORKERS:
        args = api.queue(f"{worker}.dead")["arguments"]
        assert (args["x-queue-type"], args["x-max-length"], args["x-max-length-bytes"], args["x-overflow"]) == \
            ("quorum", 10, 100000, "drop-head"), worker
    # 25 poison messages into a queue bounded at 10: the 10 newest stay
    dead_letters(rmq, "settings", 25)
    assert rmq.depth("settings.dead") == 10
    assert kept_ids(rmq, "settings.dead") == [f"dead-{i}" for i in range(15, 25)]


def test_the_byte_bound_keeps_the_newest_too(rmq, base_env):
    run_cli("topology", env={**base_env, "DEAD_LETTER_MAX_MESSAGES": "1000", "DEAD_LETTER_MAX_BYTES": "1000"})
    dead_letters(rmq, "video", 25, size=100)
    assert rmq.depth("video.dead") == 10
    assert kept_ids(rmq, "video.dead") == [f"dead-{i}" for i in range(15, 25)]


def test_broker_dead_lettering_into_a_full_dead_queue_leaves_nothing_behind(rmq, base_env):
    # at-least-once dead-lettering keeps a message in its source queue while the target refuses it:
    # with drop-head the dead queue never refuses, so the worker's queue empties
    run_cli("topology", env={**base_env, **SMALL})
    events = [event() for _ in range(25)]
    for e in events:
        rmq.publish("app.events", "user.settings.submitted", dumps(e), message_id=e["client_generated_id"])
    wait_for(lambda: rmq.depth("settings") == 25, message="25 events queued")
    while True:
        method, _, _ = rmq.channel.basic_get("settings", auto_ack=False)
        if method is None:
            break
        rmq.channel.basic_nack(method.delivery_tag, requeue=False)
    api = management.Management.from_env(base_env["RABBITMQ_URL"])
    wait_for(lambda: rmq.depth("settings.dead") == 10 and api.queue("settings")["messages"] == 0,
             message="the source queue empty, the dead queue at its bound")
    assert kept_ids(rmq, "settings.dead") == [e["client_generated_id"] for e in events[15:]]
    assert rmq.depth("settings") == 0


def test_a_worker_declares_its_dead_queue_bounded(start_worker, settings_db, rmq):
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, **SMALL)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()), message="settings consuming")
    dead_letters(rmq, "settings", 12)
    assert rmq.depth("settings.dead") == 10


def test_status_reports_the_bound_and_warns_from_80_percent(rmq, base_env):
    env = {**base_env, **SMALL}
    run_cli("topology", env=env)
    dead_letters(rmq, "settings", 7)
    data, settings = status_json(env)
    assert settings["dead"] == 7 and settings["dead_bounded"] is True
    assert settings["dead_bound"] == {"max_messages": 10, "max_bytes": 100000, "overflow": "drop-head",
                                      "source": "argument"}
    assert settings["dead_used_percent"]["messages"] == 70.0 and settings["dead_near_bound"] is False
    assert data["warnings"] == []
    # at 80 %: near its bound, said in JSON and in text; a view, not a check: exit 0
    dead_letters(rmq, "settings", 1, first=7)
    data, settings = status_json(env)
    assert settings["dead_used_percent"]["messages"] == 80.0 and settings["dead_near_bound"] is True
    assert len(data["warnings"]) == 1 and "settings.dead is at 80% of its bound (8/10 messages)" in data["warnings"][0]
    assert "workers dlq list settings" in data["warnings"][0]
    video = next(r for r in data["workers"] if r["worker"] == "video")
    assert video["dead_near_bound"] is False and video["dead_used_percent"] == {"messages": 0.0, "bytes": 0.0}
    text = run_cli("status", env=env)
    line = next(l for l in text.stdout.splitlines() if l.startswith("settings"))
    assert "dead=8 (80% of bound) NEAR BOUND" in line
    assert "warning: settings.dead is at 80% of its bound" in text.stderr


def test_status_sees_the_byte_bound_fill_up(rmq, base_env):
    env = {**base_env, "DEAD_LETTER_MAX_MESSAGES": "1000", "DEAD_LETTER_MAX_BYTES": "1000"}
    run_cli("topology", env=env)
    dead_letters(rmq, "settings", 9, size=100)

    def near():  # message bytes come from the management API's statistics, a few seconds late
        settings = status_json(env)[1]
        return settings if settings["dead_near_bound"] else None
    settings = wait_for(near, timeout=30, interval=1, message="bytes near the bound")
    assert settings["dead_bytes"] == 900 and settings["dead_used_percent"] == {"messages": 0.9, "bytes": 90.0}


def test_an_existing_unbounded_dead_queue_keeps_its_letters_and_gets_a_fix(rmq, base_env, start_worker,
                                                                           settings_db):
    # Given a deployment from before the bound: settings.dead declared without it, one dead letter in it
    rmq.channel.queue_declare("settings.dead", durable=True, arguments={"x-queue-type": "quorum"})
    rmq.channel.exchange_declare("app.dead", exchange_type="direct", durable=True)
    rmq.channel.queue_bind("settings.dead", "app.dead", routing_key="settings")
    dead_letters(rmq, "settings", 1)
    env = {**base_env, **SMALL}
    # When the topology is declared again: it succeeds, leaves that queue as it is and names the fix
    result = run_cli("topology", env=env)
    assert "settings: bound to" in result.stdout
    assert "settings.dead exists with other arguments" in result.stderr and "set_operator_policy" in result.stderr
    assert rmq.depth("settings.dead") == 1
    # and a worker starts and consumes all the same, its log naming the fix
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, **SMALL)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()), message="settings consuming")
    warning = next(l for l in worker.logs() if l.get("queue") == "settings.dead" and l.get("level") == "warning")
    assert "set_operator_policy" in warning["fix"]
    # Then status says it is unbounded, with the command that bounds it in place
    data, settings = status_json(env)
    assert settings["dead_bounded"] is False and settings["dead_bound"] is None
    fix = re.search(r"(rabbitmqctl set_operator_policy .*? --apply-to queues)", settings["dead_warning"]).group(1)
    assert settings["dead_warning"] in data["warnings"]
    # And that command bounds it without losing its dead letter
    subprocess.run(fix, shell=True, check=True, capture_output=True)
    data, settings = status_json(env)
    assert settings["dead_bounded"] is True and settings["dead_bound"]["source"] == "policy"
    assert settings["dead_bound"]["max_messages"] == 10 and settings["dead_warning"] is None
    dead_letters(rmq, "settings", 20, first=1)
    assert rmq.depth("settings.dead") == 10
    assert kept_ids(rmq, "settings.dead") == [f"dead-{i}" for i in range(11, 21)]


def test_other_bounds_than_the_queue_has_keep_the_queue_and_warn(rmq, base_env):
    run_cli("topology", env={**base_env, **SMALL})
    result = run_cli("topology", env={**base_env, "DEAD_LETTER_MAX_MESSAGES": "20"})
    assert "settings.dead exists with other arguments" in result.stderr
    dead_letters(rmq, "settings", 15)
    assert rmq.depth("settings.dead") == 10  # the bound it was declared with still holds


def test_a_bound_must_be_positive(base_env):
    result = run_cli("topology", env={**base_env, "DEAD_LETTER_MAX_BYTES": "0"}, check=False)
    assert result.returncode != 0 and "DEAD_LETTER_MAX_BYTES" in result.stderr
