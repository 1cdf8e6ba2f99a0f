"""Hostile input through the real ingress, settings and video workers: every field of every event a
client may send, every read's id, limit and cursor, replaced by hostile values. Whatever comes in,
the answer is a 2xx or a 4xx with a JSON error body: never a 5xx (a 503 for a worker that is not
running here, or a 504, would say nothing about the input, and none is expected either)."""
from __future__ import annotations

import uuid

import pytest

from shared import contracts
from tests.support.events import event
from tests.support.http import call
from tests.support.feed_stack import EVENTS, Stack

@pytest.fixture(scope="module")
def stack(feed_stack) -> Stack:
    """The module's one feed stack (tests/conftest.py feed_stack)."""
    return feed_stack


HOSTILE = [None, "", " ", "0", "-1", "x" * 70_000, "\u202e\u0301" * 50, "' OR 1=1; --", "<script>alert(1)</script>",
           "../../etc/passwd", "%00", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
           0, -1, 2 ** 63, -(2 ** 63) - 1, 10 ** 64, 1e308, -0.0, 0.1, True, False, [], [None], {},
           {"$gt": ""}, "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
           "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00"]
ENVELOPE_FIELDS = ("schema_version", "event_type", "client_generated_id", "user_id", "timestamp",
                   "source_service", "data")


def _fields(schema: dict) -> list[str]:
    return sorted(schema.get("properties", {}))


def _sweep(stack, user: str, body) -> tuple[int, dict]:
    status, answer, _ = call(stack.port, "POST", EVENTS, stack.token(user), body)
    return status, answer


def test_no_hostile_field_of_any_client_event_gets_a_5xx(stack):
    user = str(uuid.uuid4())
    failures = []
    for event_type in sorted(contracts.client_event_types()):
        schema = contracts.data_schemas()[event_type]
        for field in _fields(schema):
            for value in HOSTILE:
                status, answer = _sweep(stack, user, event(event_type, data={field: value}, user_id=user))
                if status >= 500 or not isinstance(answer, dict):
                    failures.append((event_type, f"data.{field}", repr(value)[:40], status, answer))
        for field in ENVELOPE_FIELDS:
            for value in HOSTILE:
                status, answer = _sweep(stack, user, {**event(event_type, user_id=user), field: value})
                if status >= 500 or not isinstance(answer, dict):
                    failures.append((event_type, field, repr(value)[:40], status, answer))
    assert not failures, failures[:20]


def test_no_hostile_id_limit_or_cursor_of_a_read_gets_a_5xx(stack):
    user = str(uuid.uuid4())
    ids = [str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", "x" * 36, "%2e%2e", "%27%20OR%201%3D1"]
    params = ["limit=0", "limit=-1", "limit=99999999999999999999", "limit=abc", "cursor=", "cursor=%00",
              "cursor=" + "A" * 4000, "cursor=MjAyNS0wMS0wMVQwMDowMDowMFp8eA", "cursor=9999-12-31T23:59:59%2B14:00|x",
              "limit=1&limit=2", "unknown=1"]
    failures = []
    # the routes the video worker of this stack answers (the other workers do not run here)
    for path in ("/api/v1/feeds/{}/posts", "/api/v1/posts/{}/comments", "/api/v1/videos/{}/complete"):
        for id_ in ids:
            for query in params:
                method = "POST" if path.endswith("/complete") else "GET"
                status, answer, _ = call(stack.port, method, path.format(id_) + "?" + query, stack.token(user))
                if status >= 500 or not isinstance(answer, dict):
                    failures.append((path, id_, query, status, answer))
    assert not failures, failures[:20]
