"""CORS of the ingress (pure: no services): which origins, and what a response or preflight carries."""
from __future__ import annotations

import pytest

from ingress import documents
from ingress.batch import Rejected
from ingress.cors import DEV_DEFAULT, ENV, EXPOSE_HEADERS, MAX_AGE_S, Cors

APP = "https://app.example.com"


def _headers(pairs) -> dict:
    names = [name.lower() for name, _ in pairs]
    assert len(names) == len(set(names)), f"a header twice: {pairs}"
    return {name.lower(): value for name, value in pairs}


def test_empty_by_default_allows_no_origin_and_adds_nothing():
    cors = Cors([])
    assert not cors.enabled
    assert cors.response_headers(APP) == () and cors.response_headers(None) == ()
    with pytest.raises(Rejected) as refused:
        cors.preflight(APP, "POST", "authorization", ["POST"], ["Authorization"])
    assert refused.value.status == 403 and refused.value.error == "origin_not_allowed"
    assert "access-control-allow-origin" not in _headers(refused.value.headers)


def test_an_allowed_origin_is_echoed_with_vary_and_exposed_headers_never_credentials():
    cors = Cors(f"{APP}, https://admin.example.com".split(","))
    headers = _headers(cors.response_headers(APP))
    assert headers["access-control-allow-origin"] == APP
    assert headers["vary"] == "Origin"
    assert {h.strip() for h in headers["access-control-expose-headers"].split(",")} >= {"Retry-After"}
    assert "access-control-allow-credentials" not in headers
    assert _headers(cors.response_headers("https://admin.example.com"))["access-control-allow-origin"] \
        == "https://admin.example.com"


@pytest.mark.parametrize("origin", [
    "https://evil.example.com", "http://app.example.com", "https://app.example.com:8443", "null", "",
    None, "https://app.example.com.evil.com", "https://APP.example.com/", "http://localhost:3000",
])
def test_any_other_origin_gets_nothing(origin):
    cors = Cors(APP.split(","))
    assert cors.response_headers(origin) == ()
    assert not cors.allows(origin)


def test_entries_are_canonical_origins_as_browsers_send_them():
    cors = Cors([" HTTPS://App.Example.com/ ", "http://example.org:80", "https://example.net:443",
                 "http://example.io:8080"])
    assert cors.exact == {APP, "http://example.org", "https://example.net", "http://example.io:8080"}


@pytest.mark.parametrize("entry", [
    "*", "https://*.example.com", "https://example.com:*", "app.example.com", "https://app.example.com/path",
    "null", "ftp://example.com", "https://example.com:0", "https://example.com:70000", "https://exa mple.com",
])
def test_an_entry_that_is_not_an_origin_fails_at_start(entry):
    with pytest.raises(ValueError, match=ENV):
        Cors(f"{APP},{entry}".split(","))


def test_the_dev_wildcard_is_any_port_on_a_loopback_host_only():
    cors = Cors(DEV_DEFAULT.split(","))
    for origin in ("http://localhost:5173", "http://localhost:3000", "http://127.0.0.1:8080", "http://localhost"):
        assert cors.allows(origin), origin
        assert _headers(cors.response_headers(origin))["access-control-allow-origin"] == origin
    for origin in ("https://localhost:5173", "http://localhost.evil.com:5173", "http://evil.com:5173",
                   "http://localhost:99999", "http://localhost:05173", "http://[::1]:5173",
                   "http://localhost:5173/", "http://127.0.0.2:8080", "null"):
        assert not cors.allows(origin), origin
        assert cors.response_headers(origin) == ()


def test_a_preflight_lists_the_routes_methods_and_headers_for_a_limited_time():
    cors = Cors(APP.split(","))
    template = documents.EVENTS_PATH
    status, pairs = cors.preflight(APP, "POST", "authorization,content-type,traceparent",
                                   documents.methods(template), documents.request_headers(template))
    headers = _headers(pairs)
    assert status == 204
    assert headers["access-control-allow-origin"] == APP and headers["vary"] == "Origin"
    assert headers["access-control-allow-methods"] == "POST"
    assert {h.strip() for h in headers["access-control-allow-headers"].split(",")} == {
        "Authorization", "Content-Type", "traceparent"}
    assert headers["access-control-max-age"] == str(MAX_AGE_S)
    assert "access-control-allow-credentials" not in headers


def test_feed_reads_take_the_feed_access_token_header():
    cors = Cors(APP.split(","))
    _, pairs = cors.preflight(APP, "GET", "authorization,x-feed-access-token", ["GET"],
                              documents.request_headers("/api/v1/feeds/{owner_id}/posts"))
    assert "X-Feed-Access-Token" in _headers(pairs)["access-control-allow-headers"].split(", ")
    _, pairs = cors.preflight(APP, "GET", "authorization", ["GET"], documents.request_headers("/api/v1/programs"))
    assert "X-Feed-Access-Token" not in _headers(pairs)["access-control-allow-headers"]


def test_a_method_the_route_does_not_take_is_left_to_the_browser_to_refuse():
    """The answer lists what the route takes; the browser then names the method it was refused."""
    cors = Cors(APP.split(","))
    status, pairs = cors.preflight(APP, "DELETE", None, ["GET"], ["Authorization"])
    assert status == 204 and _headers(pairs)["access-control-allow-methods"] == "GET"


def test_a_refused_origins_preflight_is_a_403_json_error_without_allow_origin():
    cors = Cors(APP.split(","))
    with pytest.raises(Rejected) as refused:
        cors.preflight("https://evil.example.com", "POST", "authorization", ["POST"], ["Authorization"])
    exc = refused.value
    assert exc.status == 403 and exc.body()["error"] == "origin_not_allowed"
    assert "evil.example.com" in exc.body()["detail"]
    assert _headers(exc.headers) == {"vary": "Origin"}


def test_options_without_origin_is_a_plain_options_not_a_preflight():
    cors = Cors(APP.split(","))
    status, pairs = cors.preflight(None, None, None, ["GET"], ["Authorization"])
    assert status == 204 and _headers(pairs) == {"allow": "GET, OPTIONS"}
    status, pairs = cors.preflight(APP, None, None, ["POST"], ["Authorization"])
    headers = _headers(pairs)
    assert headers["allow"] == "POST, OPTIONS" and headers["access-control-allow-origin"] == APP
    assert "access-control-allow-methods" not in headers


def test_exposed_headers_include_retry_after():
    assert "Retry-After" in EXPOSE_HEADERS


def test_every_route_lists_its_headers():
    for route in documents.ROUTES:
        headers = documents.request_headers(route.template)
        assert "traceparent" in headers, route
        if route.auth:
            assert "Authorization" in headers, route
    assert "Content-Type" in documents.request_headers(documents.EVENTS_PATH)
    assert "Content-Type" in documents.request_headers(documents.RECEIPTS_PATH)
