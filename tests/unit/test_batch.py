"""A request's events (ingress/batch.py): one event or an array, all-or-nothing, and the HTTP
status and error code a client gets for each way a request can be wrong."""
from __future__ import annotations

import copy

import orjson
import pytest

from ingress.batch import Rejected, parse
from tests.support.events import SEED_DATA, SEED_USER, event

MAX_EVENTS = 5


def settings(user_id=SEED_USER, **overrides) -> dict:
    return event(user_id=user_id, data=copy.deepcopy(SEED_DATA), **overrides)


def rejected(body, subject: str = SEED_USER) -> Rejected:
    with pytest.raises(Rejected) as refused:
        parse(body if isinstance(body, bytes) else orjson.dumps(body), subject, MAX_EVENTS, 300)
    return refused.value


def test_one_event_or_an_array_becomes_envelopes_in_order():
    one, two = settings(), settings()
    assert [e.id for e in parse(orjson.dumps(one), SEED_USER, MAX_EVENTS, 300)] == [one["client_generated_id"]]
    assert [e.id for e in parse(orjson.dumps([one, two]), SEED_USER, MAX_EVENTS, 300)] == \
        [one["client_generated_id"], two["client_generated_id"]]


def test_bad_json_is_400():
    refusal = rejected(b'{"event_type": ')
    assert (refusal.status, refusal.error) == (400, "bad_json")


@pytest.mark.parametrize("body", [[], 42, "text"])
def test_neither_an_event_nor_a_non_empty_array_is_422(body):
    refusal = rejected(body)
    assert (refusal.status, refusal.error, refusal.field) == (422, "schema_violation", "body")


def test_too_many_events_is_413():
    refusal = rejected([settings() for _ in range(MAX_EVENTS + 1)])
    assert (refusal.status, refusal.error) == (413, "too_many_events")


def test_a_schema_violation_in_a_single_event_is_422_naming_the_field():
    bad = settings()
    bad["data"]["age"] = 200
    refusal = rejected(bad)
    assert (refusal.status, refusal.error, refusal.field) == (422, "schema_violation", "data.age")
    assert refusal.body() == {"error": "schema_violation", "detail": "data.age must be at most 120", "field": "data.age"}


def test_outcome_events_unknown_types_and_versions_each_have_their_code():
    assert rejected(settings(event_type="event.rejected")).error == "event_type_not_allowed"
    assert rejected(settings(event_type="user.teleported")).error == "unknown_event_type"
    assert rejected(settings(schema_version="9.0.0")).error == "unsupported_version"


def test_another_users_event_is_403_whatever_else_is_wrong():
    bad = settings()
    bad["data"]["age"] = 200
    refusal = rejected([bad, settings(user_id="11111111-1111-4111-8111-111111111111")])
    assert (refusal.status, refusal.error) == (403, "forbidden")
    assert [e["index"] for e in refusal.errors] == [0, 1]


def test_one_bad_event_rejects_the_whole_batch_listing_each_by_index():
    good, bad = settings(), settings()
    bad["data"].pop("age")
    refusal = rejected([good, bad, settings()])
    assert refusal.status == 422
    assert refusal.detail == "1 of 3 events rejected; none was published"
    assert refusal.errors == [{"index": 1, "error": "schema_violation", "detail": "data must contain 'age'",
                               "field": "data"}]


def test_a_repeated_id_in_one_request_is_a_client_bug():
    first = settings()
    refusal = rejected([first, settings(client_generated_id=first["client_generated_id"])])
    assert refusal.errors[0]["index"] == 1 and refusal.errors[0]["error"] == "duplicate_id"
