"""/api/v1/openapi.json is a valid OpenAPI 3.1 document of exactly the routes the ingress serves.

No broker: the App is built in this process and asked how it routes (`_routes`, `_match`), and
answers only what needs no publisher (405, 404, the documents themselves).
"""
from __future__ import annotations

import re
import secrets

import orjson
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from ingress import documents
from ingress.app import App
from ingress.cors import Cors
from shared.config import Config
from tests.support import auth
from tests.support.wsgi import call_app

_PARAM = re.compile(r"\{(\w+)\}")
_SAMPLE_ID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"  # fits every path parameter (UUID, machine code, event type)
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@pytest.fixture(scope="module")
def app() -> App:
    return App(Config(jwt=auth.jwt_config(secrets.token_urlsafe(32)), event_id_key=auth.EVENT_ID_KEY.encode()))


@pytest.fixture(scope="module")
def doc(app) -> dict:
    status, _, body = call_app(app, "GET", documents.OPENAPI_PATH)
    assert status == 200
    return orjson.loads(body)


def _sample(template: str) -> str:
    return _PARAM.sub(_SAMPLE_ID, template)


def _served(app: App) -> set[tuple[str, str]]:
    """(method, template) the app routes: its fixed paths, and what it matches for each documented template."""
    served = {(method, path) for path, methods in app._routes.items() for method in methods}
    for template in {r.template for r in documents.ROUTES}:
        matched, methods = app._match(_sample(template))
        served |= {(method, matched) for method in methods or ()}
    return served


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method.upper() in (*_HTTP_METHODS, "OPTIONS", "TRACE")}


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_the_document_is_valid_openapi_3_1(doc):
    errors = [f"{'/'.join(map(str, e.path))}: {e.message[:300]}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert not errors, "\n".join(errors)


def test_the_served_document_is_the_one_documents_builds(app, doc):
    assert doc == orjson.loads(orjson.dumps(documents.openapi(app.config.max_batch_events)))


def test_the_document_lists_exactly_the_route_table(doc):
    assert _documented(doc) == {(r.method, r.template) for r in documents.ROUTES}


def test_the_document_lists_exactly_the_routes_the_app_serves(app, doc):
    documented, served = _documented(doc), _served(app)
    assert served - documented == set(), "served but not in documents.ROUTES / openapi.json"
    assert documented - served == set(), "documented but not served"


@pytest.mark.parametrize("template", sorted({r.template for r in documents.ROUTES}))
def test_each_route_answers_405_with_its_documented_methods_to_any_other(app, doc, template):
    documented = {m for m, p in _documented(doc) if p == template}
    for method in _HTTP_METHODS:
        if method in documented:
            continue
        status, headers, body = call_app(app, method, _sample(template))
        assert status == 405, (method, template, body)
        assert set(headers["Allow"].split(", ")) == documented
        assert orjson.loads(body)["error"] == "method_not_allowed"


def test_an_undocumented_path_is_404(app):
    for path in ("/api/v1/nope", "/api/v1", "/", f"/api/v1/videos/{_SAMPLE_ID}/complete/x", "/healthz/x"):
        status, _, body = call_app(app, "GET", path)
        assert status == 404, (path, body)


def test_authenticated_routes_need_a_bearer_token_and_list_401_and_429_with_retry_after(doc):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    auth_routes = {(r.method, r.template) for r in documents.ROUTES if r.auth}
    public = {("GET", p) for p in ("/healthz", "/readyz", "/metrics", documents.SCHEMAS_PATH,
                                   documents.SCHEMA_PATH, documents.OPENAPI_PATH, documents.ASYNCAPI_PATH,
                                   documents.CLIENT_PATH)}
    assert {(r.method, r.template) for r in documents.ROUTES} - auth_routes == public
    for method, path, op in _operations(doc):
        if (method, path) in public:
            assert op["security"] == [], path
            continue
        assert op["security"] == [{"bearerAuth": []}], path
        assert {"401", "429"} <= set(op["responses"]), path
        assert "Retry-After" in op["responses"]["429"]["headers"], path
        if "503" in op["responses"]:
            assert "Retry-After" in op["responses"]["503"]["headers"], path


def test_every_operation_has_typed_bodies_and_errors_are_the_error_schema(doc):
    error = {"$ref": "#/components/schemas/Error"}
    for method, path, op in _operations(doc):
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, (method, path)
        for code, response in op["responses"].items():
            if code == "304":  # Not Modified has no body
                continue
            content = response.get("content")
            assert content, (method, path, code)
            for media in content.values():
                schema = media["schema"]
                assert "type" in schema or "$ref" in schema or "oneOf" in schema, (method, path, code)
            if code >= "400" and path != "/readyz":
                assert content == {"application/json": {"schema": error}}, (method, path, code)
    for path in (documents.EVENTS_PATH, documents.RECEIPTS_PATH):
        assert doc["paths"][path]["post"]["requestBody"]["required"] is True


def test_the_new_routes_shapes(doc, app):
    schemas = doc["components"]["schemas"]
    receipt = schemas["Receipt"]
    assert set(receipt["required"]) == {"client_generated_id", "event_type", "status"}
    assert receipt["properties"]["status"]["enum"] == ["applied", "rejected", "pending"]
    assert receipt["properties"]["at"]["format"] == "date-time"
    body = doc["paths"][documents.RECEIPTS_PATH]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["events"]["maxItems"] == app.config.max_batch_events
    one = doc["paths"][documents.EVENT_RECEIPT_PATH]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Receipt"}
    assert {p["name"]: p.get("required", False) for p in one["parameters"] if "name" in p} == {
        "client_generated_id": True, "event_type": True}
    inbox = doc["paths"][documents.INBOX_PATH]["get"]
    params = {p["name"]: p["schema"] for p in inbox["parameters"] if "name" in p}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
    assert params["wait"] == {"type": "integer", "minimum": 0, "maximum": 25, "default": 0}
    assert set(params) == {"after", "limit", "wait"}
    assert set(schemas["InboxItem"]["required"]) == {"id", "event_type", "data", "at"}
    client = doc["paths"][documents.CLIENT_PATH]["get"]
    assert set(client["responses"]["200"]["content"]) == {"text/javascript"} and client["security"] == []


def _cors_wired(app: App, origin: str) -> App:
    app.cors = Cors([origin])
    return app


@pytest.mark.parametrize("template", sorted({r.template for r in documents.ROUTES}))
def test_every_route_answers_a_browsers_preflight(app, doc, template):
    """OPTIONS is implicit (not in the document): each route answers it from documents.ROUTES."""
    origin = "https://app.example.com"
    app = _cors_wired(app, origin)
    documented = {m for m, p in _documented(doc) if p == template}
    status, headers, body = call_app(app, "OPTIONS", _sample(template), HTTP_ORIGIN=origin,
                                  HTTP_ACCESS_CONTROL_REQUEST_METHOD=sorted(documented)[0])
    assert (status, body) == (204, b"")
    assert "Content-Length" not in headers and "Content-Type" not in headers
    assert headers["Access-Control-Allow-Origin"] == origin and headers["Vary"] == "Origin"
    assert set(headers["Access-Control-Allow-Methods"].split(", ")) == documented
    assert headers["Access-Control-Allow-Headers"].split(", ") == list(documents.request_headers(template))
    assert "Access-Control-Allow-Credentials" not in headers
    status, headers, body = call_app(app, "OPTIONS", _sample(template), HTTP_ORIGIN="https://evil.example.com",
                                  HTTP_ACCESS_CONTROL_REQUEST_METHOD=sorted(documented)[0])
    assert status == 403 and orjson.loads(body)["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers


def test_responses_errors_included_carry_cors_headers_for_an_allowed_origin_only(app):
    origin = "https://app.example.com"
    app = _cors_wired(app, origin)
    for method, path in (("GET", "/healthz"), ("GET", documents.OPENAPI_PATH), ("DELETE", "/healthz"),
                         ("POST", documents.EVENTS_PATH)):  # 200, 200, 405, 401
        status, headers, _ = call_app(app, method, path, HTTP_ORIGIN=origin)
        assert headers.get("Access-Control-Allow-Origin") == origin, (method, path, status)
        assert "Retry-After" in headers["Access-Control-Expose-Headers"]
        status, headers, _ = call_app(app, method, path, HTTP_ORIGIN="https://evil.example.com")
        assert "Access-Control-Allow-Origin" not in headers, (method, path, status)
