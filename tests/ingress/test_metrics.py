"""The ingress's /metrics under gunicorn: every worker process's counts together, exact per route."""
from __future__ import annotations

import http.client
import sys
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from tests.support import auth
from tests.support.events import SEED_DATA, rfc3339
from tests.support.metrics import scrape
from tests.support.processes import Process
from tests.support.rabbit import Rabbit, url_via, wait_for
from tests.support.tcpproxy import TcpProxy
from tests.support.net import free_port

EVENTS = "/api/v1/notify/events"
COMPLETE = "/api/v1/videos/{video_id}/complete"


@pytest.fixture
def watched(vhost):
    """A queue bound to the settings event, so publishes are routable."""
    client = Rabbit(vhost)
    client.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    client.channel.queue_declare("watch", durable=True)
    client.channel.queue_bind("watch", "app.events", routing_key="user.settings.submitted")
    yield client
    client.close()


@pytest.fixture
def ingress(vhost, watched, jwt_secret):
    """(port, broker proxy) of a gunicorn ingress with 2 worker processes, reaching RabbitMQ through the proxy."""
    proxy = TcpProxy("127.0.0.1", 5672)
    port = free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", "ingress.app:application"],
                   env={"RABBITMQ_URL": url_via(vhost, proxy.port), **auth.ingress_env(jwt_secret),
                        "PORT": str(port), "WEB_CONCURRENCY": "2",
                        "GUNICORN_THREADS": "4", "PUBLISH_TIMEOUT_S": "3", "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: readiness(port) == {200}, timeout=30, message=f"ingress ready: {proc.text()[-2000:]}")
        yield port, proxy
    finally:
        proc.terminate()
        proxy.close()


def request(port: int, method: str, path: str, body=None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)  # a fresh connection: any worker may answer
    try:
        conn.request(method, path, body=None if body is None else orjson.dumps(body), headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def readiness(port: int) -> set[int]:
    try:
        return {request(port, "GET", "/readyz") for _ in range(6)}
    except OSError:
        return {0}


def event(user_id: str, **overrides) -> dict:
    return {"schema_version": "1.0.0", "event_type": "user.settings.submitted",
            "client_generated_id": str(uuid.uuid4()), "user_id": user_id,
            "timestamp": rfc3339(datetime.now(timezone.utc)), "source_service": "frontend", "data": SEED_DATA,
            **overrides}


def test_requests_publishes_and_failures_are_counted_exactly(ingress, watched, jwt_secret):
    port, proxy = ingress
    user = str(uuid.uuid4())
    token = auth.encode(jwt_secret, user)
    before = scrape(port)

    # When 3 events and a batch of 2 are accepted, 2 posts lack a token, 1 breaks the schema,
    # one path matches no route and one route gets the wrong method
    statuses = [request(port, "POST", EVENTS, event(user), token) for _ in range(3)]
    statuses.append(request(port, "POST", EVENTS, [event(user), event(user)], token))
    statuses += [request(port, "POST", EVENTS, event(user)) for _ in range(2)]
    statuses.append(request(port, "POST", EVENTS, event(user, data={**SEED_DATA, "age": 500}), token))
    statuses.append(request(port, "GET", f"/no/such/{uuid.uuid4()}"))
    statuses.append(request(port, "GET", COMPLETE.format(video_id=uuid.uuid4())))
    assert statuses == [202] * 4 + [401] * 2 + [422, 404, 405]

    # Then every scrape, whichever worker process answers it, counts them all, by route template
    scrapes = [scrape(port) for _ in range(6)]
    for after in scrapes:
        def moved(name, **labels):
            return after.value(name, **labels) - before.value(name, **labels)
        assert moved("spotter_http_requests_total", route=EVENTS, method="POST", status="202") == 4
        assert moved("spotter_http_requests_total", route=EVENTS, method="POST", status="401") == 2
        assert moved("spotter_http_requests_total", route=EVENTS, method="POST", status="422") == 1
        assert moved("spotter_http_requests_total", route="unmatched", method="GET", status="404") == 1
        assert moved("spotter_http_requests_total", route=COMPLETE, method="GET", status="405") == 1
        assert moved("spotter_publish_seconds_count") == 5  # one per confirmed event
        assert moved("spotter_publish_failures_total") == 0
    assert not [s for s in scrapes[-1].samples if s.name == "spotter_http_requests_total"
                and s.labels["route"].startswith("/no/such")]  # raw paths never become labels
    assert watched.depth("watch") == 5

    # When the broker is cut away, each event posted is a publish failure
    proxy.cut()
    wait_for(lambda: readiness(port) == {503}, timeout=10, message="both workers see the broker gone")
    failed = [request(port, "POST", EVENTS, event(user), token) for _ in range(3)]
    assert failed == [503] * 3
    after = scrape(port)
    assert after.value("spotter_publish_failures_total", reason="broker_unavailable") \
        - before.value("spotter_publish_failures_total", reason="broker_unavailable") == 3
    assert after.value("spotter_publish_failures_total") - before.value("spotter_publish_failures_total") == 3
    assert after.value("spotter_http_requests_total", route=EVENTS, status="503") == 3
    assert after.value("spotter_publish_seconds_count") - before.value("spotter_publish_seconds_count") == 5
    proxy.restore()
    wait_for(lambda: readiness(port) == {200}, timeout=30, message="ready again")


@pytest.mark.parametrize("accept, content_type", [
    (None, "text/plain"), ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text")])
def test_metrics_speak_prometheus_text_or_openmetrics(ingress, accept, content_type):
    port, _ = ingress
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200 and response.getheader("Content-Type").startswith(content_type)
    assert "# TYPE spotter_http_requests" in body and "# TYPE spotter_publish_seconds histogram" in body
