"""Bearer tokens verified with the keys the auth service publishes (JWT_JWKS_URL), on the real
ingress under gunicorn and the real broker, against a local JWKS server that rotates its keys,
goes down and comes back."""
from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from tests.support import auth, rabbit
from tests.support.events import event
from tests.support.ingress_server import Ingress, answers
from tests.support.net import free_port
from tests.support.processes import Process
from tests.support.rabbit import wait_for

ROUTED = "user.settings.submitted"


class SigningKey:
    """One of the auth service's RSA keys: its JWK (public) and the tokens it signs."""

    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwk = {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True),
                    "kid": kid, "alg": "RS256", "use": "sig"}

    def token(self, sub: str | None = None, kid: str | None = None, **header) -> str:
        return jwt.encode(auth.claims(sub or str(uuid.uuid4())), self.private, algorithm="RS256",
                          headers={"kid": kid or self.kid, **header})


class JwksServer:
    """The auth service's JWKS endpoint: publishes what `keys` holds, counts the requests it
    answers, can be slowed, stopped (connections refused) and started again on the same port."""

    def __init__(self):
        self.port = free_port()
        self.keys: list[dict] = []
        self.requests = 0
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [k.jwk for k in keys]

    def start(self) -> "JwksServer":
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.requests += 1
                time.sleep(jwks.delay_s)
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture(scope="module")
def key_a():
    return SigningKey("key-a")


@pytest.fixture(scope="module")
def key_b():
    return SigningKey("key-b")


@pytest.fixture(scope="module")
def watcher(broker_url):
    """A queue for the routed event type: the ingress's 202 means it landed here."""
    watch = rabbit.Rabbit(broker_url)
    watch.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    watch.channel.queue_declare("watch", durable=True)
    watch.channel.queue_bind("watch", "app.events", routing_key=ROUTED)
    yield watch
    watch.close()


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
def ingress_for(broker_url, watcher):
    """Start an ingress (one gunicorn worker process: one key cache) verifying with a JWKS."""
    started = []

    def start(jwks_url: str, cache_s: float = 600, refresh_min_s: float = 1, timeout_s: float = 2) -> Ingress:
        env = {**auth.ingress_env("unused"), "JWT_ALGORITHM": "RS256", "JWT_JWKS_URL": jwks_url,
               "JWT_JWKS_CACHE_S": str(cache_s), "JWT_JWKS_REFRESH_MIN_S": str(refresh_min_s),
               "JWT_JWKS_TIMEOUT_S": str(timeout_s), "RABBITMQ_URL": broker_url, "WEB_CONCURRENCY": "1"}
        del env["JWT_SECRET"]  # the JWKS is the key source: nothing else is needed
        port = free_port()
        proc = Process([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", "ingress.app:application"],
                       env={**env, "PORT": str(port)})
        app = Ingress(proc, port, "unused")
        started.append(proc)
        wait_for(lambda: answers(app) and app.readiness(2) == {200}, timeout=30, message="ingress ready")
        return app

    yield start
    for proc in started:
        proc.terminate()


def post(app: Ingress, user: str, token: str):
    return app.post(event(user_id=user), token=token)


def post_as(app: Ingress, key: SigningKey, **header):
    user = str(uuid.uuid4())
    return app.post(event(user_id=user), token=key.token(user, **header))


def test_keys_rotate_from_a_to_b_and_a_is_refused_once_the_jwks_drops_it(jwks_server, ingress_for, key_a, key_b,
                                                                          watcher):
    watcher.channel.queue_purge("watch")
    jwks_server.publish(key_a)
    app = ingress_for(jwks_server.start().url, cache_s=4, refresh_min_s=1)

    assert post_as(app, key_a)[0] == 202
    assert jwks_server.requests == 1                         # fetched once, on first use
    assert [post_as(app, key_a)[0] for _ in range(3)] == [202] * 3
    assert jwks_server.requests == 1                         # then served from the cache

    # the auth service publishes B beside A and starts signing with B: one refresh finds it
    jwks_server.publish(key_a, key_b)
    time.sleep(1.1)                                          # past JWT_JWKS_REFRESH_MIN_S
    assert post_as(app, key_b)[0] == 202
    assert jwks_server.requests == 2

    # A retired: tokens A signed keep working while the set that holds A is the trusted one...
    jwks_server.publish(key_b)
    old_user = str(uuid.uuid4())
    old_token = key_a.token(old_user)
    assert post(app, old_user, old_token)[0] == 202
    assert jwks_server.requests == 2
    # ...and are refused once that set is refreshed (after half of JWT_JWKS_CACHE_S) without A
    time.sleep(2.2)
    assert post_as(app, key_b)[0] == 202                     # this request refreshes the set
    assert jwks_server.requests == 3
    status, headers, body = post(app, old_user, old_token)  # the same token, verified before
    assert status == 401 and body["error"] == "unauthorized"
    assert "kid" in body["detail"] and headers["www-authenticate"].startswith("Bearer")
    assert post_as(app, key_b)[0] == 202
    wait_for(lambda: watcher.depth("watch") == 8, message="every accepted event on the broker")


def test_a_burst_of_unknown_kids_costs_the_jwks_one_request(jwks_server, ingress_for, key_a):
    jwks_server.publish(key_a)
    app = ingress_for(jwks_server.start().url, refresh_min_s=2)
    assert post_as(app, key_a)[0] == 202
    time.sleep(2.1)

    def forged(_):
        return post_as(app, key_a, kid=str(uuid.uuid4()))  # a well-signed token naming a key nobody published

    with ThreadPoolExecutor(10) as pool:
        answers_ = list(pool.map(forged, range(60)))
    assert {status for status, _, _ in answers_} == {401}
    assert all(body["error"] == "unauthorized" for _, _, body in answers_)
    assert jwks_server.requests == 2                         # the first fetch, and one refresh for all 60
    assert post_as(app, key_a)[0] == 202                     # the real key still works


def test_cached_keys_outlive_a_jwks_outage_for_their_lifetime_then_503(jwks_server, ingress_for, key_a):
    jwks_server.publish(key_a)
    app = ingress_for(jwks_server.start().url, cache_s=5, refresh_min_s=1, timeout_s=1)
    assert post_as(app, key_a)[0] == 202
    fetched = time.monotonic()
    jwks_server.stop()                                       # connections refused from now on

    # new tokens signed with the cached key keep working, refresh attempts failing behind them
    while time.monotonic() - fetched < 3.5:
        assert post_as(app, key_a)[0] == 202
        time.sleep(0.5)
    time.sleep(max(0.0, fetched + 5.5 - time.monotonic()))  # past JWT_JWKS_CACHE_S

    status, headers, body = post_as(app, key_a)
    assert status == 503 and body["error"] == "auth_unavailable"
    assert "JWT_JWKS_URL" in body["detail"] and 1 <= int(headers["retry-after"]) <= 2
    assert any(line.get("msg") == "jwks fetch failed" for line in app.proc.logs())

    jwks_server.start()                                      # back on the same port
    wait_for(lambda: post_as(app, key_a)[0] == 202, timeout=5, interval=0.5, message="keys fetched again")


def test_with_no_key_fetched_yet_and_the_jwks_down_the_answer_is_503(jwks_server, ingress_for, key_a):
    app = ingress_for(jwks_server.url, refresh_min_s=30)    # nothing listens there
    status, headers, body = post_as(app, key_a)
    assert status == 503 and body["error"] == "auth_unavailable"
    assert 25 <= int(headers["retry-after"]) <= 30           # the next fetch it will try
    assert post_as(app, key_a)[0] == 503                     # answered at once: no second attempt yet
    fetch_failures = [line for line in app.proc.logs() if line.get("msg") == "jwks fetch failed"]
    assert len(fetch_failures) == 1 and "127.0.0.1" in fetch_failures[0]["url"]


def test_tokens_for_another_algorithm_or_key_type_are_refused_without_a_fetch(jwks_server, ingress_for, key_a):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = {**jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "key-ec", "use": "sig"}
    rs512 = {**key_a.jwk, "kid": "key-rs512", "alg": "RS512"}
    jwks_server.keys = [key_a.jwk, ec_jwk, rs512]
    app = ingress_for(jwks_server.start().url, refresh_min_s=30)
    assert post_as(app, key_a)[0] == 202
    user = str(uuid.uuid4())
    claims = auth.claims(user)
    public_pem = key_a.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    refused = {
        # the public key as an HMAC secret: the classic algorithm confusion
        "hs256": _hs256_signed_with(public_pem, claims, kid="key-a"),
        "none": jwt.encode(claims, None, algorithm="none", headers={"kid": "key-a"}),
        "es256": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "key-ec"}),
        # the header says RS256 but the published key is an EC key / an RS512 key
        "ec key": jwt.encode(claims, key_a.private, algorithm="RS256", headers={"kid": "key-ec"}),
        "rs512 key": jwt.encode(claims, key_a.private, algorithm="RS256", headers={"kid": "key-rs512"}),
        "no kid": jwt.encode(claims, key_a.private, algorithm="RS256"),
    }
    for name, token in refused.items():
        status, _, body = app.post(event(user_id=user), token=token)
        assert (name, status, body["error"]) == (name, 401, "unauthorized")
    assert jwks_server.requests == 1                         # none of them made the ingress fetch


def test_a_slow_jwks_holds_up_only_the_requests_that_wait_for_it(jwks_server, ingress_for, key_a):
    """Under gevent the fetch yields: other requests are answered while it is in flight."""
    jwks_server.publish(key_a)
    jwks_server.delay_s = 2.0
    app = ingress_for(jwks_server.start().url, timeout_s=5)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(post_as, app, key_a)          # the first token: the fetch takes 2 s
        wait_for(lambda: jwks_server.requests == 1, timeout=5, interval=0.02, message="the fetch under way")
        started = time.monotonic()
        assert app.request("GET", "/healthz")[0] == 200
        assert time.monotonic() - started < 1.0
        assert not waiting.done()
        assert waiting.result(timeout=10)[0] == 202


def _hs256_signed_with(secret: bytes, claims: dict, kid: str) -> str:
    """An HS256 token keyed with `secret` (PyJWT refuses a PEM as an HMAC key, an attacker does not)."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + b"." + \
        b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()
