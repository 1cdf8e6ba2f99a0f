"""Calling the ingress as the app does."""
from __future__ import annotations

import http.client
import json


def call(port: int, method: str, path: str, token: str | None = None, body=None,
         headers: dict | None = None) -> tuple[int, object, dict]:
    """(status, parsed JSON body, response headers)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=sent)
    response = conn.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else None, dict(response.getheaders())


def post_events(port: int, body, token: str):
    """POST /api/v1/notify/events: (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/v1/notify/events", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def ready(port: int) -> bool:
    """True once the ingress on `port` answers GET /readyz with 200."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
