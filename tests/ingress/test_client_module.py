"""GET /api/v1/client/spotter.js: the offline client, importable by a web app from another origin,
cached by browsers and revalidated by its ETag. No broker: the App answers it from memory."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from ingress import documents
from ingress.app import App
from ingress.cors import Cors
from shared import contracts
from shared.config import Config
from tests.support import auth
from tests.support.wsgi import call_app

ORIGIN = "https://app.spotter.test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app() -> App:
    app = App(Config(jwt=auth.jwt_config(secrets.token_urlsafe(32)), event_id_key=auth.EVENT_ID_KEY.encode()))
    app.cors = Cors([ORIGIN])
    return app


def test_the_module_is_served_as_javascript_cacheable_and_importable_cross_origin(app):
    status, headers, body = call_app(app, "GET", documents.CLIENT_PATH, HTTP_ORIGIN=ORIGIN)
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert headers["Access-Control-Allow-Origin"] == ORIGIN  # a module script from another origin needs CORS
    assert int(headers["Content-Length"]) == len(body)
    assert b"export class SpotterClient" in body


def test_a_cached_copy_is_revalidated_by_its_etag(app):
    _, headers, _ = call_app(app, "GET", documents.CLIENT_PATH)
    status, again, body = call_app(app, "GET", documents.CLIENT_PATH, HTTP_IF_NONE_MATCH=f'W/{headers["ETag"]}, "x"')
    assert (status, body, again["ETag"]) == (304, b"", headers["ETag"])
    assert "Content-Type" not in again
    status, _, body = call_app(app, "GET", documents.CLIENT_PATH, HTTP_IF_NONE_MATCH='"stale"')
    assert status == 200 and body


def test_the_client_knows_the_servers_query_events_and_batch_size(app):
    """The module is written by hand (no build step): these constants must follow the server's."""
    _, _, body = call_app(app, "GET", documents.CLIENT_PATH)
    source = body.decode()
    query_types = re.search(r"QUERY_EVENT_TYPES = Object\.freeze\(\[([^\]]*)\]\)", source).group(1)
    assert set(re.findall(r"'([a-z._]+)'", query_types)) == contracts.request_reply_event_types()
    batch = int(re.search(r"DEFAULT_MAX_BATCH_EVENTS = (\d+);", source).group(1))
    assert batch == Config.max_batch_events
    assert f"const EVENTS_PATH = `/api/${{API_VERSION}}/notify/events`" in source
    assert documents.EVENTS_PATH == "/api/v1/notify/events" and "API_VERSION = 'v1'" in source


def test_the_default_retry_schedule_is_2_4_8_16_32_seconds_capped_at_60_and_honours_retry_after():
    """The module's pure functions, run by Node (the browser tests run the rest in Chromium)."""
    script = """
      import { retryDelayMs, parseRetryAfter, classify } from './ingress/client/spotter.js';
      const low = () => 0, high = () => 0.999;
      console.log(JSON.stringify({
        nominal: [1, 2, 3, 4, 5, 6, 9].map((n) => retryDelayMs(n, undefined, 0, low)),
        jittered: [1, 5, 6].map((n) => Math.round(retryDelayMs(n, undefined, 0, high))),
        retryAfter: [retryDelayMs(1, undefined, parseRetryAfter('7'), low),
                     retryDelayMs(3, undefined, parseRetryAfter('1'), low)],
        httpDate: parseRetryAfter('Thu, 03 Dec 2026 10:00:30 GMT', Date.parse('2026-12-03T10:00:00Z')),
        classes: Object.fromEntries([0, 200, 202, 400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503, 504]
          .map((s) => [s, classify(s)])),
      }));
    """
    out = subprocess.run(["node", "--input-type=module", "-e", script], cwd=REPO, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    got = json.loads(out)
    assert got["nominal"] == [2000, 4000, 8000, 16000, 32000, 60000, 60000]
    assert got["jittered"] == [2200, 35197, 60000]  # up to 10 % later, never past the cap
    assert got["retryAfter"] == [7000, 8000] and got["httpDate"] == 30000
    assert {s for s, c in got["classes"].items() if c == "rejected"} == {"400", "403", "413", "415", "422"}
    assert {s for s, c in got["classes"].items() if c == "sent"} == {"200", "202"}
    assert got["classes"]["401"] == "unauthorized"
    assert {s for s, c in got["classes"].items() if c == "retry"} == {"0", "404", "408", "429", "500", "503", "504"}
