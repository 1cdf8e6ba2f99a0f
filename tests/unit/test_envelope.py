"""Envelope parsing and validation (shared/strictjson.py, shared/contracts.py, shared/envelope.py):
what a sender is told about a bad event, and the keys newest-wins and replays depend on."""
from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from shared import contracts, envelope, strictjson
from shared.errors import InvalidEvent, UnknownEventType, UnsupportedVersion
from tests.support.events import SEED_DATA, SEED_USER, event

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)


def settings(data=None, user_id=SEED_USER, timestamp="2026-01-02T11:59:00Z", **overrides) -> dict:
    """A valid user.settings.submitted a minute before NOW (its data a copy: tests change it)."""
    return event(user_id=user_id, data=copy.deepcopy(SEED_DATA if data is None else data),
                 timestamp=timestamp, **overrides)


# ---- strict JSON ---------------------------------------------------------------------------------

def test_compact_and_spaced_json_parse_to_the_same_value():
    value = {"a": [1, 2.5, "x"], "b": {"c": None}}
    assert strictjson.loads(orjson.dumps(value)) == value
    assert strictjson.loads(b'{ "a" : [1, 2.5, "x"], "b": {"c": null} }') == value


@pytest.mark.parametrize("body, says", [
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b'{"a": NaN}', "NaN is not valid JSON"),
    (b'{"a": Infinity}', "Infinity is not valid JSON"),
    (b'{"a": 1e999}', "out of range"),
    (b'{"a": ' + b"9" * 65 + b"}", "integer of 65 digits"),
    (b'{"a": "\\u0000"}', "NUL"),
    (b'{"a": "\\ud800"}', "surrogate"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    (b"[" * 40 + b"]" * 40, "nested deeper than 32"),
    (b'{"a": ', "malformed JSON"),
])
def test_hostile_json_is_refused_with_a_reason(body, says):
    with pytest.raises(InvalidEvent) as refused:
        strictjson.loads(body)
    assert says in refused.value.detail
    assert refused.value.reason == "invalid"


def test_a_duplicate_key_names_its_field():
    with pytest.raises(InvalidEvent) as refused:
        strictjson.loads(b'{"user_id": "a", "user_id": "b"}')
    assert refused.value.field == "user_id"


def test_a_body_over_the_limit_is_too_large_before_it_is_parsed():
    with pytest.raises(InvalidEvent) as refused:
        strictjson.loads(b"[" + b"1," * 100 + b"1]", max_bytes=64)
    assert refused.value.reason == "too_large"
    assert strictjson.loads(b"[1]", max_bytes=64) == [1]


# ---- schema validation -----------------------------------------------------------------------------

def test_a_valid_event_passes_its_schema():
    contracts.validate(settings())  # no exception


@pytest.mark.parametrize("change, field, says", [
    (lambda e: e["data"].update(age=7), "data.age", "must be at least 13"),
    (lambda e: e["data"].pop("age"), "data", "must contain 'age'"),
    (lambda e: e["data"].update(shoe_size=44), "data", "must not contain 'shoe_size'"),
    (lambda e: e["data"]["weight"].update(unit="stone"), "data.weight.unit", "must be one of"),
    (lambda e: e.update(user_id="not-a-uuid"), "user_id", "must match the pattern"),
    (lambda e: e["data"].update(age="28"), "data.age", "must be of type integer"),
])
def test_an_invalid_event_names_the_failing_field(change, field, says):
    bad = settings()
    change(bad)
    with pytest.raises(InvalidEvent) as refused:
        contracts.validate(bad)
    assert refused.value.field == field
    assert says in refused.value.detail


def test_the_refusal_never_quotes_the_offending_value():
    bad = settings()
    bad["data"]["goal"] = "my-secret-passcode-1234"
    with pytest.raises(InvalidEvent) as refused:
        contracts.validate(bad)
    assert refused.value.field == "data.goal"
    assert "my-secret-passcode-1234" not in refused.value.detail


def test_unknown_and_missing_event_types():
    with pytest.raises(UnknownEventType) as unknown:
        contracts.validate(settings(event_type="user.teleported"))
    assert (unknown.value.reason, unknown.value.field) == ("unknown_event_type", "event_type")
    with pytest.raises(InvalidEvent) as missing:
        contracts.validate({"data": {}})
    assert missing.value.field == "event_type"
    with pytest.raises(InvalidEvent):
        contracts.validate(["not", "an", "object"])


def test_outcome_events_are_not_client_events():
    assert "user.settings.submitted" in contracts.client_event_types()
    assert {"event.rejected", "comment.persisted"} <= contracts.data_schemas().keys()
    assert not {"event.rejected", "comment.persisted"} & contracts.client_event_types()


# ---- the envelope -----------------------------------------------------------------------------------

def test_parse_canonicalises_ids_and_keeps_the_data():
    sent = settings(client_generated_id="550E8400-E29B-41D4-A716-446655440000",
                    user_id=SEED_USER.upper())
    env = envelope.from_dict(sent, now=NOW)
    assert env.id == "550e8400-e29b-41d4-a716-446655440000"
    assert env.user_id == SEED_USER
    assert env.data == SEED_DATA
    assert env.timestamp == datetime(2026, 1, 2, 11, 59, tzinfo=timezone.utc)


def test_an_unknown_major_version_is_unsupported():
    with pytest.raises(UnsupportedVersion) as refused:
        envelope.from_dict(settings(schema_version="2.0.0"), now=NOW)
    assert (refused.value.reason, refused.value.field) == ("unsupported_version", "schema_version")


def test_a_timestamp_beyond_the_clock_skew_is_refused_and_one_within_it_accepted():
    within = rfc(NOW + timedelta(seconds=299))
    beyond = rfc(NOW + timedelta(seconds=301))
    assert envelope.from_dict(settings(timestamp=within), now=NOW)
    with pytest.raises(InvalidEvent) as refused:
        envelope.from_dict(settings(timestamp=beyond), now=NOW)
    assert refused.value.field == "timestamp" and "future" in refused.value.detail


def test_an_impossible_date_is_refused_as_the_timestamp():
    with pytest.raises(InvalidEvent) as refused:
        envelope.from_dict(settings(timestamp="2026-13-01T00:00:00Z"), now=NOW)
    assert refused.value.field == "timestamp"


def test_parse_from_bytes_round_trips_to_json():
    env = envelope.parse(orjson.dumps(settings()))
    again = envelope.parse(env.to_json())
    assert again == env


def rfc(ts: datetime) -> str:
    return envelope.rfc3339(ts)


# ---- newest wins, replays ---------------------------------------------------------------------------

def _at(ts: str, event_id: str) -> envelope.Envelope:
    return envelope.from_dict(settings(timestamp=ts, client_generated_id=event_id), now=NOW)


def test_version_keys_sort_by_time_then_id_whatever_the_zone():
    a, b = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    early = _at("2026-01-02T10:00:00Z", b)
    later_in_another_zone = _at("2026-01-02T11:00:00.5+01:00", a)  # 10:00:00.5 UTC
    tie_low, tie_high = _at("2026-01-02T11:00:00Z", a), _at("2026-01-02T11:00:00Z", b)
    assert early.version_key < later_in_another_zone.version_key < tie_low.version_key < tie_high.version_key
    assert early.version_key == f"2026-01-02T10:00:00.000000Z/{b}"


def test_a_duplicate_must_match_type_and_data_not_key_order():
    one = envelope.from_dict(settings(data={"age": 30, "training_days_per_week": 2,
                                            "weight": {"value": 80, "unit": "kg"}}), now=NOW)
    same = envelope.from_dict(settings(data={"weight": {"unit": "kg", "value": 80},
                                             "training_days_per_week": 2, "age": 30}), now=NOW)
    other = envelope.from_dict(settings(data={"age": 31, "training_days_per_week": 2,
                                              "weight": {"value": 80, "unit": "kg"}}), now=NOW)
    assert one.payload_hash == same.payload_hash != other.payload_hash


def test_outcome_ids_are_deterministic_per_cause_and_type():
    cause = uuid.uuid4()
    assert envelope.outcome_id(cause, "app.settings.updated") == envelope.outcome_id(str(cause), "app.settings.updated")
    assert envelope.outcome_id(cause, "app.settings.updated") != envelope.outcome_id(cause, "event.rejected")
    assert envelope.outcome_id(cause, "x") != envelope.outcome_id(uuid.uuid4(), "x")
