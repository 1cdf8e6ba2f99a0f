"""What the ingress serves so frontend developers need nothing else: schemas, OpenAPI, AsyncAPI.

ROUTES is every (method, route template) the ingress serves: openapi() documents exactly these
(it refuses to build otherwise), the CORS preflight lists each route's methods and request headers
from it (ingress/cors.py), and tests/ingress/test_openapi.py checks that the app routes exactly
these. A new route is added here first.
"""
from __future__ import annotations

from dataclasses import dataclass

from ingress import reads
from shared import contracts
from shared.topology import QUERY_EXCHANGE

PREFIX = "/api/v1"
EVENTS_PATH = f"{PREFIX}/notify/events"
VIDEO_COMPLETE_PATH = f"{PREFIX}/videos/{{video_id}}/complete"
RECEIPTS_PATH = f"{PREFIX}/receipts"
EVENT_RECEIPT_PATH = f"{PREFIX}/events/{{client_generated_id}}"
INBOX_PATH = f"{PREFIX}/inbox"
SCHEMAS_PATH = f"{PREFIX}/schemas"
SCHEMA_PATH = f"{PREFIX}/schemas/{{event_type}}"
OPENAPI_PATH = f"{PREFIX}/openapi.json"
ASYNCAPI_PATH = f"{PREFIX}/asyncapi.json"
CLIENT_PATH = f"{PREFIX}/client/spotter.js"
VERSION = "1.0.0"
INBOX_DEFAULT_LIMIT, INBOX_MAX_LIMIT, INBOX_MAX_WAIT_S = 50, 100, 25

# Request headers a browser page may send beyond the CORS-safelisted ones (Access-Control-Allow-Headers).
# traceparent everywhere: browser tracing adds it to every fetch, and a preflight without it would fail.
_TRACE = ("traceparent",)
_AUTH_GET = ("Authorization", *_TRACE)
_AUTH_POST = ("Authorization", "Content-Type", *_TRACE)


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str                  # as routed, logged and documented; {name} marks a path parameter
    auth: bool = True              # bearer token and the per-user budget: 401 and 429 apply
    headers: tuple[str, ...] = _TRACE  # request headers the route takes (CORS preflight)


ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", EVENTS_PATH, headers=_AUTH_POST),
    Endpoint("POST", VIDEO_COMPLETE_PATH, headers=_AUTH_GET),  # no body
    Endpoint("POST", RECEIPTS_PATH, headers=_AUTH_POST),
    Endpoint("GET", EVENT_RECEIPT_PATH, headers=_AUTH_GET),
    Endpoint("GET", INBOX_PATH, headers=_AUTH_GET),
    *(Endpoint("GET", r.route, headers=(*_AUTH_GET, "X-Feed-Access-Token") if r.feed else _AUTH_GET)
      for r in reads.ROUTES),
    Endpoint("GET", "/healthz", auth=False),
    Endpoint("GET", "/readyz", auth=False),
    Endpoint("GET", "/metrics", auth=False),
    Endpoint("GET", SCHEMAS_PATH, auth=False),
    Endpoint("GET", SCHEMA_PATH, auth=False),
    Endpoint("GET", OPENAPI_PATH, auth=False),
    Endpoint("GET", ASYNCAPI_PATH, auth=False),
    Endpoint("GET", CLIENT_PATH, auth=False, headers=(*_TRACE, "If-None-Match")),
)


def methods(template: str) -> tuple[str, ...]:
    """The methods a route template takes, as ROUTES lists them."""
    return tuple(r.method for r in ROUTES if r.template == template)


def request_headers(template: str) -> tuple[str, ...]:
    """The request headers a route template takes, for its CORS preflight's Access-Control-Allow-Headers."""
    return _REQUEST_HEADERS.get(template, _TRACE)


_REQUEST_HEADERS = {t: tuple(dict.fromkeys(h for r in ROUTES if r.template == t for h in r.headers))
                    for t in dict.fromkeys(r.template for r in ROUTES)}

_ERROR = {
    "type": "object", "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. schema_violation"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the offending field, e.g. data.age"},
        "errors": {"type": "array", "description": "per event of a batch", "items": {
            "type": "object", "required": ["index", "error", "detail"],
            "properties": {"index": {"type": "integer"}, "error": {"type": "string"},
                           "detail": {"type": "string"}, "field": {"type": ["string", "null"]}}}},
    },
}
_UUID = {"type": "string", "format": "uuid"}
_ACCEPTED = {"type": "object", "required": ["accepted"],
             "properties": {"accepted": {"type": "array", "items": _UUID}}}
_RECEIPT = {
    "type": "object", "required": ["client_generated_id", "event_type", "status"],
    "properties": {
        "client_generated_id": _UUID,
        "event_type": {"type": "string"},
        "status": {"type": "string", "enum": ["applied", "rejected", "pending"],
                   "description": "applied: its worker committed it (a skipped duplicate too); rejected: "
                                  "dead-lettered for good (reason, field, detail say why); pending: neither yet "
                                  "(queued or retrying; an id this user never sent reads pending too)"},
        "at": {"type": "string", "format": "date-time", "description": "when it was applied or rejected"},
        "reason": {"type": "string", "description": "machine-readable code of a rejection"},
        "field": {"type": ["string", "null"], "description": "the offending field of a rejection"},
        "detail": {"type": "string"},
    },
}
_INBOX_ITEM = {
    "type": "object", "required": ["id", "event_type", "data", "at"],
    "properties": {"id": _UUID, "event_type": {"type": "string", "description": "an outcome event type"},
                   "data": {"type": "object"}, "at": {"type": "string", "format": "date-time"}},
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_RETRIED = ("429", "503")  # the statuses that carry Retry-After
_TRACEPARENT = {"$ref": "#/components/parameters/traceparent"}
_BEARER = [{"bearerAuth": []}]

_ERRORS = {
    "400": "bad_json: not strict JSON (NaN, duplicate keys, bad UTF-8, too deep)",
    "401": "missing, expired or invalid bearer token",
    "403": "forbidden: an event's user_id is not the token's subject",
    "413": "body_too_large, or too_many_events in one request",
    "415": "unsupported_media_type: Content-Type must be application/json",
    "422": "schema_violation (with field), unknown_event_type, unsupported_version, "
           "event_type_not_allowed, duplicate_id, or no_consumer (no queue takes the event type)",
    "429": "rate_limited: too many events from this user (RATE_LIMIT_BURST, then RATE_LIMIT_EVENTS_PER_S), too many "
           "passcode attempts, or too many visibility changes; keep the events and retry after Retry-After seconds",
    "503": "broker_unavailable: keep the events and retry after Retry-After seconds",
    "504": "timeout: a query event (feed.visibility.updated, feed.access.attempt) got no answer in time; "
           "re-send it",
}
_READ_ERRORS = {
    "400": "bad_request (limit, cursor) or invalid",
    "401": "unauthorized: missing or invalid bearer token, or an X-Feed-Access-Token that does not verify "
           "(expired, forged, or issued before the passcode changed)",
    "403": "forbidden: the feed has a passcode and no access token for it was sent",
    "404": "not_found",
    "429": "rate_limited: too many requests from this user; retry after Retry-After seconds",
    "503": "broker_unavailable or no_worker: retry after Retry-After seconds",
    "504": "timeout: the worker did not answer in time",
}
_COMPLETE_ERRORS = {
    "400": "invalid: the video id is not one",
    "401": _ERRORS["401"],
    "404": "not_found: the caller has no such video",
    "422": "no_consumer: no queue takes media.uploaded",
    "429": "rate_limited: too many requests from this user; retry after Retry-After seconds",
    "503": "broker_unavailable or no_worker: retry after Retry-After seconds",
    "504": "timeout: the video worker did not answer in time; retry",
}
_RECEIPTS_ERRORS = {
    "400": "bad_json, or bad_request",
    "401": _ERRORS["401"],
    "413": "body_too_large, or too_many_events in one request",
    "415": _ERRORS["415"],
    "422": "schema_violation or unknown_event_type (with field)",
    "429": _READ_ERRORS["429"],
    "503": _READ_ERRORS["503"],
    "504": _READ_ERRORS["504"],
}
_EVENT_RECEIPT_ERRORS = {
    "400": "bad_request: event_type missing or unknown, or the id is not a UUID",
    "401": _ERRORS["401"],
    "429": _READ_ERRORS["429"],
    "503": _READ_ERRORS["503"],
    "504": _READ_ERRORS["504"],
}
_INBOX_ERRORS = {
    "400": f"bad_request: after is not a cursor this API gave out, limit not 1 to {INBOX_MAX_LIMIT}, "
           f"or wait not 0 to {INBOX_MAX_WAIT_S}",
    "401": _ERRORS["401"],
    "429": _READ_ERRORS["429"],
    "503": _READ_ERRORS["503"],
    "504": _READ_ERRORS["504"],
}


def _error_responses(errors: dict[str, str]) -> dict:
    out = {}
    for code, text in errors.items():
        out[code] = _json_response(text, {"$ref": "#/components/schemas/Error"})
        if code in _RETRIED:
            out[code]["headers"] = _RETRY_AFTER
    return out


def _path_param(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            **({"description": description} if description else {})}


def _read(route: reads.Route) -> dict:
    params = []
    if route.id_param:
        params.append(_path_param(route.id_param, {"type": "string", **({"format": "uuid"} if route.uuid_id else {})}))
    if route.paged:
        params += [{"name": "limit", "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": reads.MAX_LIMIT,
                               "default": reads.DEFAULT_LIMIT}},
                   {"name": "cursor", "in": "query", "schema": {"type": "string"},
                    "description": "next_cursor of the previous page"}]
    if route.feed:
        params.append({"name": "X-Feed-Access-Token", "in": "header", "schema": {"type": "string"},
                       "description": "the access_token a granted feed.access.attempt answered (passcode feeds)"})
    page = ({"type": "object", "required": ["next_cursor"], "properties": {"next_cursor": {
        "type": ["string", "null"], "description": "cursor of the next page; null on the last"}}}
        if route.paged else {"type": "object"})
    return {"summary": route.summary.split(":")[0].split(".")[0], "description": route.summary,
            "parameters": [*params, _TRACEPARENT],
            "responses": {"200": _json_response("OK", page), **_error_responses(_READ_ERRORS)}}


def _event_types(client: bool) -> list[str]:
    allowed = contracts.client_event_types()
    return sorted(t for t in contracts.data_schemas() if (t in allowed) == client)


def _component(event_type: str) -> dict:
    """The event's schema, embeddable: its draft-07 `$schema` and `$id` would rebase references."""
    return {k: v for k, v in contracts.event_schema(event_type).items() if k not in ("$schema", "$id")}


def schema_index() -> dict:
    def entry(t):
        data = contracts.data_schemas()[t]
        return {"event_type": t, "description": data.get("description", ""),
                "consumer": ", ".join(contracts.consumers(data)) or None, "href": f"{PREFIX}/schemas/{t}"}
    return {"event_types": [entry(t) for t in _event_types(client=True)],
            "outcome_event_types": [entry(t) for t in _event_types(client=False)],
            "openapi": f"{PREFIX}/openapi.json", "asyncapi": f"{PREFIX}/asyncapi.json"}


def _json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict, description: str = "", **extra) -> dict:
    return {"summary": summary, **({"description": description} if description else {}), **extra,
            "responses": responses}


def _operations(max_events: int) -> dict[tuple[str, str], dict]:
    """(method, template) → its OpenAPI operation, without `security` (openapi() adds it from ROUTES)."""
    client = _event_types(client=True)
    one_event = {"oneOf": [{"$ref": f"#/components/schemas/{t}"} for t in client],
                 "discriminator": {"propertyName": "event_type"}}
    receipt = {"$ref": "#/components/schemas/Receipt"}
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    entry = {"type": "object", "required": ["event_type", "description", "consumer", "href"],
             "properties": {"event_type": {"type": "string"}, "description": {"type": "string"},
                            "consumer": {"type": ["string", "null"]}, "href": {"type": "string"}}}
    index = {"type": "object", "required": ["event_types", "outcome_event_types", "openapi", "asyncapi"],
             "properties": {"event_types": {"type": "array", "items": entry},
                            "outcome_event_types": {"type": "array", "items": entry},
                            "openapi": {"type": "string"}, "asyncapi": {"type": "string"}}}
    json_schema = {"type": "object", "description": "a JSON Schema (draft-07)"}
    ops = {
        ("POST", EVENTS_PATH): _op(
            "Submit one event or a batch (all-or-nothing)",
            {"200": _json_response(
                "the worker's answer, for events answered at once (media.upload_requested, "
                "feed.visibility.updated, feed.access.attempt)", {
                    "type": "object", "required": ["accepted", "result"],
                    "properties": {"accepted": {"type": "array", "items": _UUID}, "result": {"type": "object"}}}),
             "202": _json_response("every event confirmed by the broker", _ACCEPTED),
             **_error_responses(_ERRORS)},
            "Answered 202 only once RabbitMQ has confirmed every event and routed it to a "
            "queue. Re-sending an event with the same client_generated_id is safe.",
            parameters=[_TRACEPARENT],
            requestBody={"required": True, "content": {"application/json": {"schema": {"oneOf": [
                one_event, {"type": "array", "minItems": 1, "maxItems": max_events, "items": one_event}]}}}}),
        ("POST", VIDEO_COMPLETE_PATH): _op(
            "The upload of a video finished: queue media.uploaded for the video worker to verify",
            {"202": _json_response("media.uploaded confirmed by the broker (one id per video and caller: "
                                   "a repeated completion is deduplicated)", _ACCEPTED),
             **_error_responses(_COMPLETE_ERRORS)},
            parameters=[_path_param("video_id", _UUID, "the video_id media.upload_requested answered"),
                        _TRACEPARENT]),
        ("POST", RECEIPTS_PATH): _op(
            "What became of events this user posted: applied, rejected (and why) or pending",
            {"200": _json_response("one receipt per asked event, in the order asked", {
                "type": "object", "required": ["receipts"],
                "properties": {"receipts": {"type": "array", "items": receipt}}}),
             **_error_responses(_RECEIPTS_ERRORS)},
            parameters=[_TRACEPARENT],
            requestBody={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["events"], "properties": {"events": {
                    "type": "array", "minItems": 1, "maxItems": max_events, "items": {
                        "type": "object", "required": ["client_generated_id", "event_type"],
                        "properties": {"client_generated_id": _UUID, "event_type": {"type": "string"}}}}}}}}}),
        ("GET", EVENT_RECEIPT_PATH): _op(
            "What became of one event this user posted",
            {"200": _json_response("its receipt", receipt), **_error_responses(_EVENT_RECEIPT_ERRORS)},
            parameters=[_path_param("client_generated_id", _UUID),
                        {"name": "event_type", "in": "query", "required": True, "schema": {"type": "string"},
                         "description": "the event's event_type"},
                        _TRACEPARENT]),
        ("GET", INBOX_PATH): _op(
            "Outcome events for this user, oldest first, after a cursor (long poll with wait)",
            {"200": _json_response("the next items; none when nothing came within wait", {
                "type": "object", "required": ["items", "next_cursor"],
                "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/InboxItem"}},
                               "next_cursor": {"type": "string",
                                               "description": "pass it as after in the next request"}}}),
             **_error_responses(_INBOX_ERRORS)},
            parameters=[{"name": "after", "in": "query", "schema": {"type": "string"},
                         "description": "next_cursor of the previous answer; omitted: from the oldest kept"},
                        {"name": "limit", "in": "query", "schema": {
                            "type": "integer", "minimum": 1, "maximum": INBOX_MAX_LIMIT,
                            "default": INBOX_DEFAULT_LIMIT}},
                        {"name": "wait", "in": "query", "description": "seconds to wait for an item when none is there",
                         "schema": {"type": "integer", "minimum": 0, "maximum": INBOX_MAX_WAIT_S, "default": 0}},
                        _TRACEPARENT]),
        **{("GET", r.route): _read(r) for r in reads.ROUTES},
        ("GET", "/healthz"): _op("Liveness: the process answers", {"200": _json_response("OK", status)}),
        ("GET", "/readyz"): _op("Readiness: connected to the broker and not blocked",
                                {"200": _json_response("ready", status), "503": _json_response("not ready", status)}),
        ("GET", "/metrics"): _op(
            "Prometheus metrics of every worker process (keep it inside the cluster)",
            {"200": {"description": "the Prometheus text format, or OpenMetrics when Accept asks for it",
                     "content": {"text/plain": {"schema": {"type": "string"}},
                                 "application/openmetrics-text": {"schema": {"type": "string"}}}}}),
        ("GET", SCHEMAS_PATH): _op("Index of event types with links to their schemas",
                                   {"200": _json_response("OK", index)}),
        ("GET", SCHEMA_PATH): _op(
            "The JSON Schema of one event type (envelope and data)",
            {"200": _json_response("OK", json_schema),
             "404": _json_response("not_found: unknown event type", {"$ref": "#/components/schemas/Error"})},
            parameters=[_path_param("event_type", {"type": "string"})]),
        ("GET", OPENAPI_PATH): _op("This document", {"200": _json_response("OpenAPI 3.1", {
            "type": "object", "required": ["openapi", "info", "paths"]})}),
        ("GET", ASYNCAPI_PATH): _op("The events on the broker (AsyncAPI 2.6)", {"200": _json_response(
            "AsyncAPI 2.6", {"type": "object", "required": ["asyncapi", "info", "channels"]})}),
        ("GET", CLIENT_PATH): _op(
            "The offline-first JavaScript client (an ES module: import { SpotterClient } from it)",
            {"200": {"description": "the module; cacheable, revalidated by its ETag",
                     "content": {"text/javascript": {"schema": {"type": "string"}}}},
             "304": {"description": "If-None-Match matched: the cached copy is current"}},
            "Versioned with the API: every /api/v1 ingress serves a client that speaks /api/v1. "
            "See docs/client.md.",
            parameters=[{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}]),
    }
    return ops


def openapi(max_events: int) -> dict:
    """The OpenAPI 3.1 document of exactly ROUTES (ValueError when an operation is missing or extra)."""
    ops = _operations(max_events)
    served = {(r.method, r.template) for r in ROUTES}
    if set(ops) != served:
        raise ValueError(f"documents.ROUTES and the OpenAPI operations differ: undocumented "
                         f"{sorted(served - set(ops))}, not served {sorted(set(ops) - served)}")
    paths: dict[str, dict] = {}
    for r in ROUTES:
        paths.setdefault(r.template, {})[r.method.lower()] = {**ops[(r.method, r.template)],
                                                              "security": _BEARER if r.auth else []}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Spotter ingress", "version": VERSION,
                 "description": "Events in; see asyncapi.json for where they go. Browsers may call it from "
                                "the origins in CORS_ALLOWED_ORIGINS (every route answers its OPTIONS preflight)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "parameters": {"traceparent": {
                "name": "traceparent", "in": "header", "required": False,
                "description": "W3C trace context, passed on to the workers",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"}}},
            "schemas": {"Error": _ERROR, "Receipt": _RECEIPT, "InboxItem": _INBOX_ITEM,
                        **{t: _component(t) for t in _event_types(client=True)}},
        },
    }


def asyncapi(exchange: str) -> dict:
    types = sorted(contracts.data_schemas())
    channels, messages = {}, {}
    for t in types:
        data = contracts.data_schemas()[t]
        producer, consumer = data.get("x-producer", "?"), ", ".join(contracts.consumers(data))
        queried = data.get("x-delivery") == "query"  # transient, on the query exchange
        on = {"name": QUERY_EXCHANGE, "type": "direct"} if queried else {"name": exchange, "type": "topic"}
        channels[t] = {
            "description": f"Routing key {t} on exchange {on['name']}"
                           + (" (transient request–reply: never on disk)" if queried else ""),
            "bindings": {"amqp": {"is": "routingKey", "bindingVersion": "0.2.0",
                                  "exchange": {**on, "durable": True, "autoDelete": False}}},
            # AsyncAPI 2.x: `subscribe` = what a reader of this document can receive
            "subscribe": {"operationId": "receive_" + t.replace(".", "_"),
                          "summary": f"from {producer}" + (f", consumed by {consumer}" if consumer else ""),
                          "message": {"$ref": f"#/components/messages/{t}"}},
        }
        messages[t] = {"name": t, "title": t, "summary": data.get("description", ""),
                       "contentType": "application/json", "payload": _component(t),
                       "bindings": {"amqp": {"messageType": t, "deliveryMode": 1 if queried else 2,
                                             "bindingVersion": "0.2.0"}}}
    return {"asyncapi": "2.6.0",
            "info": {"title": "Spotter events", "version": VERSION,
                     "description": "Every event is an envelope (message_id = client_generated_id, "
                                    "type = event_type, persistent) published to one topic exchange."},
            "defaultContentType": "application/json",
            "channels": channels, "components": {"messages": messages}}
