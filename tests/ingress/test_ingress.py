"""The ingress under gunicorn on the real broker: what a client sees, and what lands in the queue.

One gunicorn (2 workers) per module, reaching RabbitMQ through a TcpProxy so a test can cut
the broker away; one throwaway vhost with a queue bound to both client event types.
"""
from __future__ import annotations

import socket
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import orjson
import pika
import pytest

from shared import contracts
from tests.support import auth, rabbit
from tests.support.events import SEED_DATA, rfc3339
from tests.support.ingress_server import EVENTS, Ingress, answers
from tests.support.net import free_port
from tests.support.processes import Process
from tests.support.rabbit import wait_for
from tests.support.tcpproxy import TcpProxy

QUEUE = "ingress-watch"
BOUND = ("user.settings.submitted", "app.settings.updated")
MAX_BODY = 64 * 1024
MAX_EVENTS = 20


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def watcher(broker_url):
    """A direct (unproxied) connection holding the durable queue bound to the client event types."""
    client = rabbit.Rabbit(broker_url)
    client.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    client.channel.queue_declare(QUEUE, durable=True)
    for key in BOUND:
        client.channel.queue_bind(QUEUE, "app.events", routing_key=key)
    yield client
    client.close()


class BrokerProxy(TcpProxy):
    """A TcpProxy that can also speak for the broker: inject a frame toward every client."""

    def send_to_clients(self, method) -> None:
        frame = pika.frame.Method(0, method).marshal()
        with self._lock:
            clients = self._conns[0::2]  # TcpProxy keeps [client, upstream] pairs
        for sock in clients:
            sock.sendall(frame)


@pytest.fixture(scope="module")
def proxy():
    p = BrokerProxy("127.0.0.1", 5672)
    yield p
    p.close()


@pytest.fixture(scope="module")
def ingress(broker_url, watcher, proxy, jwt_secret):
    port = free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", "ingress.app:application"],
                   env={"RABBITMQ_URL": rabbit.url_via(broker_url, proxy.port), **auth.ingress_env(jwt_secret),
                        "PORT": str(port), "WEB_CONCURRENCY": "2",
                        "GUNICORN_THREADS": "4", "MAX_BODY_BYTES": str(MAX_BODY),
                        "MAX_BATCH_EVENTS": str(MAX_EVENTS), "PUBLISH_TIMEOUT_S": "3",
                        "BODY_READ_TIMEOUT_S": str(BODY_READ_TIMEOUT_S), "PYTHONUNBUFFERED": "1"})
    app = Ingress(proc, port, jwt_secret)
    try:
        wait_for(lambda: answers(app) and app.readiness() == {200}, timeout=30, message="ingress ready")
    except AssertionError:
        proc.terminate()
        raise AssertionError(f"ingress did not become ready:\n{proc.text()[-3000:]}")
    yield app
    proc.terminate()


BODY_READ_TIMEOUT_S = 1


@pytest.fixture(autouse=True)
def empty_queue(request, watcher):
    watcher.channel.queue_purge(QUEUE)


def event(**overrides) -> dict:
    """The seed payload with fresh ids and a current timestamp."""
    body = {"schema_version": "1.0.0", "event_type": "user.settings.submitted",
            "client_generated_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()),
            "timestamp": rfc3339(datetime.now(timezone.utc)), "source_service": "frontend",
            "data": SEED_DATA}
    body.update(overrides)
    return body


def nothing_published(watcher) -> bool:
    return watcher.depth(QUEUE) == 0


# ---- accepted ------------------------------------------------------------------------------
def test_seed_event_is_accepted_once_it_is_in_the_queue(ingress, watcher):
    seed = event()
    status, _, body = ingress.post(seed)
    assert (status, body) == (202, {"accepted": [seed["client_generated_id"]]})
    # 202 means confirmed: the message is already there, no waiting
    [(props, raw)] = watcher.drain(QUEUE)
    assert props.message_id == seed["client_generated_id"]
    assert props.type == "user.settings.submitted"
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.headers["schema_version"] == "1.0.0"
    assert orjson.loads(raw) == seed


def test_a_batch_of_three_lands_as_three_messages(ingress, watcher):
    user = str(uuid.uuid4())
    events = [event(user_id=user), event(user_id=user, event_type="app.settings.updated", data={"theme": "dark"}),
              event(user_id=user)]
    status, _, body = ingress.post(events)
    assert status == 202
    assert body["accepted"] == [e["client_generated_id"] for e in events]
    messages = watcher.drain(QUEUE)
    assert [(p.message_id, p.type) for p, _ in messages] == [(e["client_generated_id"], e["event_type"])
                                                             for e in events]


def test_resending_the_same_event_is_accepted_again(ingress, watcher):
    seed = event()
    assert ingress.post(seed)[0] == 202
    assert ingress.post(seed)[0] == 202  # the worker deduplicates, not the ingress
    assert [p.message_id for p, _ in watcher.drain(QUEUE)] == [seed["client_generated_id"]] * 2


def test_user_ids_are_compared_as_uuids(ingress, watcher):
    user = str(uuid.uuid4())
    status, _, _ = ingress.post(event(user_id=user.upper()), sub=user)
    assert status == 202
    [(_, raw)] = watcher.drain(QUEUE)
    assert orjson.loads(raw)["user_id"] == user  # canonical form on the wire


def test_trace_context_travels_as_a_header(ingress, watcher):
    seed = event()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, _, _ = ingress.request("POST", EVENTS, orjson.dumps(seed), {
        "Content-Type": "application/json; charset=utf-8", "traceparent": traceparent,
        "Authorization": f"Bearer {ingress.token(seed['user_id'])}"})
    assert status == 202
    [(props, _)] = watcher.drain(QUEUE)
    assert props.headers["traceparent"] == traceparent


# ---- rejected: nothing is published --------------------------------------------------------
def _seed_text(ev: dict) -> str:
    return orjson.dumps(ev).decode()


@pytest.mark.parametrize("corrupt, what", [
    (lambda text: text[:-2], "malformed"),
    (lambda text: '{"event_type":"user.settings.submitted",' + text[1:], "duplicate key"),
    (lambda text: text.replace('"age":28', '"age":NaN'), "NaN"),
    (lambda text: text.replace('"age":28', '"age":1e999'), "Infinity"),
    (lambda text: text.replace('"age":28', '"age":' + "9" * 5000), "integer of 5000 digits"),
])
def test_json_that_is_not_strict_is_400(ingress, watcher, corrupt, what):
    seed = event()
    status, _, body = ingress.post(corrupt(_seed_text(seed)).encode(), sub=seed["user_id"])
    assert (status, body["error"]) == (400, "bad_json"), what
    assert "sys." not in body["detail"]  # no hint about the server's internals
    assert nothing_published(watcher)


def test_a_duplicate_key_is_named(ingress, watcher):
    seed = event()
    text = '{"user_id":"' + seed["user_id"] + '",' + _seed_text(seed)[1:]
    status, _, body = ingress.post(text.encode(), sub=seed["user_id"])
    assert (status, body["error"], body["field"]) == (400, "bad_json", "user_id")
    assert nothing_published(watcher)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with the test key
@pytest.mark.parametrize("make_token, what", [
    (lambda app, sub: None, "missing"),
    (lambda app, sub: app.token(sub, exp=int(time.time()) - 300), "expired"),
    (lambda app, sub: jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, None, algorithm="none"), "alg none"),
    (lambda app, sub: app.token(sub, key="another-key-another-key-another-key-0123"), "wrong key"),
    (lambda app, sub: app.token(sub, algorithm="HS512"), "another algorithm"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub), "exp"), app.secret, algorithm="HS256"), "no exp"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub), "sub"), app.secret, algorithm="HS256"), "no sub"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub), "iss"), app.secret, algorithm="HS256"), "no iss"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub), "aud"), app.secret, algorithm="HS256"), "no aud"),
    (lambda app, sub: app.token(sub, iss="someone-else"), "another issuer"),
    (lambda app, sub: app.token(sub, aud="someone-else"), "another audience"),
    # JWT_MAX_TTL_S (default 86400): a long-lived token is refused even while it is unexpired
    (lambda app, sub: app.token(sub, ttl_s=86400 + 3600), "lifetime above JWT_MAX_TTL_S"),
    (lambda app, sub: app.token(sub, iat=int(time.time()) - 86400, exp=int(time.time()) + 3600),
     "issued over JWT_MAX_TTL_S before its exp"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub, ttl_s=86400 + 3600), "iat"), app.secret,
                                 algorithm="HS256"), "no iat and exp beyond JWT_MAX_TTL_S"),
    (lambda app, sub: app.token(sub, ttl_s=10 * 365 * 86400), "ten years"),
    (lambda app, sub: "not-a-jwt", "garbage"),
])
def test_without_a_valid_token_it_is_401(ingress, watcher, make_token, what):
    seed = event()
    status, headers, body = ingress.post(seed, token=make_token(ingress, seed["user_id"]))
    assert (status, body["error"]) == (401, "unauthorized"), what
    assert headers["www-authenticate"].startswith("Bearer")
    assert nothing_published(watcher)


def _without(claims: dict, name: str) -> dict:
    return {k: v for k, v in claims.items() if k != name}


@pytest.mark.parametrize("make_token, what", [
    (lambda app, sub: app.token(sub, ttl_s=86400), "a lifetime of exactly JWT_MAX_TTL_S"),
    (lambda app, sub: jwt.encode(_without(auth.claims(sub, ttl_s=3600), "iat"), app.secret, algorithm="HS256"),
     "no iat, exp within JWT_MAX_TTL_S"),
])
def test_a_token_within_the_lifetime_limit_is_accepted(ingress, watcher, make_token, what):
    seed = event()
    assert ingress.post(seed, token=make_token(ingress, seed["user_id"]))[0] == 202, what


def test_an_event_for_another_user_is_403(ingress, watcher):
    status, _, body = ingress.post(event(), sub=str(uuid.uuid4()))
    assert (status, body["error"], body["field"]) == (403, "forbidden", "user_id")
    assert nothing_published(watcher)


def test_a_body_too_large_is_413(ingress, watcher):
    seed = event(data={**SEED_DATA, "padding": "x" * MAX_BODY})
    status, _, body = ingress.post(seed)
    assert (status, body["error"]) == (413, "body_too_large")
    assert nothing_published(watcher)


def test_too_many_events_is_413(ingress, watcher):
    user = str(uuid.uuid4())
    status, _, body = ingress.post([event(user_id=user) for _ in range(MAX_EVENTS + 1)])
    assert (status, body["error"]) == (413, "too_many_events")
    assert nothing_published(watcher)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])
def test_a_body_that_is_not_json_media_is_415(ingress, watcher, content_type):
    status, _, body = ingress.post(event(), content_type=content_type)
    assert (status, body["error"]) == (415, "unsupported_media_type")
    assert nothing_published(watcher)


def test_a_schema_violation_names_the_field(ingress, watcher):
    status, _, body = ingress.post(event(data={**SEED_DATA, "age": 500}))
    assert (status, body["error"], body["field"]) == (422, "schema_violation", "data.age")
    assert nothing_published(watcher)


def test_one_bad_event_rejects_the_whole_batch(ingress, watcher):
    user = str(uuid.uuid4())
    events = [event(user_id=user), event(user_id=user, data={**SEED_DATA, "age": 500}),
              event(user_id=user, event_type="no.such.type")]
    status, _, body = ingress.post(events)
    assert (status, body["error"]) == (422, "schema_violation")
    assert [(e["index"], e["error"], e["field"]) for e in body["errors"]] == [
        (1, "schema_violation", "data.age"), (2, "unknown_event_type", "event_type")]
    assert nothing_published(watcher)


@pytest.mark.parametrize("overrides, error, field", [
    ({"event_type": "no.such.type"}, "unknown_event_type", "event_type"),
    ({"schema_version": "2.0.0"}, "unsupported_version", "schema_version"),
    ({"timestamp": rfc3339(datetime.now(timezone.utc) + timedelta(days=1))}, "schema_violation", "timestamp"),
    ({"client_generated_id": "not-a-uuid"}, "schema_violation", "client_generated_id"),
    # the pattern's shape, but no such date; and dates a zone pushes past what UTC can hold
    ({"timestamp": "2026-13-45T99:99:99Z"}, "schema_violation", "timestamp"),
    ({"timestamp": "0001-01-01T00:00:00+14:00"}, "schema_violation", "timestamp"),
    ({"timestamp": "9999-12-31T23:59:59-23:59"}, "schema_violation", "timestamp"),
])
def test_events_the_ingress_must_not_accept_are_422(ingress, watcher, overrides, error, field):
    status, _, body = ingress.post(event(**overrides))
    assert (status, body["error"], body.get("field")) == (422, error, field)
    assert nothing_published(watcher)


def test_a_client_cannot_forge_an_outcome_event(ingress, watcher):
    # An outcome type with a schema in the catalog is named as such; without one it is unknown.
    outcomes = sorted(set(contracts.data_schemas()) - contracts.client_event_types())
    forged = outcomes[0] if outcomes else "comment.persisted"
    status, _, body = ingress.post(event(event_type=forged))
    expected = "event_type_not_allowed" if outcomes else "unknown_event_type"
    assert (status, body["error"], body["field"]) == (422, expected, "event_type")
    assert nothing_published(watcher)


def test_the_same_id_twice_in_one_batch_is_422(ingress, watcher):
    first = event()
    status, _, body = ingress.post([first, dict(first)])
    assert (status, body["errors"][0]["index"], body["errors"][0]["error"]) == (422, 1, "duplicate_id")
    assert nothing_published(watcher)


def test_an_event_type_no_queue_takes_is_422_no_consumer(ingress, watcher):
    watcher.channel.queue_unbind(QUEUE, "app.events", routing_key="app.settings.updated")
    try:
        status, _, body = ingress.post(event(event_type="app.settings.updated", data={"theme": "dark"}))
    finally:
        watcher.channel.queue_bind(QUEUE, "app.events", routing_key="app.settings.updated")
    assert (status, body["error"]) == (422, "no_consumer")
    assert "app.settings.updated" in body["detail"]
    assert nothing_published(watcher)


def test_a_message_the_broker_refuses_is_503(ingress, watcher):
    # A full queue with reject-publish makes RabbitMQ nack the publish.
    watcher.channel.queue_declare("ingress-full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    watcher.channel.queue_bind("ingress-full", "app.events", routing_key="app.settings.updated")
    try:
        status, headers, body = ingress.post(event(event_type="app.settings.updated", data={"theme": "dark"}))
    finally:
        watcher.channel.queue_delete("ingress-full")
    assert (status, body["error"]) == (503, "broker_unavailable")
    assert "retry-after" in headers


# ---- the documents and the other routes ----------------------------------------------------
def test_schemas_openapi_and_asyncapi_describe_the_client_events(ingress):
    status, _, index = ingress.request("GET", "/api/v1/schemas")
    assert status == 200
    from shared import contracts
    assert {e["event_type"] for e in index["event_types"]} == set(contracts.client_event_types()) >= set(BOUND)
    status, _, schema = ingress.request("GET", index["event_types"][0]["href"])
    assert status == 200 and schema["properties"]["event_type"] == {"const": index["event_types"][0]["event_type"]}
    status, _, openapi = ingress.request("GET", "/api/v1/openapi.json")
    assert status == 200 and openapi["openapi"].startswith("3.1")
    assert set(BOUND) <= set(openapi["components"]["schemas"]) and EVENTS in openapi["paths"]
    status, _, asyncapi = ingress.request("GET", "/api/v1/asyncapi.json")
    assert status == 200 and asyncapi["asyncapi"] == "2.6.0"
    assert asyncapi["channels"]["user.settings.submitted"]["bindings"]["amqp"]["exchange"]["name"] == "app.events"
    assert ingress.request("GET", "/api/v1/schemas/no.such.type")[:1] == (404,)


def test_unknown_routes_and_methods_answer_json(ingress):
    status, _, body = ingress.request("GET", "/nope")
    assert (status, body["error"]) == (404, "not_found")
    status, headers, body = ingress.request("GET", EVENTS)
    assert (status, body["error"], headers["allow"]) == (405, "method_not_allowed", "POST")
    assert ingress.request("GET", "/healthz")[2] == {"status": "ok"}


def _raw_http(port: int, request: bytes) -> tuple[int, dict]:
    """What the server answers to bytes no HTTP client library would send."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # gunicorn closes the connection after a refusal
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), orjson.loads(body)


@pytest.mark.parametrize("request_bytes, status, error", [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"BLAH\r\n\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
     431, "headers_too_large"),
])
def test_requests_gunicorn_refuses_are_answered_in_json_and_logged_as_json(ingress, request_bytes, status, error):
    code, body = _raw_http(ingress.port, request_bytes)
    assert (code, body["error"]) == (status, error) and body["detail"]
    wait_for(lambda: [l for l in ingress.proc.logs() if l.get("component") == "gunicorn"
                      and l.get("level") == "warning" and "Invalid request" in l.get("msg", "")],
             message="gunicorn's refusal logged as a JSON line")
    assert not [line for line in ingress.proc.text().splitlines() if line.startswith("[")]  # no plain-text log


def test_a_body_that_stops_arriving_is_408_and_the_ingress_keeps_answering(ingress, watcher):
    seed = event()
    body = orjson.dumps(seed)
    head = (f"POST {EVENTS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {ingress.token(seed['user_id'])}\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", ingress.port), timeout=10) as stalled:
        stalled.sendall(head.encode() + body[:20])  # then nothing more
        started = time.monotonic()
        answer = stalled.recv(65536)
        waited = time.monotonic() - started
        answer = _whole_answer(stalled, answer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    assert BODY_READ_TIMEOUT_S <= waited < BODY_READ_TIMEOUT_S + 5
    assert nothing_published(watcher)
    assert ingress.post(event())[0] == 202


def _whole_answer(sock, answer: bytes) -> bytes:
    """All of an HTTP answer that began with `answer`: head and body may arrive in separate segments."""
    while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_each_request_logs_one_json_line_without_the_token(ingress):
    seed = event()
    token = ingress.token(seed["user_id"])
    assert ingress.post(seed, token=token)[0] == 202
    lines = wait_for(lambda: [l for l in ingress.proc.logs() if l.get("msg") == "request"
                              and l.get("user_id") == seed["user_id"]], message="request logged")
    assert {k: lines[0][k] for k in ("route", "status", "count")} == {"route": EVENTS, "status": 202, "count": 1}
    assert lines[0]["duration_ms"] > 0
    assert token not in ingress.proc.text() and token.split(".")[2] not in ingress.proc.text()


# ---- the broker blocks, goes away and comes back ------------------------------------------
def test_a_broker_resource_alarm_gives_a_fast_503_until_it_clears(ingress, watcher, proxy):
    # Given an idle ingress (so the injected frame falls between the broker's own frames)
    time.sleep(0.3)
    # When the broker blocks publishers (what it sends on a memory or disk alarm)
    proxy.send_to_clients(pika.spec.Connection.Blocked(reason="low on memory (test)"))
    try:
        wait_for(lambda: ingress.readiness() == {503}, timeout=3, message="/readyz 503 while blocked")
        started = time.monotonic()
        status, headers, body = ingress.post(event())
        # Then clients get 503 at once instead of a request hanging on a blocked socket
        assert time.monotonic() - started < 1.0
        assert (status, body["error"], "retry-after" in headers) == (503, "broker_unavailable", True)
        assert nothing_published(watcher)
    finally:
        proxy.send_to_clients(pika.spec.Connection.Unblocked())
    # And once the alarm clears, events are accepted again
    wait_for(lambda: ingress.readiness() == {200}, timeout=5, message="/readyz 200 after unblock")
    assert ingress.post(event())[0] == 202

def test_a_broker_that_stops_confirming_gives_503_after_the_publish_timeout(ingress, watcher, proxy):
    # Given a connected ingress whose broker goes silent (connection open, no confirms come)
    time.sleep(0.3)
    proxy.stall()
    try:
        started = time.monotonic()
        status, headers, body = ingress.post(event())
        waited = time.monotonic() - started
    finally:
        proxy.resume()
    # Then the client is answered 503 once PUBLISH_TIMEOUT_S (3 s here) has passed, not left hanging
    assert (status, body["error"], "retry-after" in headers) == (503, "broker_unavailable", True)
    assert "confirm" in body["detail"]
    assert 2.9 <= waited < 5.0
    # And when the broker answers again the same processes accept events (late confirms ignored)
    wait_for(lambda: ingress.post(event())[0] == 202, timeout=10, interval=0.2, message="202 after resume")


def test_broker_cut_gives_a_fast_503_and_recovery_needs_no_restart(ingress, watcher, proxy):
    try:
        # Given a ready ingress, when the broker connection is cut
        proxy.cut()
        started = time.monotonic()
        status, headers, body = ingress.post(event())
        # Then a client gets 503 with Retry-After at once, not after the publish timeout
        assert time.monotonic() - started < 2.0
        assert (status, body["error"]) == (503, "broker_unavailable")
        assert int(headers["retry-after"]) > 0
        wait_for(lambda: ingress.readiness() == {503}, timeout=3, message="/readyz 503 on every worker")
        started = time.monotonic()
        assert ingress.post(event())[0] == 503 and time.monotonic() - started < 2.0
        assert nothing_published(watcher)
    finally:
        # When the broker is back, the same processes accept events again within seconds
        proxy.restore()
    seed = event()
    wait_for(lambda: ingress.post(seed)[0] == 202, timeout=10, interval=0.2, message="202 after restore")
    wait_for(lambda: ingress.readiness() == {200}, timeout=10, message="/readyz 200 on every worker")
    assert ingress.post(event())[0] == 202
    assert {p.message_id for p, _ in watcher.drain(QUEUE)} >= {seed["client_generated_id"]}
