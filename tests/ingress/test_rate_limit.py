"""The per-user event budget at the ingress, on the real broker: one account that floods is told
429 with Retry-After, and nobody else notices."""
from __future__ import annotations

import sys
import uuid

import pytest

from tests.support.ingress_server import Ingress, answers
from tests.support.net import free_port
from tests.support import auth, rabbit
from tests.support.events import event
from tests.support.processes import Process
from tests.support.rabbit import wait_for

BURST, MAX_EVENTS = 50, 20


@pytest.fixture(scope="module")
def limited(jwt_secret):
    name, url = rabbit.create_vhost()
    watcher = rabbit.Rabbit(url)
    watcher.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    watcher.channel.queue_declare("watch", durable=True)
    watcher.channel.queue_bind("watch", "app.events", routing_key="user.settings.submitted")
    port = free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", "ingress.app:application"],
                   env={"RABBITMQ_URL": url, **auth.ingress_env(jwt_secret), "PORT": str(port),
                        "WEB_CONCURRENCY": "1", "MAX_BATCH_EVENTS": str(MAX_EVENTS),
                        "RATE_LIMIT_BURST": str(BURST), "RATE_LIMIT_EVENTS_PER_S": "0.5"})
    app = Ingress(proc, port, jwt_secret)
    try:
        wait_for(lambda: answers(app) and app.readiness(2) == {200}, timeout=30, message="ingress ready")
        yield app, watcher
    finally:
        proc.terminate()
        watcher.close()
        rabbit.delete_vhost(name)


def test_a_user_over_their_budget_gets_429_and_others_are_unaffected(limited):
    app, watcher = limited
    mallory, alice = str(uuid.uuid4()), str(uuid.uuid4())
    token = auth.encode(app.secret, mallory)
    answers = [app.post([event(user_id=mallory) for _ in range(MAX_EVENTS)], token=token) for _ in range(4)]
    assert [a[0] for a in answers] == [202, 202, 429, 429]  # 20 + 20 of 50; the third batch does not fit
    status, headers, body = answers[2]
    assert body["error"] == "rate_limited" and 1 <= int(headers["retry-after"]) <= 60
    # a batch that was refused was not published, not even in part
    wait_for(lambda: watcher.depth("watch") == 2 * MAX_EVENTS, message="the accepted events")
    # what is left of the budget (10) still takes smaller batches, and alice posts as if nothing happened
    assert [app.post([event(user_id=mallory) for _ in range(5)], token=token)[0] for _ in range(2)] == [202, 202]
    assert app.post([event(user_id=alice) for _ in range(MAX_EVENTS)], token=auth.encode(app.secret, alice))[0] == 202
    # reads and completions spend the same budget
    assert app.request("GET", f"/api/v1/ai/prompts/{uuid.uuid4()}",
                       headers={"Authorization": f"Bearer {token}"})[0] == 429
    assert app.request("POST", f"/api/v1/videos/{uuid.uuid4()}/complete",
                       headers={"Authorization": f"Bearer {token}"})[0] == 429
