"""A client of an ingress a test runs under gunicorn: raw requests, posts with minted tokens."""
from __future__ import annotations

import http.client
import json
import uuid

import orjson

from tests.support import auth
from tests.support.processes import Process

EVENTS = "/api/v1/notify/events"


class Ingress:
    def __init__(self, proc: Process, port: int, secret: str):
        self.proc, self.port, self.secret = proc, port, secret

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw) if raw else None
        finally:
            conn.close()

    def post(self, payload, token: str | None = "default", content_type: str = "application/json",
             sub: str | None = None):
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        headers = {"Content-Type": content_type}
        if token == "default":
            token = self.token(sub or _user_of(payload))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", EVENTS, body, headers)

    def token(self, sub: str, key: str | None = None, algorithm: str = "HS256", ttl_s: int = 300, **claims) -> str:
        return auth.encode(self.secret if key is None else key, sub, ttl_s, algorithm=algorithm, **claims)

    def readiness(self, n: int = 6) -> set[int]:
        """Statuses of n fresh connections' /readyz: each may land on either worker."""
        return {self.request("GET", "/readyz")[0] for _ in range(n)}


def _user_of(payload) -> str:
    if isinstance(payload, list):
        payload = payload[0]
    return payload["user_id"] if isinstance(payload, dict) else str(uuid.uuid4())


def answers(app: Ingress) -> bool:
    """True once the ingress answers GET /healthz with 200."""
    try:
        return app.request("GET", "/healthz")[0] == 200
    except OSError:
        return False
