"""The event catalog: one JSON Schema per event type, compiled once, used by ingress and workers."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import jsonschema_rs

from shared.errors import InvalidEvent, UnknownEventType

SCHEMA_DIR = Path(__file__).parent / "schemas"
KNOWN_MAJORS = frozenset({1})


@lru_cache(maxsize=1)
def envelope_schema() -> dict:
    return json.loads((SCHEMA_DIR / "envelope.json").read_text())


@lru_cache(maxsize=1)
def data_schemas() -> dict[str, dict]:
    """event_type → the schema of its `data`, with `x-producer` / `x-consumer` metadata."""
    return {path.name[: -len(".json")]: json.loads(path.read_text())
            for path in sorted((SCHEMA_DIR / "events").glob("*.json"))}


@lru_cache(maxsize=1)
def query_schemas() -> dict[str, dict]:
    """query name → the schema of its whole body (`user_id` and `params`); see workers/runtime/queries.py."""
    return {path.name[: -len(".json")]: json.loads(path.read_text())
            for path in sorted((SCHEMA_DIR / "queries").glob("*.json"))}


def request_reply_event_types() -> frozenset[str]:
    """Client events that travel only on the query path (transient, never on disk): they carry
    a passcode, or the client needs the answer in its response."""
    return frozenset(t for t, s in data_schemas().items() if s.get("x-delivery") == "query")


def reply_event_types() -> frozenset[str]:
    """Client events queued like any other whose worker also answers the caller at once
    (`"x-delivery": "reply"`): the ingress waits a bounded time for the answer, else 202 pending."""
    return frozenset(t for t, s in data_schemas().items() if s.get("x-delivery") == "reply")


def client_event_types() -> frozenset[str]:
    """Event types a client may post; outcome events come only from workers."""
    return frozenset(t for t, s in data_schemas().items() if s.get("x-producer") == "frontend")


def consumers(schema: dict) -> tuple[str, ...]:
    """Who consumes an event (or a query): its schema's `x-consumer`, one name or a list of them."""
    named = schema.get("x-consumer")
    if named is None:
        return ()
    return (named,) if isinstance(named, str) else tuple(named)


def inbox_event_types() -> frozenset[str]:
    """Outcome events meant for the app (`x-consumer` names the frontend), which the notify worker
    keeps in the recipients' inboxes; `"x-inbox": false` marks one the app gets another way."""
    return frozenset(t for t, s in data_schemas().items()
                     if "frontend" in consumers(s) and s.get("x-producer") != "frontend" and s.get("x-inbox", True))


def event_schema(event_type: str) -> dict:
    """The whole event (envelope plus this type's data) as one JSON Schema, as served to clients."""
    try:
        data = data_schemas()[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}", field="event_type") from None
    schema = copy.deepcopy(envelope_schema())
    schema["$id"] = f"https://spotter.app/schemas/events/{event_type}.json"
    schema["title"] = event_type
    schema["description"] = data.get("description", "")
    schema["properties"]["event_type"] = {"const": event_type}
    schema["properties"]["data"] = {k: v for k, v in data.items() if k != "$schema"}
    return schema


@lru_cache(maxsize=None)
def _validator(event_type: str) -> jsonschema_rs.Validator:
    # `format` is documentation for clients; the patterns enforce it
    return jsonschema_rs.validator_for(event_schema(event_type), validate_formats=False)


# Queries every worker answers, each as `<worker>.<kind>` (app.queries routes by name, so the name
# must be per worker), all checked against one schema: queries/<kind>.json.
SHARED_QUERY_KINDS = frozenset({"receipts"})


def query_schema_name(name: str) -> str | None:
    """The schema a query's body is checked against: its own, or the shared one of its kind."""
    if name in query_schemas():
        return name
    worker, _, kind = name.rpartition(".")
    return kind if worker and kind in SHARED_QUERY_KINDS and kind in query_schemas() else None


@lru_cache(maxsize=None)
def _query_validator(schema_name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(query_schemas()[schema_name], validate_formats=False)


# What each rule asks, said without the offending value: the library's own messages quote it,
# and a refused passcode must not reach a log line or a dead-letter header.
_RULES = {
    "type": "must be of type {}", "required": "must contain {!r}", "additionalProperties": "must not contain {}",
    "enum": "must be one of {}", "const": "must be {!r}", "minimum": "must be at least {}",
    "maximum": "must be at most {}", "exclusiveMinimum": "must be greater than {}",
    "exclusiveMaximum": "must be less than {}", "minLength": "must be at least {} characters long",
    "maxLength": "must be at most {} characters long", "pattern": "must match the pattern {}",
    "minItems": "must have at least {} items", "maxItems": "must have at most {} items",
    "minProperties": "must have at least {} properties", "maxProperties": "must have at most {} properties",
    "uniqueItems": "must not repeat an item", "not": "is not allowed in this combination",
    "oneOf": "must match exactly one of its allowed forms", "anyOf": "must match one of its allowed forms",
}


def _invalid(exc: jsonschema_rs.ValidationError) -> InvalidEvent:
    field = ".".join(str(p) for p in exc.instance_path) or "event"
    kind = exc.kind
    value = kind.value
    if kind.name in ("type", "additionalProperties") and isinstance(value, list):
        value = " or ".join(map(str, value)) if kind.name == "type" else ", ".join(map(repr, value))
    rule = _RULES.get(kind.name)
    return InvalidEvent(f"{field} {rule.format(value)}" if rule else f"{field} does not satisfy {kind.name!r}",
                        field=field)


def _check(validator: jsonschema_rs.Validator, instance) -> None:
    try:
        validator.validate(instance)
    except jsonschema_rs.ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError:  # text the library cannot take as UTF-8 (a lone surrogate): no event of ours
        raise InvalidEvent("the event holds text that is not valid Unicode", field="event") from None


def validate_query(name: str, body) -> None:
    """Raise InvalidEvent naming the failing field, or UnknownEventType for an unknown query."""
    schema_name = query_schema_name(name)
    if schema_name is None:
        raise UnknownEventType(f"unknown query {name[:64]!r}", field="query")
    _check(_query_validator(schema_name), body)


def validate(event: dict) -> None:
    """Raise InvalidEvent naming the failing field, or UnknownEventType."""
    if not isinstance(event, dict):
        raise InvalidEvent("an event must be a JSON object", field="event")
    event_type = event.get("event_type")
    if not isinstance(event_type, str):
        raise InvalidEvent("event_type is required and must be a string", field="event_type")
    if event_type not in data_schemas():
        raise UnknownEventType(f"unknown event type {event_type[:64]!r}", field="event_type")
    _check(_validator(event_type), event)
