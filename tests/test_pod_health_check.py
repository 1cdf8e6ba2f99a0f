"""`bin/pod-health-check`: a healthy report with the stack up, a failing one with the broker down."""
from __future__ import annotations

import os
import subprocess

import pytest

from workers.ops import migrate
from tests.support.events import dumps, event
from tests.support.processes import REPO, run_cli
from tests.support.rabbit import url_via, wait_for
from tests.support.tcpproxy import TcpProxy


def health_check(tmp_path, env: dict, *args: str) -> tuple[int, str]:
    log = tmp_path / "infra-health.log"
    result = subprocess.run([str(REPO / "bin" / "pod-health-check"), "--log", str(log), *args],
                            env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig"), **env},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert log.read_text() == result.stdout
    return result.returncode, log.read_text()


@pytest.fixture
def databases(make_database):
    """<DOMAIN>_DATABASE_URL for every database, each migrated."""
    return {f"{d.upper()}_DATABASE_URL": make_database(d) for d in migrate.domains()}


def test_healthy_with_the_stack_up_then_unhealthy_with_a_dead_letter(tmp_path, rmq, base_env, databases, s3_env,
                                                                    start_worker):
    env = {**base_env, **databases, **s3_env}
    run_cli("topology", env=env)
    worker = start_worker("settings", **databases)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()), message="settings consuming")
    code, log = health_check(tmp_path, env, "--expect-consumers", "settings")
    assert code == 0, log
    assert log.startswith("== Spotter infra health 20") and "summary: HEALTHY" in log
    assert "SKIP  pods: no cluster reachable" in log
    assert "OK    broker: reachable" in log and "OK    queue settings: ready=0 unacked=" in log
    assert "consumers=1" in log
    for domain in migrate.domains():
        assert f"OK    database {domain}: " in log and "reachable, migrated" in log
    assert f"OK    bucket {s3_env['S3_BUCKET']}: reachable" in log
    assert "postgresql://" not in log and "guest" not in log
    # a dead letter needs an operator: unhealthy, with the command to look at it
    rmq.publish("app.dead", "video", dumps(event()), headers={"x-dead-reason": "invalid"})
    code, log = health_check(tmp_path, env, "--expect-consumers", "settings")
    assert code == 1 and "FAIL  queue video:" in log and "workers dlq list video" in log
    assert "summary: UNHEALTHY: 1 failed" in log


def test_unhealthy_with_the_broker_down(tmp_path, rmq, base_env, vhost, databases):
    run_cli("topology", env=base_env)
    proxy = TcpProxy("127.0.0.1", 5672)
    proxy.cut()
    try:
        env = {**base_env, **databases, "RABBITMQ_URL": url_via(vhost, proxy.port)}
        code, log = health_check(tmp_path, env, "--expect-consumers", "none")
    finally:
        proxy.close()
    assert code == 1, log
    assert "FAIL  broker: unreachable" in log and "summary: UNHEALTHY: 1 failed" in log
    assert "OK    database settings" in log and "SKIP  storage: not configured" in log


def test_a_usage_error_exits_2(tmp_path, base_env):
    result = subprocess.run([str(REPO / "bin" / "pod-health-check"), "--expect-consumers", "nobody"],
                            env={**os.environ, **base_env}, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown worker" in result.stderr


def test_a_dead_queue_near_its_bound_or_unbounded_is_unhealthy_whatever_max_dead(tmp_path, rmq, base_env,
                                                                                 databases):
    # Given dead-letter queues bounded at 10 messages, and a deployment's settings.dead from before the bound
    rmq.channel.exchange_declare("app.dead", exchange_type="direct", durable=True)
    rmq.channel.queue_declare("settings.dead", durable=True, arguments={"x-queue-type": "quorum"})
    env = {**base_env, **databases, "DEAD_LETTER_MAX_MESSAGES": "10"}
    run_cli("topology", env=env)
    # When video.dead holds 7 dead letters: healthy with --max-dead 100, but settings.dead has no bound
    for _ in range(7):
        rmq.publish("app.dead", "video", dumps(event()), headers={"x-dead-reason": "invalid"})
    code, log = health_check(tmp_path, env, "--expect-consumers", "none", "--max-dead", "100")
    assert code == 1 and "OK    queue video: " in log and "dead=7 (70% of bound)" in log
    assert "FAIL  queue settings: " in log and "settings.dead has no length bound" in log
    assert "rabbitmqctl set_operator_policy" in log and "summary: UNHEALTHY: 1 failed" in log
    # Then at 8 of 10 video.dead is near its bound: unhealthy too, saying what to look at
    rmq.publish("app.dead", "video", dumps(event()), headers={"x-dead-reason": "invalid"})
    code, log = health_check(tmp_path, env, "--expect-consumers", "none", "--max-dead", "100")
    assert code == 1 and "FAIL  queue video: " in log and "video.dead is at 80% of its bound (8/10 messages)" in log
    assert "workers dlq list video" in log and "summary: UNHEALTHY: 2 failed" in log
