"""The event catalog: one JSON Schema per event type, compiled once, used by ingress and workers."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import fastjsonschema

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
    """query name → the schema of its whole body (`user_id` and `params`); see shared/queries.py."""
    return {path.name[: -len(".json")]: json.loads(path.read_text())
            for path in sorted((SCHEMA_DIR / "queries").glob("*.json"))}


def request_reply_event_types() -> frozenset[str]:
    """Client events that travel only on the query path (transient, never on disk): they carry
    a passcode, or the client needs the answer in its response."""
    return frozenset(t for t, s in data_schemas().items() if s.get("x-delivery") == "query")


def client_event_types() -> frozenset[str]:
    """Event types a client may post; outcome events come only from workers."""
    return frozenset(t for t, s in data_schemas().items() if s.get("x-producer") == "frontend")


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
def _validator(event_type: str):
    # `format` is documentation for clients; the patterns enforce it (and cost half as much)
    return fastjsonschema.compile(event_schema(event_type), use_formats=False)


def _field_name(exc: fastjsonschema.JsonSchemaValueException) -> str:
    # fastjsonschema calls the root "data"; our envelope also has a "data" field.
    path = [str(p) for p in (exc.path or ["data"])[1:]]
    return ".".join(path) or "event"


@lru_cache(maxsize=None)
def _query_validator(name: str):
    return fastjsonschema.compile(query_schemas()[name], use_formats=False)


def _invalid(exc: fastjsonschema.JsonSchemaValueException) -> InvalidEvent:
    name = _field_name(exc)
    message = exc.message.replace(exc.name, name, 1) if exc.name else exc.message
    return InvalidEvent(message, field=name)


def validate_query(name: str, body) -> None:
    """Raise InvalidEvent naming the failing field, or UnknownEventType for an unknown query."""
    if name not in query_schemas():
        raise UnknownEventType(f"unknown query {name[:64]!r}", field="query")
    try:
        _query_validator(name)(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _invalid(exc) from None


def validate(event: dict) -> None:
    """Raise InvalidEvent naming the failing field, or UnknownEventType."""
    if not isinstance(event, dict):
        raise InvalidEvent("an event must be a JSON object", field="event")
    event_type = event.get("event_type")
    if not isinstance(event_type, str):
        raise InvalidEvent("event_type is required and must be a string", field="event_type")
    if event_type not in data_schemas():
        raise UnknownEventType(f"unknown event type {event_type[:64]!r}", field="event_type")
    try:
        _validator(event_type)(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _invalid(exc) from None
