"""A worker checks its queue and database before it consumes, and refuses with a clear message."""
from __future__ import annotations

import subprocess

from shared.topology import QueueNames, main_queue_arguments
from tests.support.rabbit import wait_for


def exits(worker) -> dict:
    """Wait for the worker to exit with 2; its "refusing to start" log line."""
    wait_for(lambda: not worker.alive(), message="worker exits")
    assert worker.proc.returncode == 2
    return next(l for l in worker.logs() if l.get("msg", "").startswith("refusing to start"))


def consuming(worker) -> None:
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()), message="worker consuming")


def vhost_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_classic_queue_without_dead_letter_target_is_refused(start_worker, settings_db, rmq):
    # Given someone declared the queue by hand: classic, no dead-letter exchange, no limit
    rmq.channel.queue_declare("settings", durable=True)
    # When the worker starts, then it refuses, naming the queue, what is wrong and the fix
    refusal = exits(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    assert refusal["queue"] == "settings"
    assert "type is 'classic', want 'quorum'" in refusal["error"]
    assert "no dead-letter exchange" in refusal["error"] and "x-delivery-limit" in refusal["error"]
    assert "delete" in refusal["fix"] and "workers topology" in refusal["fix"]


def test_quorum_queue_with_another_delivery_limit_is_refused(start_worker, settings_db, rmq):
    rmq.channel.queue_declare("settings", durable=True,
                              arguments={**main_queue_arguments(QueueNames("settings"), 20), "x-delivery-limit": 5})
    refusal = exits(start_worker("settings", SETTINGS_DATABASE_URL=settings_db, DELIVERY_LIMIT=20))
    assert "delivery limit (x-delivery-limit) is 5, want 20" in refusal["error"]


def test_a_policy_lowering_the_delivery_limit_is_refused(start_worker, settings_db, rmq, base_env, vhost):
    from tests.support.processes import run_cli
    run_cli("topology", env=base_env)  # the arguments are right
    subprocess.run(["rabbitmqctl", "-q", "set_policy", "-p", vhost_name(vhost), "--apply-to", "queues",
                    "low-limit", "^settings$", '{"delivery-limit": 3}'], check=True, capture_output=True)
    refusal = exits(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    assert "policy delivery-limit) is 3, want 20" in refusal["error"]
    assert "'low-limit'" in refusal["fix"] and "delete_queue" not in refusal["fix"]


def test_a_policy_waiting_for_a_queue_not_yet_declared_is_seen(start_worker, settings_db, vhost):
    # Given a policy that matches the worker's queue before the queue exists
    subprocess.run(["rabbitmqctl", "-q", "set_policy", "-p", vhost_name(vhost), "--apply-to", "queues",
                    "low-limit", "^settings$", '{"delivery-limit": 3}'], check=True, capture_output=True)
    # When the worker starts, it declares the queue, sees the policy and refuses
    refusal = exits(start_worker("settings", SETTINGS_DATABASE_URL=settings_db))
    assert "policy delivery-limit) is 3, want 20" in refusal["error"]


def test_a_correct_queue_starts(start_worker, settings_db, rmq, base_env):
    from tests.support.processes import run_cli
    run_cli("topology", env=base_env)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db)
    consuming(worker)
    assert not any(l.get("msg", "").startswith("refusing") or "cannot check" in l.get("msg", "")
                   for l in worker.logs())


def test_without_the_management_api_the_declare_still_refuses(start_worker, settings_db, rmq):
    rmq.channel.queue_declare("settings", durable=True)
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db, RABBITMQ_MANAGEMENT_URL="http://127.0.0.1:1")
    refusal = exits(worker)
    assert "x-delivery-limit" in refusal["error"]
    assert any(l.get("msg", "").startswith("cannot check queue policies") for l in worker.logs())


def test_a_database_without_migrations_is_refused(start_worker, make_database):
    url = make_database("settings", migrated=False)
    refusal = exits(start_worker("settings", SETTINGS_DATABASE_URL=url))
    assert "lacks migrations" in refusal["msg"]
    assert url.rsplit("/", 1)[1] in refusal["error"] and "0001_settings" in refusal["error"]
    assert "workers migrate settings" in refusal["fix"]
