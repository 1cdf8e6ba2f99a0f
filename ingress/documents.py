"""What the ingress serves so frontend developers need nothing else: schemas, OpenAPI, AsyncAPI."""
from __future__ import annotations

from ingress import reads
from shared import contracts
from shared.topology import QUERY_EXCHANGE

PREFIX = "/api/v1"
EVENTS_PATH = f"{PREFIX}/notify/events"
VERSION = "1.0.0"

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
    "503": "broker_unavailable or no_worker",
    "504": "timeout: the worker did not answer in time",
}


def _read(route: reads.Route) -> dict:
    params = []
    if route.id_param:
        params.append({"name": route.id_param, "in": "path", "required": True,
                       "schema": {"type": "string", **({"format": "uuid"} if route.uuid_id else {})}})
    if route.paged:
        params += [{"name": "limit", "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": reads.MAX_LIMIT,
                               "default": reads.DEFAULT_LIMIT}},
                   {"name": "cursor", "in": "query", "schema": {"type": "string"},
                    "description": "next_cursor of the previous page"}]
    if route.feed:
        params.append({"name": "X-Feed-Access-Token", "in": "header", "schema": {"type": "string"},
                       "description": "the access_token a granted feed.access.attempt answered (passcode feeds)"})
    responses = {"200": _json_response("OK", {"type": "object"}),
                 **{code: _json_response(text, {"$ref": "#/components/schemas/Error"})
                    for code, text in _READ_ERRORS.items()}}
    return {"get": {"summary": route.summary.split(":")[0].split(".")[0], "description": route.summary,
                    "security": [{"bearer": []}], "parameters": params, "responses": responses}}


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
                "consumer": data.get("x-consumer"), "href": f"{PREFIX}/schemas/{t}"}
    return {"event_types": [entry(t) for t in _event_types(client=True)],
            "outcome_event_types": [entry(t) for t in _event_types(client=False)],
            "openapi": f"{PREFIX}/openapi.json", "asyncapi": f"{PREFIX}/asyncapi.json"}


def _json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, schema: dict, extra: dict | None = None) -> dict:
    return {"get": {"summary": summary, "responses": {"200": _json_response("OK", schema), **(extra or {})}}}


def openapi(max_events: int) -> dict:
    client = _event_types(client=True)
    error = {"$ref": "#/components/schemas/Error"}
    one_event = {"oneOf": [{"$ref": f"#/components/schemas/{t}"} for t in client],
                 "discriminator": {"propertyName": "event_type"}}
    responses = {code: _json_response(text, error) for code, text in _ERRORS.items()}
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    post = {
        "summary": "Submit one event or a batch (all-or-nothing)",
        "description": "Answered 202 only once RabbitMQ has confirmed every event and routed it to a "
                       "queue. Re-sending an event with the same client_generated_id is safe.",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
            one_event, {"type": "array", "minItems": 1, "maxItems": max_events, "items": one_event}]}}}},
        "responses": {"200": _json_response(
            "the worker's answer, for events answered at once (media.upload_requested, "
            "feed.visibility.updated, feed.access.attempt)", {
                "type": "object", "required": ["accepted", "result"],
                "properties": {"accepted": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                               "result": {"type": "object"}}}),
            "202": _json_response("every event confirmed by the broker", {
            "type": "object", "required": ["accepted"],
            "properties": {"accepted": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}),
            **responses},
    }
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    doc = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Spotter ingress", "version": VERSION,
                 "description": "Events in; see asyncapi.json for where they go."},
        "paths": {
            EVENTS_PATH: {"post": post},
            "/healthz": _get("Liveness: the process answers", status),
            "/readyz": _get("Readiness: connected to the broker and not blocked", status,
                            {"503": _json_response("not ready", status)}),
            f"{PREFIX}/schemas": _get("Index of event types with links to their schemas", doc),
            f"{PREFIX}/schemas/{{event_type}}": {"get": {
                "summary": "The JSON Schema of one event type (envelope and data)",
                "parameters": [{"name": "event_type", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json_response("OK", doc), "404": _json_response("unknown", error)}}},
            **{route.route: _read(route) for route in reads.ROUTES},
            f"{PREFIX}/openapi.json": _get("This document", doc),
            f"{PREFIX}/asyncapi.json": _get("The events on the broker (AsyncAPI 2.6)", doc),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": _ERROR, **{t: _component(t) for t in client}},
        },
    }


def asyncapi(exchange: str) -> dict:
    types = sorted(contracts.data_schemas())
    channels, messages = {}, {}
    for t in types:
        data = contracts.data_schemas()[t]
        producer, consumer = data.get("x-producer", "?"), data.get("x-consumer")
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
